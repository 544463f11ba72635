"""The output folder of a training run, checked before any time is spent training.

    check_out(out, overwrite=False)      may a new run write here?
    check_same(saved, now)               may this run continue the one saved here (--resume)?
    with claimed(out, command): ...      create it, lock it (lock.py), tidy up empty folders after

A new run is refused, with nothing trained and nothing written, when --out
- is a file, or lies under one, or cannot be written;
- holds files that are not ours: a run never deletes what it did not write;
- holds a checkpoint of ours, unless --overwrite: a new run would replace it (a checkpoint is
  never lost silently), or an interrupted run's resume state, which --resume continues.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from ..errors import InputError, UserError
from .checkpoint import META, prepare_folder, read_meta
from .lock import LOCK, locked
from .state import DIRNAME

OURS = re.compile(rf"checkpoint(-[0-9a-f]{{8,32}})?\.safetensors|checkpoint\.json(\.[0-9a-f-]+)?(\.partial)?|"
                  rf"checkpoint\.safetensors\.partial|{re.escape(LOCK)}|{DIRNAME}")
# The arguments that define a run; a resume must not change them (the option that sets each).
RUN_ARGS = {"task": "TASK", "method": "METHOD", "P": "--P", "method_kwargs": "--positions", "epochs": "--epochs",
            "lr": "--lr", "batch_size": "--batch-size", "max_train": "--max-train", "max_dev": "--max-dev",
            "max_length": "--max-length", "seed": "--seed", "dropout": "--no-dropout",
            "diverge_factor": "--diverge-factor", "precision": "--precision", "warmup": "--warmup",
            "init": "--init", "holdout": "--holdout", "batches": "--batches",
            "world_size": "the number of processes (torchrun)",
            "data": "the training data (--data-dir, --max-train; --text-file)", "backbone": "the backbone (--model-dir)"}
# Not here: --grad-checkpoint, which a resume may turn on or off. It changes the memory a step
# needs, never its numbers (bit-identical gradients, tests/test_recompute.py).
# What a run saved before an argument existed was started with: the behaviour before the argument
# existed (for init and batches no longer the default: tokens for the prefix, grouped batches).
ADDED_LATER = {"grad_checkpoint": False, "precision": "fp32",
               "warmup": 0.1, "init": "random", "holdout": None,  # the old fixed schedule, from noise, dev
               "batches": "random"}  # the plain shuffle


def describe_checkpoint(meta: dict) -> str:
    kept = meta.get("kept")
    where = (f", epoch {kept['epoch']} of {kept['of_epochs']}, dev {kept['metric']} {kept['value']:.4f}"
             if isinstance(kept, dict) and {"epoch", "of_epochs", "metric", "value"} <= set(kept) else "")
    return f"{meta['task']} / {meta['method']}{where}"


def check_out(out, overwrite: bool = False) -> None:
    """Refuse an output folder a new run must not write to (see the module docstring)."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                where = "is" if p == out else f"is under {p}, which is"
                raise InputError(f"--out {out} {where} a file, not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise InputError(f"--out {out} cannot be written: no write permission on {p}")
            break
    if not out.is_dir():
        return
    # hidden files (.DS_Store, .ipynb_checkpoints...) are the system's or an editor's: a run never touches them
    foreign = sorted(p.name for p in out.iterdir() if not (OURS.fullmatch(p.name) or p.name.startswith(".")))
    if foreign:
        raise InputError(f"--out {out} holds files that are not a minigpt_ptv2 checkpoint ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}): choose a new or empty folder (a run never "
                         f"deletes what it did not write)")
    interrupted = (out / DIRNAME / "state.json").is_file()
    if (out / META).is_file():
        try:
            meta = read_meta(out)
        except UserError as e:
            raise InputError(f"--out {out} holds a {META} that is not a readable checkpoint ({e}): choose "
                             f"another folder") from None
        if not overwrite:
            also = f", --resume {out} to continue the interrupted run there" if interrupted else ""
            raise InputError(f"--out {out} already holds a checkpoint ({describe_checkpoint(meta)}) that a new "
                             f"run would replace: pass --overwrite to replace it{also}, or choose another --out")
    elif interrupted and not overwrite:
        raise InputError(f"--out {out} holds an interrupted run: --resume {out} continues it, --overwrite "
                         f"starts a new one there")


def check_same(saved: dict, now: dict, out) -> None:
    """Refuse a resume whose arguments would make it a different run, naming the first one
    (only the arguments `now` knows of: the data and backbone are compared once loaded)."""
    for name, option in RUN_ARGS.items():
        was = saved.get(name, ADDED_LATER.get(name))
        if name in now and was != now[name]:
            raise InputError(f"{option}: the run in {out} was started with {was!r}, this one has "
                             f"{now.get(name)!r}; --resume continues the same run (drop the option, or start a "
                             f"new run in another --out)")


@contextlib.contextmanager
def claimed(out, command: str):
    """Create `out`, hold its lock for the block, and remove the folders it created if the run
    left them empty (a run refused or failed before its first save writes nothing)."""
    out = Path(out)
    created = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    with contextlib.ExitStack() as stack:
        stack.callback(_remove_empty, created)
        try:
            prepare_folder(out)
            stack.enter_context(locked(out, command))
        except PermissionError as e:
            raise InputError(f"--out {out} cannot be written: {e.strerror} ({e.filename})") from None
        yield out


def _remove_empty(folders: list) -> None:
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            break
