"""Where the real datasets live: a folder on disk that is read in place, never copied into the project.

Resolution order, first hit wins:
1. an explicit path (e.g. a command-line ``--data-dir``);
2. the environment variable ``MINIGPT_PTV2_DATA``;
3. a ``shared/data`` folder beside the repository checkout (the layout of the development and CI
   machines), looked up relative to this file and to the current working directory.
An explicit path or env var that does not exist is an error, not a silent fallback: a typo should
never quietly train on a different dataset. ``MINIGPT_PTV2_DATA=none`` says there is no data folder,
even where step 3 would find one: what a fresh install has (the lessons' notebooks are run so).

`text_lines` is how every reader opens a text file: UTF-8, one line at a time, lines ending at
"\\n" or "\\r\\n" only, so a byte that is not text is reported with the file, the line and the
byte (minigpt_ptv2/lines.py), not as a bare codec error from somewhere inside the reader. A UTF-8
byte-order mark (which editors on Windows write) is accepted and dropped; a UTF-16 file is named
as such.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

from ..errors import InputError, MissingFileError
from ..lines import byte_lines

ENV = "MINIGPT_PTV2_DATA"
NONE = "none"  # MINIGPT_PTV2_DATA=none: no data folder, only what ships in the package


def env_data() -> str | None:
    """The folder MINIGPT_PTV2_DATA names, or None (unset, empty, or "none")."""
    value = os.environ.get(ENV)
    return None if not value or value == NONE else value


def _beside_checkout() -> list[Path]:
    """Candidate ``shared/data`` folders next to the checkout (editable install, or run from the repo)."""
    here = Path(__file__).resolve().parents  # [data/, minigpt_ptv2/, <repo>/, <repo's parent>/, ...]
    candidates = [here[3] / "shared" / "data"] if len(here) > 3 else []
    candidates.append(Path.cwd().resolve().parent / "shared" / "data")
    return candidates


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The dataset root folder (holding ``sst2/`` and ``conll2003/``)."""
    if not explicit and os.environ.get(ENV) == NONE:
        raise MissingFileError(f"no data folder: {ENV}={NONE} (only the data shipped in the package); "
                               f"pass --data-dir PATH to use one")
    for source, value in (("--data-dir", explicit), (ENV, env_data())):
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


def check_regular_file(path: Path, what: str = "dataset file") -> None:
    """Refuse what is not a regular file, saying what it is: missing, a folder, or a pipe or
    device (`--text-file /dev/stdin`), which can be read only once."""
    if path.is_file():
        return
    if not path.exists():
        raise MissingFileError(f"{what} not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a text file")
    mode = path.stat().st_mode
    kind = ("a pipe" if stat.S_ISFIFO(mode) else "a terminal or other character device" if stat.S_ISCHR(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a block device" if stat.S_ISBLK(mode) else "not a file")
    raise InputError(f"{what} {path} is {kind}, not a regular file: save the text to a file and give its path")


def text_lines(path: str | os.PathLike, what: str = "dataset file") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end-of-line) for each line of a UTF-8 text file.
    Lines end at "\\n" or "\\r\\n" only, and a byte that is not text is named (minigpt_ptv2/lines.py)."""
    path = Path(path)
    check_regular_file(path, what)
    with open(path, "rb") as f:  # a binary file splits at b"\n" only
        yield from byte_lines(f, path)


def check_max_examples(max_examples) -> None:
    """None (all) or a positive int: 0 or -1 would silently read nothing, or everything."""
    if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, int)
                                     or max_examples <= 0):
        raise InputError(f"max_examples must be a positive int or None (all), got {max_examples!r}")
