"""Where the real datasets live: a folder on disk that is read in place, never copied into the project.

Resolution order, first hit wins:
1. an explicit path (e.g. a command-line ``--data-dir``);
2. the environment variable ``MINIGPT_PTV2_DATA``;
3. a ``shared/data`` folder beside the repository checkout (the layout of the development and CI
   machines), looked up relative to this file and to the current working directory.
An explicit path or env var that does not exist is an error, not a silent fallback: a typo should
never quietly train on a different dataset.

`text_lines` is how every reader opens a dataset file: UTF-8, one line at a time, so a byte that
is not UTF-8 (a file saved as Latin-1 or Windows-1252) is reported with the file, the line and
the byte, not as a bare codec error from somewhere inside the reader. A UTF-8 byte-order mark
(which editors on Windows write) is accepted and dropped; a UTF-16 file is named as such.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from ..errors import InputError, MissingFileError

ENV = "MINIGPT_PTV2_DATA"


def _beside_checkout() -> list[Path]:
    """Candidate ``shared/data`` folders next to the checkout (editable install, or run from the repo)."""
    here = Path(__file__).resolve().parents  # [data/, minigpt_ptv2/, <repo>/, <repo's parent>/, ...]
    candidates = [here[3] / "shared" / "data"] if len(here) > 3 else []
    candidates.append(Path.cwd().resolve().parent / "shared" / "data")
    return candidates


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The dataset root folder (holding ``sst2/`` and ``conll2003/``)."""
    for source, value in (("--data-dir", explicit), (ENV, os.environ.get(ENV))):
        if value:
            path = Path(value).expanduser()
            if not path.is_dir():
                what = "is a file, not a folder" if path.exists() else "does not exist"
                raise MissingFileError(f"data folder given by {source} {what}: {path}")
            return path
    for path in _beside_checkout():
        if path.is_dir():
            return path
    raise MissingFileError(
        "no data folder found: pass --data-dir PATH (or data_dir=PATH) or set "
        f"{ENV}=PATH to the folder holding sst2/ and conll2003/")


def data_file(relative: str, explicit: str | os.PathLike | None = None) -> Path:
    """One dataset file under the data root, with an error that names the full path if it is missing."""
    path = data_dir(explicit) / relative
    if not path.is_file():
        raise MissingFileError(f"dataset file not found: {path}")
    return path


_BOM = "\ufeff"


def text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end-of-line) for each line of a UTF-8 text file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"dataset file not found: {path}")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
                raise InputError(f"{path}:1: the file is UTF-16 (it starts with a UTF-16 byte-order "
                                 f"mark); save it as UTF-8")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"{path}:{lineno}: byte 0x{raw[e.start]:02x} (byte {e.start + 1} of the line) is not "
                    f"UTF-8 ({e.reason}); saved as Latin-1 or Windows-1252? Save the file as UTF-8") from None
            if lineno == 1 and line.startswith(_BOM):
                line = line[1:]
            yield lineno, line.rstrip("\r\n")


def check_max_examples(max_examples) -> None:
    """None (all) or a positive int: 0 or -1 would silently read nothing, or everything."""
    if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, int)
                                     or max_examples <= 0):
        raise InputError(f"max_examples must be a positive int or None (all), got {max_examples!r}")
