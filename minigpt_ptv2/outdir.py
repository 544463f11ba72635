"""Where a command writes: the one guard every folder-writing command passes before any work.

A mistake in an output path should cost a one-line refusal, never the user's files, and never
minutes of work that end in a refusal. So every command that writes a folder (train, train lm,
import-peft, export-peft, export-hf, figures, lessons, demo) hands this module its output folder
and every folder it reads before it loads a model or reads data:

    with writing(out, "OUT", reads={"ADAPTER": adapter, "--model-dir": model_dir}, overwrite=False) as stage:
        write_everything_into(stage)
    # `out` now holds the new content whole; had the block failed, it would hold its old content whole

The rules, and why each:
- a target that is a file, lies under a file, is a broken symbolic link or cannot be written is
  refused, naming the path and the cause;
- a target that is, lies inside, or contains a folder (or file) the command reads (its model,
  checkpoint or adapter folder, the dataset's own folder such as data/sst2, a --text-file, and
  this package itself) is refused with or without --overwrite: writing there would destroy or
  pollute the input it is reading. Paths are compared after symlinks and '..' are resolved, so
  `out -> model` and `model/../model` are caught too (a target that is a symbolic link to a
  folder has that folder replaced; the link stays);
- a target that holds anything at all is refused unless --overwrite: a command never deletes
  what it did not write in this run, and hidden files count (they are deleted just the same);
- with --overwrite the old content is replaced whole: the new content is built in a fresh
  hidden sibling folder (.NAME.new-PID-XXXXXXXX) and swapped in by one rename at the end
  (Linux: renameat2 with RENAME_EXCHANGE, which swaps two folders atomically). Until that
  rename the target holds its old content whole, after it the new content whole; a run that
  fails, is interrupted or hits a full disk removes its sibling and leaves the target as it was.
  Where no atomic exchange exists (other systems, some file systems), the old folder is first
  renamed aside to .NAME.old-PID-XXXXXXXX: killed between the two renames, the old content is
  whole there, and the next write to the same target puts it back first;
- the new content is built beside the target, so the target's parent must be writable, and a
  target that is a mount point (which cannot be renamed) or contains the working directory
  (which the swap would pull from under the shell) is refused;
- a folder another run is writing (its lock is held, training/lock.py) is refused, naming it.
A run killed with -9 leaves its sibling behind; the next write to the same target removes it.

`train` cannot work this way: it writes a checkpoint at every epoch, keeps a resume state and
holds a lock inside its folder. It applies `check_place` (every rule above about the place) and
its own rules about what the folder may hold; training/runfolder.py says what atomic means there.

A new command that writes a folder joins in two lines: `add_overwrite(p, ...)` (cli/_shared.py)
gives it --overwrite, and `with writing(args.out, "--out", reads={...}, overwrite=args.overwrite)
as stage:` around its work, naming every folder or file it reads, makes it write into `stage`
(while telling the user `out`). `inputs(model_dir, data_dir)` gives the default folders a
command reads when none is named.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

from .errors import InputError, UserError, WriteError
from .faults import cause

PACKAGE = Path(__file__).resolve().parent


class OutputError(InputError):
    """An output folder refused before any work: the message names the option, the path and why."""


def resolve(path) -> Path:
    """The real absolute path: symlinks and '..' resolved, so two spellings of one folder compare equal."""
    return Path(os.path.realpath(os.path.abspath(path)))


def inputs(model_dir=None, data_dir=None, data: str = "sst2") -> dict:
    """{"--model-dir": the model folder read, "--data-dir": the dataset folder read (`data`, e.g.
    sst2/, under the data folder)}, the defaults resolved as the commands resolve them. Only the
    dataset's own folder is guarded: runs/ beside sst2/ in one folder is fine. A data folder that
    is not there is None here (the command names what is missing when it reads it)."""
    from .data.paths import data_dir as find_data
    from .pretrained import default_model_dir
    try:
        root = find_data(data_dir)
    except FileNotFoundError:
        root = None
    return {"--model-dir": model_dir or default_model_dir(), "--data-dir": root / data if root is not None else None}


def _overlap(real: Path, name: str, path) -> str | None:
    """How the target `real` overlaps an input, in words, or None."""
    source = resolve(path)
    how = ("is" if source == real else "lies inside" if source in real.parents else
           "contains" if real in source.parents else None)
    return f"{how} {name} ({path}), which this command reads" if how else None


def _unwritable(p: Path) -> str | None:
    """Why nothing can be created in folder `p`, or None if it can."""
    try:
        if os.statvfs(p).f_flag & os.ST_RDONLY:
            return f"{p} is on a read-only file system"
    except (OSError, AttributeError):  # no statvfs (Windows): os.access alone
        pass
    return None if os.access(p, os.W_OK | os.X_OK) else f"no write permission on {p}"


def _broken(link: Path) -> str:
    """Why a symbolic link leads nowhere: its target is missing, or the links go round in a loop."""
    try:
        os.stat(link)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "and the links lead round in a loop"
    return "which does not exist"


def check_place(out, option: str, reads: dict | None = None, staged: bool = True) -> Path:
    """Refuse a place no command may write (module docstring); returns the resolved target.

    reads: {how the command names it: path or None} of every folder or file it reads.
    staged: the content is built beside the target and swapped in (`writing`); False for a
    command that writes in place (train)."""
    if not str(out).strip():
        raise OutputError(f"{option} is empty ({str(out)!r}): name the folder to write")
    out_path = Path(out)
    for p in (out_path, *out_path.parents):
        if os.path.lexists(p) and not p.exists():
            raise OutputError(f"{option} {out} {'is' if p == out_path else f'is under {p}, which is'} a "
                              f"symbolic link to {os.readlink(p)}, {_broken(p)}")
        if p.exists():
            if not p.is_dir():
                where = "is" if p == out_path else f"is under {p}, which is"
                raise OutputError(f"{option} {out} {where} a file, not a folder")
            break
    real = resolve(out)
    for name, path in {**(reads or {}), "this package's own folder": PACKAGE}.items():
        how = _overlap(real, name, path) if path is not None else None
        if how:
            raise OutputError(f"{option} {out} {how}: a command never writes where it reads, with or without "
                              f"--overwrite; choose another folder")
    if staged:
        here = resolve(os.getcwd())
        if real == here or real in here.parents:
            raise OutputError(f"{option} {out} {'is' if real == here else 'contains'} the working directory: its "
                              f"content is replaced whole, which would leave the shell in a deleted folder; "
                              f"name a folder below it (e.g. {option} {Path(out) / 'out'})")
        if real.is_dir() and os.path.ismount(real):
            raise OutputError(f"{option} {out} is a mount point: the new content is built beside it and renamed "
                              f"into place, which a mount point does not allow; name a folder inside it")
    # where a file will be created: the parent for a staged write (the sibling is built there), the
    # target itself in place; and a staged target that exists is renamed, which needs its own permission
    first = next(p for p in ((real.parent if staged else real), *real.parents) if p.exists())
    why = _unwritable(first) or (_unwritable(real) if staged and real.exists() else None)
    if why:
        raise OutputError(f"{option} {out} cannot be written: {why}")
    return real


def describe(folder: Path) -> str:
    """What a folder holds, in a few words, for a refusal ("a minigpt_ptv2 checkpoint (sst2 / prefix)")."""
    names = sorted(os.listdir(folder))
    if "checkpoint.json" in names:
        try:
            meta = json.loads((folder / "checkpoint.json").read_text())
            return f"a minigpt_ptv2 checkpoint ({meta['task']} / {meta['method']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "a minigpt_ptv2 checkpoint.json"
    if "adapter_config.json" in names:
        return "a PEFT adapter (adapter_config.json)"
    if "config.json" in names:
        shown = [n for n in names if not n.startswith(".")]
        return f"a model ({', '.join(shown[:4])}{', ...' if len(shown) > 4 else ''})"
    if "resume" in names:
        return "an interrupted training run (resume/)"
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} {'entry' if len(names) == 1 else 'entries'} ({shown})"


def _busy(folder: Path) -> str | None:
    """Who is writing `folder` (training/lock.py), if anyone: looked up only where a lock file is,
    since importing the training package costs seconds (torch) a plain refusal need not pay."""
    if not folder.is_dir() or not any(name.endswith(".lock") for name in os.listdir(folder)):
        return None
    from .training.lock import held_by_another
    return held_by_another(folder)


def check(out, option: str, reads: dict | None = None, overwrite: bool = False) -> Path:
    """check_place for a staged write, then: nothing in the target unless overwrite, and no
    other run writing it. Returns the resolved target."""
    real = check_place(out, option, reads, staged=True)
    if real.is_dir() and os.listdir(real):
        busy = _busy(real)
        if busy:
            raise OutputError(f"{option} {out} is being written by another run ({busy}): wait for it to finish, "
                              f"or choose another folder")
        if not overwrite:
            raise OutputError(f"{option} {out} already holds {describe(real)}: pass --overwrite to replace it "
                              f"whole, or choose another folder")
    return real


@contextlib.contextmanager
def writing(out, option: str, reads: dict | None = None, overwrite: bool = False):
    """Check `out` (check), then yield a fresh folder to write the new content into; on a normal
    exit it replaces `out` whole. On any exception the fresh folder is removed and `out` is as it
    was; a write the machine refused (a full disk...) becomes a WriteError naming `out`."""
    target = resolve(out)
    with contextlib.suppress(OSError):  # best effort: what killed writes left beside it
        _tidy(target.parent, target.name)
    real = check(out, option, reads, overwrite)
    parent = real.parent
    created = [p for p in (parent, *parent.parents) if not p.exists()]  # deepest first
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = parent / f".{real.name}.new-{os.getpid()}-{secrets.token_hex(4)}"
        stage.mkdir()
    except OSError as e:
        remove_empty(created)
        raise OutputError(f"{option} {out} cannot be written: {e.strerror} ({e.filename})") from None
    try:
        yield stage
        _install(stage, real, option, out, overwrite)
    except BaseException as e:
        shutil.rmtree(stage, ignore_errors=True)
        remove_empty(created)
        # a write the machine refused, in the hidden folder: name the target instead
        why = e.why if isinstance(e, WriteError) else None if isinstance(e, UserError) else cause(e)
        if why is None:
            raise
        kept = "it was not created" if not real.exists() else "it holds what it held before"
        raise WriteError(f"{option} {out}: {why}; nothing was replaced ({kept})", why) from None


def _install(stage: Path, target: Path, option: str, out, overwrite: bool) -> None:
    """Put `stage` in the place of `target`: one rename, or one exchange with the old content."""
    try:
        os.rename(stage, target)  # target absent, or an empty folder: replaced in one step
        return
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    busy = _busy(target)
    if busy or not overwrite:
        raise OutputError(f"{option} {out} was {'claimed' if busy else 'filled'} by another process while this "
                          f"one worked{f' ({busy})' if busy else ''}: nothing was replaced, and this run's result "
                          f"was discarded")
    if _exchange(stage, target):  # stage now holds the old content
        shutil.rmtree(stage, ignore_errors=True)
        return
    aside = target.parent / f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(target, aside)
    try:
        os.rename(stage, target)
    except BaseException:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without renameat2
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    number = ctypes.get_errno()
    if number in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # this file system cannot exchange
        return False
    raise OSError(number, os.strerror(number), str(b))


def _tidy(parent: Path, name: str) -> None:
    """Siblings left by killed writes to `name`: a half-built new folder is removed; an old folder
    set aside by a swap that never finished is put back if the target is missing (else removed)."""
    pattern = re.compile(rf"\.{re.escape(name)}\.(new|old)-(\d+)-[0-9a-f]+")
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        found = pattern.fullmatch(entry.name)
        if not found or _alive(int(found.group(2))):
            continue
        if found.group(1) == "old" and not (parent / name).exists():
            os.rename(entry, parent / name)
        else:
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True


def remove_empty(folders: list) -> None:
    """Remove the folders a write created (deepest first) that it left empty: a refused or failed
    write leaves no trace (training/runfolder.py uses it too)."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            break
