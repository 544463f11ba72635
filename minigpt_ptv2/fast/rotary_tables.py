"""Speed device: RoPE's cos/sin tables computed once per forward pass, not twice per layer.

Every block of a rotary model turns its queries and its keys by the same positions, so the plain
model (core/rotary.py) computes the same cos and sin 2L times per forward pass. At batch 1, while
decoding, that is a few dozen small operations per layer, a visible share of a step
(benchmarks/README.md, "rotary tables"). The model's blocks share one `Rotary`; this device makes
it remember the tables of the last positions tensor it saw, and reuse them while that same tensor
(the same object, unchanged: its `_version` counts in-place edits) comes back.

The remembered tensor is held, so its memory cannot be reused by another positions tensor that
would then look the same. Outputs are identical to the plain model's (the same tables).
"""
from __future__ import annotations

from types import MethodType

from ..core.rotary import Rotary


def _remembered_cos_sin(rotary, positions, dtype):
    last = rotary.__dict__.get("_last_tables")
    if last is not None and last[0] is positions and last[1] == positions._version and last[2] == dtype:
        return last[3]
    tables = type(rotary).cos_sin(rotary, positions, dtype)  # the plain computation
    rotary._last_tables = (positions, positions._version, dtype, tables)
    return tables


def enable(model) -> int:
    """Remember the tables in every Rotary of the model; returns how many."""
    disable(model)
    n = 0
    for module in model.modules():
        if isinstance(module, Rotary):
            module.cos_sin = MethodType(_remembered_cos_sin, module)
            n += 1
    return n


def disable(model) -> None:
    for module in model.modules():
        if isinstance(module, Rotary) and "cos_sin" in module.__dict__:
            del module.cos_sin
            module.__dict__.pop("_last_tables", None)
