"""CoNLL-2003 English NER reader: sentences of (word, IOB2 tag), strict about the file's shape.

Each non-blank line is ``word POS [chunk] TAG``: the first column is the word and the last the
NER tag, whatever sits between; every line of a file has the same number of columns (the first
word line's). Columns are separated by ASCII spaces and tabs only: a no-break space (U+00A0) or
any other Unicode space inside a word is part of the word, as the corpus wrote it (str.split()
would cut the word there and drop its second half). A blank line ends a sentence. ``-DOCSTART-`` lines (present in
the copies of the corpus most users download) are document markers, not words, and are skipped,
also when the file starts with a UTF-8 byte-order mark (which would otherwise glue itself to the
first ``-DOCSTART-`` and turn it into a word). The file must be UTF-8.
Errors name the file and the 1-based line.
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple

from ..errors import InputError
from ..lines import one_record
from .paths import check_max_examples, data_file, text_lines

# Fixed label order, "O" = 0, then B-/I- pairs per type. This is the order of the widely used
# HuggingFace `conll2003` dataset, so label ids match checkpoints and papers that use it.
CONLL_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
CONLL_LABEL_TO_ID = {tag: i for i, tag in enumerate(CONLL_LABELS)}
CONLL_SPLITS = ("train", "dev", "test")
COLUMN_GAP = re.compile(r"[ \t]+")  # what separates columns: ASCII spaces and tabs, nothing else


class Sentence(NamedTuple):
    """One tagged sentence; unpacks as ``words, tags = sentence``."""
    words: list[str]
    tags: list[str]


def load_conll(split: str = "train", data_dir: str | os.PathLike | None = None,
               max_examples: int | None = None) -> list[Sentence]:
    """Read ``conll2003/{split}.txt``; ``max_examples`` keeps the first sentences."""
    if split not in CONLL_SPLITS:
        raise InputError(f"unknown CoNLL-2003 split {split!r}: valid splits are {', '.join(CONLL_SPLITS)}")
    check_max_examples(max_examples)
    path = data_file(f"conll2003/{split}.txt", data_dir)
    return read_conll_file(path, max_examples)


def read_conll_file(path: str | os.PathLike, max_examples: int | None = None) -> list[Sentence]:
    """Parse one CoNLL-format file, validating every line read."""
    check_max_examples(max_examples)
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    columns = None  # (how many, the line that set it): the first word line's
    for lineno, line in text_lines(path):
        line = one_record(line, path, lineno).strip(" \t")
        fields = COLUMN_GAP.split(line) if line else []
        if not fields:  # sentence boundary
            if words:
                sentences.append(Sentence(words, tags))
                words, tags = [], []
                if max_examples is not None and len(sentences) >= max_examples:
                    return sentences
            continue
        if fields[0] == "-DOCSTART-":
            continue
        if len(fields) < 2:
            raise InputError(f"{path}:{lineno}: expected 'word POS TAG', got {line!r}")
        columns = columns or (len(fields), lineno)
        if len(fields) != columns[0]:
            raise InputError(f"{path}:{lineno}: {len(fields)} columns, but the file's lines have {columns[0]} "
                             f"(line {columns[1]}): got {line!r}")
        tag = fields[-1]
        if tag not in CONLL_LABEL_TO_ID:
            raise InputError(f"{path}:{lineno}: unknown tag {tag!r}, expected one of {CONLL_LABELS}")
        words.append(fields[0])
        tags.append(tag)
    if words:  # last sentence without a trailing blank line
        sentences.append(Sentence(words, tags))
    if not sentences:
        raise InputError(f"{path}: no sentences found")
    return sentences[:max_examples] if max_examples is not None else sentences
