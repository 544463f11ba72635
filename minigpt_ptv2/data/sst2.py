"""GLUE SST-2 (binary sentiment) reader: one sentence, one label, strict about the file's shape.

The file is a plain TSV whose header is ``text\\tlabel`` (the shared copy) or ``sentence\\tlabel``
(GLUE's own train.tsv and dev.tsv); those two headers are accepted, nothing else, so a file with
other columns (GLUE's unlabelled test.tsv, ``index\\tsentence``) is refused rather than misread.
The text is already lower-cased and space-tokenised and never contains a tab, so a row is split
on tabs without any CSV quoting rules (SST-2 text contains quote characters that a CSV reader
would misinterpret). The file must be UTF-8 (a leading byte-order mark is fine).
Errors name the file and the 1-based line so a broken file is fixed in one look.
"""
from __future__ import annotations

import os
from typing import NamedTuple

from ..errors import InputError
from ..lines import one_record
from .paths import check_max_examples, data_file, text_lines

SST2_LABELS = ["negative", "positive"]  # label id -> name
SST2_SPLITS = ("train", "dev")  # the test split has no labels and is not shipped
HEADERS = (["text", "label"], ["sentence", "label"])  # ours, GLUE's


class Example(NamedTuple):
    """One sentence-level example: ``label`` indexes SST2_LABELS."""
    text: str
    label: int


def load_sst2(split: str = "train", data_dir: str | os.PathLike | None = None,
              max_examples: int | None = None) -> list[Example]:
    """Read ``sst2/{split}.tsv``; ``max_examples`` keeps the first rows (for quick runs)."""
    if split not in SST2_SPLITS:
        raise InputError(f"unknown SST-2 split {split!r}: valid splits are {', '.join(SST2_SPLITS)}")
    check_max_examples(max_examples)
    path = data_file(f"sst2/{split}.tsv", data_dir)
    return read_sst2_file(path, max_examples)


def read_sst2_file(path: str | os.PathLike, max_examples: int | None = None) -> list[Example]:
    """Parse one SST-2 style TSV file (header ``text\\tlabel`` or ``sentence\\tlabel``),
    validating every row read."""
    check_max_examples(max_examples)
    examples: list[Example] = []
    expected = " or ".join("'" + "<TAB>".join(h) + "'" for h in HEADERS)
    lines = ((n, one_record(line, path, n)) for n, line in text_lines(path))
    lineno, header = next(lines, (0, ""))
    if not header.strip():
        what = "empty file" if lineno == 0 else "blank first line"
        raise InputError(f"{path}:1: {what}, expected the header {expected}")
    if header.split("\t") not in HEADERS:
        raise InputError(f"{path}:1: bad header {header!r}, expected {expected}")
    for lineno, line in lines:
        if max_examples is not None and len(examples) >= max_examples:
            break
        if not line.strip():
            continue  # tolerate blank lines (e.g. a trailing newline added by an editor)
        fields = line.split("\t")
        if len(fields) != 2:
            raise InputError(f"{path}:{lineno}: expected 2 tab-separated columns, got {len(fields)}")
        text, label = fields
        if label not in ("0", "1"):
            raise InputError(f"{path}:{lineno}: label must be 0 or 1, got {label!r}")
        if not text.strip():
            raise InputError(f"{path}:{lineno}: the sentence is empty{' (only whitespace)' if text else ''}: "
                             f"give it a text or delete the row")
        examples.append(Example(text.strip(), int(label)))
    if not examples:
        raise InputError(f"{path}: no examples after the header")
    return examples
