"""Named capture points: `record(scope, name, tensor)` at the places a learner wants to look.

Modules call `record("layer3.attn", "k", k)` and get the tensor straight back. Whoever is
listening receives it: a `Capture` (such as `trace.ShapeTrace`) entered with `with`. Nobody
listening costs one lookup and nothing is kept, so tracing is free when it is off.

Listeners live in a context variable, not a module global: captures nest (an inner and an outer
trace both receive every row while the inner one is open) and each thread (or asyncio task)
sees only its own, so two threads tracing two models do not mix their rows.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch

_LISTENING: ContextVar[tuple] = ContextVar("minigpt_ptv2_captures", default=())


def record(scope: str, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Hand `tensor` to every active capture under `scope.name`; always returns the tensor."""
    listening = _LISTENING.get()
    if listening:
        full = f"{scope}.{name}" if scope else name
        for capture in listening:
            capture.add(full, tensor)
    return tensor


def capturing() -> bool:
    """True inside a `with` block of some Capture, in this thread or task."""
    return bool(_LISTENING.get())


@contextmanager
def silenced():
    """No capture receives anything inside the block (e.g. a layer recomputed for its backward
    pass: training/recompute.py), and the captures open around it listen again after."""
    token = _LISTENING.set(())
    try:
        yield
    finally:
        _LISTENING.reset(token)


class Capture:
    """Base class of a listener: `with capture:` starts and stops listening; `add` receives rows."""

    def __enter__(self):
        self.__dict__.setdefault("_tokens", []).append(_LISTENING.set(_LISTENING.get() + (self,)))
        return self

    def __exit__(self, *exc):
        _LISTENING.reset(self._tokens.pop())
        return False

    def add(self, name: str, tensor: torch.Tensor) -> None:
        raise NotImplementedError
