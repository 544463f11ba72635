"""Named capture points: record tensor shapes (and optionally values) as data flows.

Modules call `record(scope, "name", tensor)` at the places a learner wants to look
(`layer3.attn.k_with_prefix`, `layer0.inject`, ...). When no `ShapeTrace` is active this is a
single `is None` check, so tracing costs nothing when off.

    with ShapeTrace(dims=dict(B=16, N=128, P=20, D=768, H=12, d=64)) as tr:
        model(ids)
    print(tr.table())
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

_ACTIVE: "ShapeTrace | None" = None


def record(scope: str, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Record `tensor` under `scope.name` if a trace is active; always returns the tensor."""
    if _ACTIVE is not None:
        _ACTIVE.add(f"{scope}.{name}" if scope else name, tensor)
    return tensor


def tracing() -> bool:
    return _ACTIVE is not None


# The order in which letters are tried when a size matches more than one of them.
_LETTER_ORDER = ("B", "P+N", "N", "P", "D", "H", "d", "L", "V", "D_ff", "2*L*D", "C")


@dataclass
class ShapeTrace:
    """Context manager collecting `(name, shape)` rows; `keep` also stores the tensors
    whose names contain any of the given substrings (e.g. `keep=("attn.probs",)`)."""
    dims: dict = field(default_factory=dict)
    keep: tuple = ()
    rows: list = field(default_factory=list)
    tensors: dict = field(default_factory=dict)

    def __enter__(self):
        global _ACTIVE
        if _ACTIVE is not None:
            raise RuntimeError("a ShapeTrace is already active; traces do not nest")
        _ACTIVE = self
        return self

    def __exit__(self, *exc):
        global _ACTIVE
        _ACTIVE = None
        return False

    def add(self, name: str, tensor: torch.Tensor) -> None:
        self.rows.append((name, tuple(tensor.shape)))
        if any(k in name for k in self.keep):
            self.tensors[name] = tensor.detach()

    def shapes(self) -> dict:
        """name -> shape of the last recording under that name."""
        return {name: shape for name, shape in self.rows}

    def letters(self, shape: tuple) -> str:
        """Spell a shape with the guide's letters, e.g. (16, 12, 148, 64) -> '[B, H, P+N, d]'."""
        dims = dict(self.dims)
        if "P" in dims and "N" in dims:
            dims.setdefault("P+N", dims["P"] + dims["N"])
        order = [k for k in _LETTER_ORDER if k in dims] + [k for k in dims if k not in _LETTER_ORDER]
        out = []
        for size in shape:
            match = next((k for k in order if dims[k] == size), None)
            out.append(match if match is not None else str(size))
        return "[" + ", ".join(out) + "]"

    def table(self) -> str:
        """A printable two/three-column table: name, shape, and the shape in letters."""
        if not self.rows:
            return "(nothing recorded)"
        width = max(len(n) for n, _ in self.rows)
        lines = []
        for name, shape in self.rows:
            nums = "[" + ", ".join(str(s) for s in shape) + "]"
            lines.append(f"{name:<{width}}  {nums:<22} {self.letters(shape) if self.dims else ''}".rstrip())
        return "\n".join(lines)
