"""Speed devices, kept out of the code the lessons read. Each is equal to the plain model up to
float rounding (tested) and earns its place by a line of benchmarks/run.py.

    row_blocks   the feed-forward block in blocks of token rows, on CPU without autograd:
                 fewer page faults (the widest activation never exists whole)

`load_pretrained(..., fast=True)` (the default) turns them on; `enable`/`disable` do it by hand.
"""
from __future__ import annotations

from . import row_blocks


def enable(model) -> None:
    """Every speed device on (the default for a loaded model)."""
    row_blocks.enable(model)


def disable(model) -> None:
    """The plain teaching model again."""
    row_blocks.disable(model)
