"""The limits `train` enforces, `eval` and `predict` enforce too, with the same message; and what
predict does with texts that are not there (empty arguments, blank input). Each row: exit 2, one
line "error: ...", nothing written, the checkpoint it was pointed at byte-for-byte intact."""
from __future__ import annotations

import io
import shutil
import sys

import pytest
from harness import Case, check

from minigpt_ptv2.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

ROOM = "must leave room for [CLS], [SEP] and a token, got"  # train's words for --max-length < 3


@pytest.fixture(scope="module")
def saved(minilm_dir, tmp_path_factory):
    """Untrained sst2 and conll checkpoints (training max_length 16), and a conll one whose
    recorded max_length (600) exceeds MiniLM's 512 positions."""
    from minigpt_ptv2.data import CONLL_LABELS
    from minigpt_ptv2.training import build_task_model, save_checkpoint
    root = tmp_path_factory.mktemp("cli_inputs")
    for name, task, max_length in (("sst2", "sst2", 16), ("conll", "conll", 16), ("too-long", "conll", 600)):
        model = build_task_model(task, "soft", 2, model_dir=minilm_dir)
        save_checkpoint(model, root / name, task=task, method="soft", P=2,
                        labels=("negative", "positive") if task == "sst2" else CONLL_LABELS,
                        extra={"train": {"max_length": max_length}})
    return root


def cli(*argv, stdin=None):
    """A row running `main`; `{ck}` in an argument is the checkpoint copied into the row's folder."""
    def run(tmp):
        old = sys.stdin
        sys.stdin = io.StringIO(stdin) if stdin is not None else old
        try:
            return main([a.format(ck=tmp / "ck", tmp=tmp) for a in argv])
        finally:
            sys.stdin = old
    return run


CASES = [  # (checkpoint to copy in, Case)
    ("sst2", Case("train's rule for predict --max-length 2", cli("predict", "{ck}", "fine", "--max-length", "2"),
                  [f"--max-length {ROOM} 2"], cli=True)),
    ("sst2", Case("train's rule for eval --max-length 2", cli("eval", "{ck}", "--max-length", "2"),
                  [f"--max-length {ROOM} 2"], cli=True)),
    ("conll", Case("train's rule for predict --max-length 1", cli("predict", "{ck}", "fine", "--max-length", "1"),
                   [f"--max-length {ROOM} 1"], cli=True)),
    ("sst2", Case("predict --max-length past the position table",
                  cli("predict", "{ck}", "fine", "--max-length", "600"),
                  ["--max-length 600 is more than the model can read", "512 rows", "512 or less"], cli=True)),
    ("conll", Case("eval --max-length past the position table", cli("eval", "{ck}", "--max-length", "513"),
                   ["--max-length 513 is more than the model can read"], cli=True)),
    ("too-long", Case("predict with a checkpoint's max_length past the table", cli("predict", "{ck}", "fine"),
                      ["the checkpoint's max_length 600", "512 or less"], cli=True)),
    ("too-long", Case("eval with a checkpoint's max_length past the table", cli("eval", "{ck}"),
                      ["the checkpoint's max_length 600"], cli=True)),
    ("conll", Case("predict --stride as long as a window", cli("predict", "{ck}", "fine", "--stride", "14"),
                   ["--stride must be an int in [0, 14)", "got 14"], cli=True)),
    ("conll", Case("predict --stride -1", cli("predict", "{ck}", "fine", "--stride", "-1"),
                   ["--stride", "got -1"], cli=True)),
    ("sst2", Case("an empty sentence argument", cli("predict", "{ck}", "fine", ""),
                  ["sentence argument 2 is empty"], cli=True)),
    ("conll", Case("a whitespace-only argument", cli("predict", "{ck}", "  \t"),
                   ["sentence argument 1 is empty (only whitespace)"], cli=True)),
    ("sst2", Case("only blank lines on stdin", cli("predict", "{ck}", stdin="\n   \n\t\n"),
                  ["no sentences to predict"], cli=True)),
    ("sst2", Case("a file of blank lines", cli("predict", "{ck}", "--file", "{tmp}/in.txt"),
                  ["no sentences to predict"], cli=True)),
    ("sst2", Case("arguments and --file", cli("predict", "{ck}", "fine", "--file", "{tmp}/none.txt"),
                  ["not both"], cli=True)),
]


@pytest.mark.parametrize("row", range(len(CASES)), ids=[c.id for _, c in CASES])
def test_refused_in_one_line(row, saved, tmp_path, monkeypatch):
    source, case = CASES[row]
    monkeypatch.chdir(tmp_path)  # a stray default output would land here and be seen
    shutil.copytree(saved / source, tmp_path / "ck")
    (tmp_path / "in.txt").write_text("\n  \n\n")
    check(case, tmp_path)
