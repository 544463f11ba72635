"""Speed devices, kept out of the code the lessons read. Each is equal to the plain model up to
float rounding (tested) and earns its place by a line of benchmarks/run.py.

    row_blocks     the feed-forward block in blocks of token rows, on CPU without autograd:
                   fewer page faults (the widest activation never exists whole)
    rotary_tables  RoPE's cos/sin computed once per forward pass instead of twice per layer

`load_pretrained(..., fast=True)` (the default) turns them on; `enable`/`disable` do it by hand.
"""
from __future__ import annotations

from . import rotary_tables, row_blocks


def enable(model) -> None:
    """Every speed device on (the default for a loaded model)."""
    row_blocks.enable(model)
    rotary_tables.enable(model)


def disable(model) -> None:
    """The plain teaching model again."""
    row_blocks.disable(model)
    rotary_tables.disable(model)
