"""GLUE SST-2 (binary sentiment) reader: one sentence, one label, strict about the file's shape.

The file is a plain TSV with header ``text\\tlabel``; the text is already lower-cased and
space-tokenised and never contains a tab, so a row is split on tabs without any CSV quoting
rules (SST-2 text contains quote characters that a CSV reader would misinterpret).
Errors name the file and the 1-based line so a broken file is fixed in one look.
"""
from __future__ import annotations

import os
from typing import NamedTuple

from ..errors import InputError
from .paths import data_file

SST2_LABELS = ["negative", "positive"]  # label id -> name
SST2_SPLITS = ("train", "dev")  # the test split has no labels and is not shipped
_HEADER = ["text", "label"]


class Example(NamedTuple):
    """One sentence-level example: ``label`` indexes SST2_LABELS."""
    text: str
    label: int


def load_sst2(split: str = "train", data_dir: str | os.PathLike | None = None,
              max_examples: int | None = None) -> list[Example]:
    """Read ``sst2/{split}.tsv``; ``max_examples`` keeps the first rows (for quick runs)."""
    if split not in SST2_SPLITS:
        raise InputError(f"unknown SST-2 split {split!r}: valid splits are {', '.join(SST2_SPLITS)}")
    path = data_file(f"sst2/{split}.tsv", data_dir)
    return read_sst2_file(path, max_examples)


def read_sst2_file(path: str | os.PathLike, max_examples: int | None = None) -> list[Example]:
    """Parse one SST-2 style TSV file (header ``text\\tlabel``), validating every row read."""
    examples: list[Example] = []
    with open(path, encoding="utf-8") as f:
        header = f.readline()
        if not header.strip():
            raise InputError(f"{path}:1: empty file, expected the header 'text<TAB>label'")
        if header.rstrip("\r\n").split("\t") != _HEADER:
            raise InputError(f"{path}:1: bad header {header.rstrip()!r}, expected 'text<TAB>label'")
        for lineno, line in enumerate(f, start=2):
            if max_examples is not None and len(examples) >= max_examples:
                break
            line = line.rstrip("\r\n")
            if not line.strip():
                continue  # tolerate blank lines (e.g. a trailing newline added by an editor)
            fields = line.split("\t")
            if len(fields) != 2:
                raise InputError(f"{path}:{lineno}: expected 2 tab-separated columns, got {len(fields)}")
            text, label = fields
            if label not in ("0", "1"):
                raise InputError(f"{path}:{lineno}: label must be 0 or 1, got {label!r}")
            examples.append(Example(text.strip(), int(label)))
    if not examples:
        raise InputError(f"{path}: no examples after the header")
    return examples
