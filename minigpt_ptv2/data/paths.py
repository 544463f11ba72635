"""Where the real datasets live: a folder on disk that is read in place, never copied into the project.

Resolution order, first hit wins:
1. an explicit path (e.g. a command-line ``--data-dir``);
2. the environment variable ``MINIGPT_PTV2_DATA``;
3. a ``shared/data`` folder beside the repository checkout (the layout of the development and CI
   machines), looked up relative to this file and to the current working directory.
An explicit path or env var that does not exist is an error, not a silent fallback: a typo should
never quietly train on a different dataset.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import MissingFileError

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
                raise MissingFileError(f"data folder given by {source} does not exist: {path}")
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
