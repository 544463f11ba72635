"""One writer per folder: two runs saving to the same --out would remove each other's files.

    with locked("runs/sst2", "train sst2 prefix"):   # refused at once if another process holds it
        ...save...

The lock is fcntl.flock on FOLDER/checkpoint.lock. The kernel releases it when the process
exits in any way (even SIGKILL), so a killed run never leaves a stale lock: the file may stay
behind, but nobody holds it and the next run takes it. The file records who holds it (pid, host,
command, start time) so the refusal can name the other process. A clean release removes it.

Within one process the lock is re-entrant: a run holding its folder can call save_checkpoint,
which takes the same lock again.

Where fcntl does not exist (Windows), no lock is taken and a warning says so: each save is still
atomic (atomic.py) and a weights file mixed up by two writers is still refused on load by its
sha256, but a second run on the same folder is not refused up front.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
from pathlib import Path

from ..errors import InputError, WriteError
from ..faults import cause

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK = "checkpoint.lock"
_held: dict[str, list] = {}  # real folder path -> [fd, depth] for the locks this process holds


class FolderBusy(InputError):
    """Another process holds the folder."""


def holder(folder) -> str:
    """Who holds (or last held) the lock, as written in the lock file."""
    try:
        info = json.loads((Path(folder) / LOCK).read_text())
        return (f"pid {info['pid']} on {info['host']}, running '{info['command']}' since "
                f"{info['started']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its name"


def held_by_another(folder) -> str | None:
    """Who holds FOLDER's lock if another process does (holder's words), else None. Only looks:
    a folder without a lock file stays untouched (outdir.py asks before replacing a folder)."""
    path = Path(folder) / LOCK
    if fcntl is None or os.path.realpath(folder) in _held or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return holder(folder)
    finally:
        os.close(fd)  # also releases the shared lock just taken
    return None


def _acquire(folder: Path, command: str) -> int:
    path = folder / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusy(f"{folder} is being written by another run ({holder(folder)}): wait for it "
                             f"to finish, or choose another output folder") from None
        # The holder we waited for may have removed the file on release: lock the file that is there now.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
    except OSError as e:  # a full disk, a file-size limit: say where, not just errno
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it, as a release does
        os.close(fd)
        why = cause(e)
        if why is None:
            raise
        raise WriteError(f"{path}: {why} (could not write the lock file; nothing else was written)", why) from None
    return fd


@contextlib.contextmanager
def locked(folder, command: str = "minigpt_ptv2"):
    """Hold FOLDER's lock for the block (the folder must exist). Raises FolderBusy, naming the
    other process, if another process holds it."""
    folder = Path(folder)
    if fcntl is None:
        warnings.warn(f"no fcntl on this platform: {folder} is not locked, so a second run writing "
                      f"it at the same time is not refused", stacklevel=3)
        yield
        return
    key = os.path.realpath(folder)
    if key in _held:
        _held[key][1] += 1
    else:
        _held[key] = [_acquire(folder, command), 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            fd = _held.pop(key)[0]
            try:
                os.unlink(folder / LOCK)  # while still holding it: see the samestat check above
            except OSError:
                pass
            os.close(fd)
