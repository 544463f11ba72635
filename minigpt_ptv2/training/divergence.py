"""When a run has gone wrong: a loss far above where it started, or a loss that is not a number.

Divergence (TrainConfig.diverge_factor F, diverge_window W): the run has diverged when the mean
loss of its last W steps is more than F times its starting loss, the smaller of
- ln C, the loss of a uniform guess over C classes, which is where a fresh head starts, and
- the mean loss of its first W steps (lower when the model starts out already trained).
Why this rule:
- a run that learns anything goes down from its start; a run at several times its starting loss
  is confidently wrong, worse than guessing, and each further step moves the prompt further
  away (SST-2 at lr 10: 0.69 -> 22, prefix values -> 204), while the dev metric may still look
  merely mediocre;
- ln C caps the start because a run can blow up within its first steps (a large lr without
  warm-up), which would inflate a start measured on those steps alone;
- means over W steps, not single steps: one bad batch is noise, W of them in a row are not. With
  W = 10 and F = 3 a healthy run never comes close;
- losses are counted in units of ln C, so tasks with different C trained in turn (Alternate)
  share one rule; the check starts once W steps have run.
F = 0 turns the rule off. A non-finite loss always stops the run, with a diagnosis (below).
"""
from __future__ import annotations

import math

from ..errors import NonFiniteError, UserError


class Diverged(UserError, FloatingPointError):
    """The loss ran far above its starting value for a sustained stretch."""


class LossWatch:
    """Keeps the first W and the last W step losses, each divided by ln C; `check` raises
    Diverged by the rule above."""

    def __init__(self, factor: float, window: int, state: dict | None = None):
        self.factor, self.window = factor, window
        state = state or {}
        self.first, self.recent = list(state.get("first", [])), list(state.get("recent", []))

    def state(self) -> dict:
        return {"first": self.first, "recent": self.recent}

    def check(self, loss: float, classes: int, where: str) -> None:
        chance = math.log(classes) if classes > 1 else 1.0
        x = loss / chance  # in units of a uniform guess's loss
        if len(self.first) < self.window:
            self.first.append(x)
        self.recent = (self.recent + [x])[-self.window:]
        if self.factor <= 0 or len(self.recent) < self.window:
            return
        start, now = min(1.0, sum(self.first) / len(self.first)), sum(self.recent) / self.window
        if now > self.factor * start:
            raise Diverged(f"training diverged at {where}: the mean loss of the last {self.window} steps is "
                           f"{now * chance:.4g}, more than {self.factor:g} x its starting loss {start * chance:.4g} "
                           f"(the smaller of ln C = {chance:.4g}, a uniform guess over C = {classes} classes, and "
                           f"its first {self.window} steps' mean)")


def _non_finite(tensors) -> list[str]:
    return [n for n, t in tensors if t.is_floating_point() and not bool(t.detach().isfinite().all())]


def _part(name: str) -> str:
    if name.startswith("encoder.prompt."):
        return "the prompt"
    if name.startswith("heads."):
        return "the head"
    return "the backbone (trained under `full`)"


def non_finite_loss(model, loss: float, where: str, lr: float, precision: str = "fp32",
                    updated: bool = True) -> NonFiniteError:
    """Why the loss is not finite, checked in the order that finds the cause rather than blame
    the learning rate: input embeddings, then other frozen backbone weights (training never
    changes those, so a lower learning rate cannot help), then what training changed, then
    float16's range (every weight finite under fp16: the forward pass overflowed 65504).
    updated: whether any optimizer update has been applied (if not, the lr cannot be the cause)."""
    params = list(model.named_parameters())
    head = f"loss became {loss} at {where}"
    bad = _non_finite((n, p) for n, p in params if not p.requires_grad)
    bad.sort(key=lambda n: ".embeddings." not in f".{n}")  # the input embeddings first
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return NonFiniteError(f"{head}: the frozen backbone tensor {bad[0]}{more} holds NaN or infinite "
                              f"values; training never changes it, so the backbone was broken before "
                              f"training (check --model-dir); the learning rate is not the cause")
    bad = _non_finite((n, p) for n, p in params if p.requires_grad)
    if bad and not updated:
        parts = sorted({_part(n) for n in bad})
        return NonFiniteError(f"{head}: {' and '.join(parts)} held non-finite values before any update "
                              f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): the starting values were "
                              f"broken (a checkpoint or an init), the learning rate is not the cause")
    if bad:
        parts = sorted({_part(n) for n in bad})
        return NonFiniteError(f"{head}: {' and '.join(parts)} became non-finite ({', '.join(bad[:3])}"
                              f"{', ...' if len(bad) > 3 else ''}): the updates blew up; lower the learning "
                              f"rate (now {lr:g})")
    if precision == "fp16":
        from .precision import FP16_ADVICE
        why = ("no update has been applied yet, so the learning rate is not the cause" if not updated else
               "a lower learning rate may not help")
        return NonFiniteError(f"{head}: every weight is finite, so the forward pass overflowed float16's range "
                              f"(largest value 65504) under --precision fp16; {why}: {FP16_ADVICE}")
    if not updated:
        return NonFiniteError(f"{head}: every weight is finite and no update has been applied yet, so the inputs "
                              f"overflowed the model before training changed anything; the learning rate is not "
                              f"the cause")
    return NonFiniteError(f"{head}: every weight is finite, so the logits overflowed; lower the learning "
                          f"rate (now {lr:g})")
