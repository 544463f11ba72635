"""After each epoch: keep the best epoch by the dev metric, and save the state a resume needs.

"Best" is the highest value (accuracy, F1) unless the Keeper is told lower is better
(higher_is_better=False: a perplexity, a loss).

The checkpoint holds the epoch with the best dev metric so far, not the last one: a run whose
later epochs get worse (over-fitting, a learning rate too high) still ends with its best prompt,
and checkpoint.json says which epoch that was (`kept`). The resume state (state.py) is written
after it, every epoch: killed between the two, a resume re-runs that epoch and writes the same
checkpoint again.
"""
from __future__ import annotations

from pathlib import Path

from . import runfolder
from . import state as run_state
from .checkpoint import META


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, carrying a sentence on what the output folder holds now."""


def interrupted_note(out, run) -> str:
    """What a run stopped by Ctrl-C leaves in `out`: its own resume state (run: its id), its
    first checkpoint without one, an earlier run's files untouched (runfolder.py), or nothing."""
    if out is None:
        return "interrupted: nothing was being saved (no output folder)"
    if (Path(out) / run_state.DIRNAME / "state.json").is_file() and run_state.run_of(out) == run:
        done = run_state.load_meta(out)["epochs_done"]
        return f"interrupted: `train --resume {out}` continues after epoch {done}"
    if run is not None and runfolder.checkpoint_run(out) == run:
        return (f"interrupted after this run's first checkpoint, before its resume state: {out} holds the "
                f"checkpoint, and there is nothing to resume")
    if runfolder.resumable(out):
        return (f"interrupted before this run's first epoch ended: {out} holds what it held before, and "
                f"`train --resume {out}` continues the earlier run there")
    if (Path(out) / META).is_file():
        return (f"interrupted before this run's first epoch ended: nothing of it was saved, the checkpoint "
                f"already in {out} is intact")
    return f"interrupted before an epoch of the run in {out} ended: there is nothing to resume"


class Keeper:
    """fit's on_epoch: `best` is {epoch, of_epochs, metric, value}, or None before any evaluation."""

    def __init__(self, out, metric: str, epochs: int, save, resume_extra: dict, is_main: bool = True,
                 saved: dict | None = None, higher_is_better: bool = True):
        """save(kept) writes the checkpoint (kept: the `best` record) and returns save_checkpoint's
        answer; resume_extra goes into every resume state; saved: a resume state's `extra`."""
        self.out, self.metric, self.epochs, self.is_main = out, metric, epochs, is_main
        self.higher_is_better = higher_is_better
        self.save, self.resume_extra = save, resume_extra
        saved = saved or {}
        self.best = saved.get("best")
        self.wrote = bool(saved.get("wrote"))  # has this run written the checkpoint in `out`?
        self.checkpoint = None  # save_checkpoint's answer for the last checkpoint written

    def on_epoch(self, record: dict, snapshot) -> str | None:
        note = None
        value = record.get(self.metric)
        if self.is_main and value is not None:
            if self.best is None or self.better(value, self.best["value"]):  # a tie keeps the earlier epoch
                self.best = {"epoch": record["epoch"], "of_epochs": self.epochs, "metric": self.metric,
                             "value": value}
                note = f"<- new best {self.metric}"
                if self.out is not None:
                    self.checkpoint = self.save(self.best)
                    self.wrote = True
                    note += f": checkpoint written to {self.out}"
            else:
                note = f"(best stays epoch {self.best['epoch']}, {self.metric} {self.best['value']:.4f})"
        if self.out is not None:
            meta, tensors = snapshot({**self.resume_extra, "best": self.best, "wrote": self.wrote})
            if self.is_main:
                run_state.save(self.out, meta, tensors)
        return note

    def better(self, value: float, than: float) -> bool:
        return value > than if self.higher_is_better else value < than

    def stopped(self, error: Exception, cfg) -> Exception:
        """The error that stops a diverged or non-finite run, saying what the folder holds now and
        what to try (the same class, so callers can still tell the two apart)."""
        from .divergence import Diverged
        advice = (f"\n  Try a lower learning rate (now {cfg.lr:g}, e.g. --lr {cfg.lr / 10:g}); if this loss curve "
                  f"is expected, raise --diverge-factor (now {cfg.diverge_factor:g}; 0 turns the check off)."
                  if isinstance(error, Diverged) else "")
        return type(error)(f"{error}\n  {self.status()}{advice}")

    def status(self) -> str:
        """What the output folder holds now, for a message about a run that stopped."""
        if self.out is None:
            return "No checkpoint was being saved (no output folder)."
        if self.wrote and self.best is not None:
            return (f"The checkpoint in {self.out} is intact: epoch {self.best['epoch']}, dev {self.metric} "
                    f"{self.best['value']:.4f}, the best epoch before the trouble began.")
        if (Path(self.out) / META).is_file():
            return f"Nothing of this run was saved; the checkpoint already in {self.out} is intact."
        return f"No checkpoint was written to {self.out}."
