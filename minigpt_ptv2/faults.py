"""When the machine, not the input, stops a write: a full disk, a file-size limit, a read-only place.

Such a failure surfaces as an OSError whose message is the operating system's ("[Errno 28] No
space left on device"), often without the file it was writing (os.write never knows the name),
and sometimes not as an OSError at all (safetensors reports "I/O error: File too large (os
error 27)"). The places that write (atomic.py for checkpoints, outdir.py for whole folders,
lock.py) turn it into a WriteError that names the path, the cause in words, and what the place
holds now; the command line prints that as one line and exits 1.

    try:
        write(...)
    except Exception as e:
        if cause(e) is None:
            raise
        raise WriteError(f"{path}: {cause(e)}; the checkpoint already there is intact") from None
"""
from __future__ import annotations

import errno
import re

# errno -> what it means for the user, and what to do about it
CAUSES = {
    errno.ENOSPC: "no space left on the device (the disk is full): free some space and run again",
    errno.EDQUOT: "the disk quota is used up: free some space and run again",
    errno.EFBIG: "a file grew past the file-size limit (`ulimit -f`): raise the limit and run again",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted",
    errno.EIO: "an input/output error from the device",
}


def fault_errno(e: BaseException) -> int | None:
    """The errno of a write the machine refused, from an OSError or from a library's message
    ("... (os error 28)"); None for anything else."""
    if isinstance(e, OSError):
        return e.errno if e.errno in CAUSES else None
    found = re.search(r"\(os error (\d+)\)", str(e))
    number = int(found.group(1)) if found else None
    return number if number in CAUSES else None


def cause(e: BaseException) -> str | None:
    """The fault in words, or None when `e` is not a write the machine refused."""
    number = fault_errno(e)
    return None if number is None else CAUSES[number]
