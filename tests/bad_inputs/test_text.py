"""Text read exactly as written, at every door (minigpt_ptv2/lines.py): predict's arguments, --file
and standard input, mixed predict, the dataset readers, train lm's text file, the tokenizers.

- a line ends at "\\n" or "\\r\\n" only: a line separator, NEL or a control character inside a
  sentence keeps it one sentence (one prediction, one example);
- a byte that is not text (not UTF-8, a NUL, UTF-16 without its mark) is named with its source,
  line and byte, as is a pipe given as a file;
- CoNLL columns are cut at ASCII spaces and tabs only, and every line has the file's number;
- a tokenizer.json asking for what our reader does not do is refused by name, and BPE is fast
  on long words.
Predictions run on a tiny BERT folder (random weights, a six-word vocab.txt): what is counted is
how many texts were read, not what the model says about them.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from harness import Case, check

from minigpt_ptv2 import BertEncoder, preset
from minigpt_ptv2.cli import main
from minigpt_ptv2.data import read_conll_file, read_sst2_file
from minigpt_ptv2.data.bpe import ByteLevelBPE
from minigpt_ptv2.data.text import read_text
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.models import save_pretrained
from minigpt_ptv2.training import Predictor, build_task_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

HERE = {}


@dataclass
class Row(Case):
    setup: Callable = lambda tmp: None  # writes the bad input before the snapshot
SEPARATORS = "\u2028\u2029\x85\x1c\x1d\x1e\x0b\x0c"  # each ends a line for str.splitlines(), none here


@pytest.fixture(scope="module", autouse=True)
def tiny(tmp_path_factory):
    """A tiny BERT folder, an sst2 and a conll checkpoint on it, and a byte-level BPE tokenizer.json."""
    from test_train_lm import bpe
    root = tmp_path_factory.mktemp("text")
    torch.manual_seed(0)
    save_pretrained(BertEncoder(preset("bert-tiny")), root / "bert")
    (root / "bert" / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\ncat\n", encoding="utf-8")
    for task in ("sst2", "conll"):
        model = build_task_model(task, "prefix", 2, model_dir=root / "bert")
        save_checkpoint(model, root / task, task=task, method="prefix", P=2, extra={"train": {"max_length": 16}})
    HERE.update(root=root, bpe=json.loads(bpe("gpt2").to_str()))
    ByteLevelBPE(HERE["bpe"]).encode("warm up")  # the \p{L} and \p{N} tables are built once, here


def predict(*args, stdin: bytes | None = None):
    """`predict CKPT ... --model-dir tiny --json` with stdin bytes; returns (exit code, predictions)."""
    root = HERE["root"]
    argv = ["predict", *[str(a).format(sst2=root / "sst2", conll=root / "conll") for a in args],
            "--model-dir", str(root / "bert"), "--json", "--no-progress"]
    old = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = main(argv)
    finally:
        sys.stdin = old
    return code, (json.loads(out.getvalue())["predictions"] if code == 0 else None)


def predicts(n: int, *args, stdin: bytes | None = None, file: bytes | None = None):
    """A row that works: predict reads exactly n texts (from stdin, or from tmp/in.txt holding `file`)."""
    def run(tmp):
        extra = []
        if file is not None:
            (tmp / "in.txt").write_bytes(file)
            extra = ["--file", str(tmp / "in.txt")]
        code, predictions = predict(*args, *extra, stdin=stdin)
        assert code == 0 and len(predictions) == n, predictions
        return code
    return run


def refused(*args, stdin: bytes | None = None, file: bool = False):
    """A predict row meant to fail; with `file`, it reads tmp/in.txt (its Row's setup writes it)."""
    def run(tmp):
        extra = ["--file", str(tmp / "in.txt")] if file else []
        return predict(*args, *extra, stdin=stdin)[0]
    return run


def write(name: str, data: bytes):
    return lambda tmp: (tmp / name).write_bytes(data)


def reading(reader, name: str):
    return lambda tmp: reader(tmp / name)


def fifo(reader):
    def run(tmp):
        path = tmp / "pipe"
        os.mkfifo(path)
        try:
            return reader(path)
        finally:
            path.unlink()
    return run


def conll_word(tmp):
    (tmp / "d.txt").write_bytes("New\u00a0York NNP B-LOC\nis VBZ O\n".encode("utf-8"))
    sentences = read_conll_file(tmp / "d.txt")
    assert sentences[0].words == ["New\u00a0York", "is"] and sentences[0].tags == ["B-LOC", "O"]


def sst2_separators(tmp):
    (tmp / "d.tsv").write_bytes(f"text\tlabel\na{SEPARATORS}b\t1\n".encode("utf-8"))
    assert [e.text for e in read_sst2_file(tmp / "d.tsv")] == [f"a{SEPARATORS}b"]


def lm_text_separators(tmp):
    (tmp / "t.txt").write_bytes(f"one\u2028two\r\nthree\x85four\r\r\n".encode("utf-8"))
    assert read_text(tmp / "t.txt") == "one\u2028two\nthree\x85four\r"  # \r\n ends a line; a lone \r is text


def bpe_with(added=None, post=None):
    def run(tmp):
        spec = json.loads(json.dumps(HERE["bpe"]))
        spec["added_tokens"] += added or []
        if post is not None:
            spec["post_processor"] = post
        return ByteLevelBPE(spec)
    return run


def long_word(tmp):
    tok = ByteLevelBPE(HERE["bpe"])
    start = time.perf_counter()
    ids = tok.encode("thecat" * 3400)  # 20,400 characters, one piece
    assert len(ids) > 0 and time.perf_counter() - start < 1.0  # 0.1 s measured; 40 s before


UTF16 = "the cat\nthe\n".encode("utf-16-le")  # no byte-order mark: every other byte NUL
LATIN1 = "the cat\ncaf\xe9\n".encode("latin-1")
ADDED = {"id": 299, "content": "<sep>", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}

CASES = [
    # --- lines end at \n or \r\n only ------------------------------------------------------------
    Case("predict --file: U+2028 inside a sentence is one prediction",
         predicts(1, "{sst2}", file="the\u2028cat\n".encode("utf-8")), works=True, cli=True, was="silent"),
    Case("predict stdin: 3 lines holding NEL and \\x1e are 3 predictions",
         predicts(3, "{sst2}", stdin="the\x85cat\nthe\x1ecat\ncat\n".encode("utf-8")), works=True, cli=True,
         was="silent"),
    Case("predict --file: every splitlines-only separator stays inside its line",
         predicts(2, "{conll}", file=f"the{SEPARATORS}cat\nthe cat\n".encode("utf-8")), works=True, cli=True,
         was="silent"),
    Case("predict --file: CRLF lines", predicts(2, "{sst2}", file=b"the cat\r\nthe\r\n"), works=True, cli=True),
    Case("predict --also: U+2028 inside a tagged line is one prediction",
         predicts(2, "{sst2}", "--also", "{conll}", file="sst2\tthe\u2028cat\nconll: the\u2029cat\n".encode("utf-8")),
         works=True, cli=True, was="silent"),
    Case("sst2 file: separators inside a sentence", sst2_separators, works=True),
    Case("train lm text: U+2028 and NEL kept, \\r\\n ends a line", lm_text_separators, works=True, was="silent"),

    # --- bytes that are not text, named with source, line and byte --------------------------------
    Row("predict --file: a Latin-1 byte", refused("{sst2}", file=True), ["in.txt:2", "0xe9", "byte 4"],
        cli=True, was="escape", setup=write("in.txt", LATIN1)),
    Case("predict stdin: a Latin-1 byte", refused("{sst2}", stdin=LATIN1), ["standard input:2", "0xe9"],
         cli=True, was="escape"),
    Case("predict: an argument that was not UTF-8", refused("{sst2}", "the", "caf\udce9"),
         ["command-line argument 4", "byte 0xe9 (character 4) is not UTF-8"], cli=True, was="escape"),
    Case("generate: a text argument that was not UTF-8",
         lambda tmp: main(["generate", "--model-dir", str(tmp), "caf\udce9"]),
         ["command-line argument 4", "0xe9"], cli=True, was="escape"),
    Row("predict --file: UTF-16 without its mark", refused("{sst2}", file=True),
        ["in.txt:1", "NUL", "UTF-16"], cli=True, was="silent", setup=write("in.txt", UTF16)),
    Row("train lm text: UTF-16 without its mark", reading(read_text, "t.txt"),
        ["t.txt:1", "byte 0x00 (byte 2 of the line)", "UTF-16"], InputError, was="silent", setup=write("t.txt", UTF16)),
    Row("train lm text: binary data", reading(read_text, "t.txt"), ["t.txt:1", "NUL", "binary"], InputError,
        was="silent", setup=write("t.txt", b"PK\x03\x04\x14\x00\x00\x00\x08\x00text")),
    Row("sst2 file: UTF-16 without its mark", reading(read_sst2_file, "d.tsv"), ["d.tsv:1", "UTF-16"], InputError,
        was="ugly", setup=write("d.tsv", "text\tlabel\n".encode("utf-16-le"))),
    Case("train lm --text-file a pipe", fifo(read_text), ["--text-file", "is a pipe, not a regular file"],
         InputError, was="ugly"),
    Case("predict --file a pipe", lambda tmp: fifo(lambda p: main(["predict", str(HERE["root"] / "sst2"), "--file",
                                                                   str(p)]))(tmp),
         ["--file", "is a pipe"], cli=True, was="ugly"),
    Case("predict API: a lone surrogate", lambda tmp: Predictor.from_checkpoint(
        HERE["root"] / "sst2", HERE["root"] / "bert").predict(["the", "caf\udce9"]),
         ["text 2", "0xe9"], InputError, was="escape"),
    Case("BPE encode: a lone surrogate", lambda tmp: ByteLevelBPE(HERE["bpe"]).encode("x\ud800y"),
         ["character 2 (U+D800) is a lone surrogate"], InputError, was="escape"),

    # --- CoNLL columns ---------------------------------------------------------------------------
    Case("conll: a no-break space inside a word", conll_word, works=True, was="silent"),
    Row("conll: a word split by a space (4 columns among 3)", reading(read_conll_file, "d.txt"),
        ["d.txt:2", "4 columns", "have 3 (line 1)"], InputError, was="silent",
        setup=write("d.txt", b"EU NNP B-ORG\nNew York NNP B-LOC\n")),
    Row("conll: a line of 2 columns among 4", reading(read_conll_file, "d.txt"),
        ["d.txt:4", "2 columns", "have 4 (line 3)"], InputError, was="silent",
        setup=write("d.txt", b"-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects O\n")),

    # --- tokenizer.json options our reader does not do, and long words ------------------------------
    Case("added token with lstrip", bpe_with([{**ADDED, "lstrip": True}]), ["'<sep>' with lstrip=true"],
         InputError, was="silent"),
    Case("added token with rstrip", bpe_with([{**ADDED, "rstrip": True}]), ["'<sep>' with rstrip=true"],
         InputError, was="silent"),
    Case("added token with single_word", bpe_with([{**ADDED, "single_word": True}]),
         ["'<sep>' with single_word=true"], InputError, was="silent"),
    Case("post_processor RobertaProcessing", bpe_with(post={"type": "RobertaProcessing", "sep": ["</s>", 2],
                                                             "cls": ["<s>", 0]}),
         ["post_processor 'RobertaProcessing'"], InputError, was="silent"),
    Case("BPE: a 20,400-character word in under a second", long_word, works=True, was="ugly"),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_text(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    getattr(case, "setup", lambda tmp: None)(tmp_path)
    check(case, tmp_path)
