"""A small sample of real SST-2 shipped inside the package: the demo trains on real sentences offline.

The full datasets are read in place from a data folder and never copied (see paths.py); this
sample is the one exception, small and attributed. Its rows are GLUE SST-2 lines copied byte for
byte: sst2_sample/SOURCE.md says where they come from, what licence situation applies, and the
exact rule that drew them (benchmarks/make_sst2_sample.py redraws them from a data folder).
Prefer `load_sst2` whenever the data folder is on disk.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError, MissingFileError
from .paths import env_data
from .sst2 import SST2_SPLITS, Example, load_sst2, read_sst2_file

SAMPLE_DIR = Path(__file__).resolve().parent / "sst2_sample"  # train.tsv, dev.tsv, SOURCE.md


def sample_file(split: str) -> Path:
    """The shipped file for `split` ("train" or "dev")."""
    if split not in SST2_SPLITS:
        raise InputError(f"unknown SST-2 split {split!r}: valid splits are {', '.join(SST2_SPLITS)}")
    path = SAMPLE_DIR / f"{split}.tsv"
    if not path.is_file():
        raise MissingFileError(f"the embedded SST-2 sample is missing from this install: {path}")
    return path


def load_sst2_sample(split: str = "train", max_examples: int | None = None) -> list[Example]:
    """The embedded sample's rows for `split`, in file order; `max_examples` keeps the first rows."""
    return read_sst2_file(sample_file(split), max_examples)


SAMPLE_NOTE = "see minigpt_ptv2/data/sst2_sample/SOURCE.md"
FROM_DATA_FOLDER, FROM_SAMPLE = "SST-2 from the data folder", "embedded SST-2 sample"  # the `source` strings


def sst2_or_sample(data_dir=None, max_train: int | None = None, max_dev: int | None = None):
    """(train, dev, source): SST-2 from the data folder when there is one, else the sample shipped
    in the package; `source` says which ("SST-2 from the data folder" or "embedded SST-2 sample").

    A folder that was asked for (`data_dir`, or $MINIGPT_PTV2_DATA) and is missing is an error,
    never a silent switch to other data: a run that names its data trains on that data or on none."""
    try:
        return load_sst2("train", data_dir, max_train), load_sst2("dev", data_dir, max_dev), FROM_DATA_FOLDER
    except FileNotFoundError:
        if data_dir is not None or env_data():
            raise
    return load_sst2_sample("train", max_train), load_sst2_sample("dev", max_dev), FROM_SAMPLE
