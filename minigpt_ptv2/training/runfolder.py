"""The output folder of a training run, checked before any time is spent training.

    check_start(out, args, resume, ...)     everything below a run checks before it reads any data
    check_out(out, overwrite=False, reads)  may a new run write here?
    check_resume(out)                       does the folder hold a run to continue (--resume)?
    check_same(saved, now)                  may this run continue the one saved here (--resume)?
    with claimed(out, command): ...         create it, lock it (lock.py), tidy up empty folders after

A new run is refused, with nothing trained and nothing written, when --out
- is a file, lies under one, cannot be written, or is, lies inside or contains a folder the run
  reads (its model and data folders, --text-file): the rules every writer shares (outdir.py);
- holds files that are not ours: a run never deletes what it did not write, not even with
  --overwrite (it replaces its own files one by one, so anything else would stay mixed in);
- holds a checkpoint of ours, unless --overwrite: a new run would replace it (a checkpoint is
  never lost silently), or an interrupted run's resume state, which --resume continues.

What "replaced atomically" means for a run, which writes at every epoch rather than once: each
save replaces the checkpoint pair whole (atomic.py), so the folder holds one whole checkpoint at
every moment. Under --overwrite nothing is touched until the new run's first checkpoint, at the
end of its first epoch: a run that fails or is stopped before then leaves the old checkpoint and
the old run's resume state as they were (still resumable). Every run has an id, written into its
checkpoint and its resume state; a resume state whose id is not the checkpoint's (the old run's,
left for the moment between the new run's first checkpoint and its first resume state) is never
resumed into the new run, and the new run's state replaces it.
"""
from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from .. import outdir
from ..errors import InputError, UserError
from .checkpoint import META, prepare_folder, read_meta
from . import state as run_state
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
# The two compared by a fingerprint of what was read: what it is, and the arguments saying where from.
FOLDERS = {"data": ("training data", ("data_dir", "text_file")), "backbone": ("backbone", ("model_dir",))}
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


def _run_id(path: Path, *keys: str):
    """The run id recorded in a JSON file (None: no file, unreadable, or written before run ids)."""
    try:
        value = json.loads(path.read_text())
        for key in keys:
            value = value[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def checkpoint_run(out):
    """The id of the run whose checkpoint `out` holds (None: none, or saved before runs had ids)."""
    return _run_id(Path(out) / META, "run")


def resumable(out) -> bool:
    """Whether `out` holds a resume state that goes with the checkpoint beside it (module
    docstring): the same run's id in both, or no id in either (written before run ids)."""
    out = Path(out)
    if not (out / DIRNAME / "state.json").is_file():
        return False
    if not (out / META).is_file():
        return True
    return _run_id(out / DIRNAME / "state.json", "extra", "run") == checkpoint_run(out)


def check_start(out_dir, args: dict, resume: bool, overwrite: bool, info, reads: dict) -> Path | None:
    """What every run checks before it reads any data (train_task, lm.train_lm): a positive batch
    size, a folder to resume from, and that folder's state (the same arguments and a state that
    goes with its checkpoint under resume; no checkpoint in the way without --overwrite otherwise),
    and never a place the run reads (`reads`, outdir.py). Checked again under the folder's lock."""
    if args["batch_size"] <= 0:
        raise InputError(f"batch_size must be positive, got {args['batch_size']}")
    if resume and (out_dir is None or overwrite):
        raise InputError("resume continues the run in out_dir: give out_dir, and not overwrite")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and resume:  # the place as given: Path("") would be "."
        outdir.check_place(out_dir, "--resume", reads, staged=False)
        saved = run_state.load_meta(out)["extra"]["args"]
        check_resume(out)
        check_same(saved, args, out)
    elif out is not None and info.is_main:
        check_out(out_dir, overwrite, reads)
    return out


def check_resume(out) -> None:
    """Refuse a --resume of a state that a newer run's checkpoint has replaced (module docstring)."""
    if (Path(out) / META).is_file() and not resumable(out):
        raise InputError(f"--resume {out}: its resume state belongs to an earlier run, whose checkpoint a newer run "
                         f"(train --overwrite) replaced before it was stopped; there is nothing to resume (start a "
                         f"new run there with --overwrite)")


def check_out(out, overwrite: bool = False, reads: dict | None = None) -> None:
    """Refuse an output folder a new run must not write to (see the module docstring).
    reads: {option: path} of every folder or file the run reads (outdir.check_place)."""
    outdir.check_place(out, "--out", reads, staged=False)
    out = Path(out)
    if not out.is_dir():
        return
    # hidden files (.DS_Store, .ipynb_checkpoints...) are the system's or an editor's: a run never touches them
    foreign = sorted(p.name for p in out.iterdir() if not (OURS.fullmatch(p.name) or p.name.startswith(".")))
    if foreign:
        raise InputError(f"--out {out} holds files that are not a minigpt_ptv2 checkpoint ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}): choose a new or empty folder (a run never "
                         f"deletes what it did not write)")
    interrupted = resumable(out)
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
        if name in now and was != now[name] and name in FOLDERS:  # compared by content: say where it was read
            what, keys = FOLDERS[name]
            where = " and ".join(str(now[k]) for k in keys if now.get(k)) or "the default folder"
            raise InputError(f"{option}: the run in {out} was started on {what} with fingerprint {was}, and "
                             f"{where} now gives {now[name]}: the files changed since, or another folder was named; "
                             f"--resume needs the same {what} (or start a new run in another --out)")
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
        stack.callback(outdir.remove_empty, created)
        try:
            prepare_folder(out)
            stack.enter_context(locked(out, command))
        except PermissionError as e:
            raise InputError(f"--out {out} cannot be written: {e.strerror} ({e.filename})") from None
        yield out
