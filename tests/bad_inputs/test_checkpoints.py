"""Bad checkpoints and bad output folders, refused by name with nothing written (issue rules 1, 2).

- checkpoint.json: every field checked by kind before anything is built ("P": true is not a
  length, "version": "2" is not a version), the weights file it names must be a plain file of
  ours in the same folder, match its sha256 and hold only finite numbers;
- --out: a file, a path under a file, an unwritable place, a folder of someone else's files, a
  checkpoint a new run would replace, a folder another run is writing: each refused before any
  training, naming the folder (and the other process);
- --resume: only the run that was interrupted, with the arguments it was started with.
Rows build their checkpoints on bert-tiny: every refusal comes before a backbone is loaded.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from harness import Case, check
from safetensors.torch import load_file, save_file

from minigpt_ptv2 import BertEncoder, preset
from minigpt_ptv2.cli import main
from minigpt_ptv2.errors import MissingFileError, NonFiniteError
from minigpt_ptv2.prompts import make_method
from minigpt_ptv2.training import Head, TaskModel, load_checkpoint, save_checkpoint, set_trainable
from minigpt_ptv2.training import state as run_state
from minigpt_ptv2.training.lock import FolderBusy

CKPT = {}


@dataclass
class Row(Case):
    setup: Callable = lambda tmp: None  # writes the bad input before the snapshot


@pytest.fixture(scope="module", autouse=True)
def saved(tmp_path_factory):
    """One real checkpoint (bert-tiny + K/V prefix, P=2), copied into each row's folder."""
    torch.manual_seed(0)
    CKPT["dir"] = tmp_path_factory.mktemp("saved") / "ck"
    save_checkpoint(tiny(), CKPT["dir"], task="sst2", method="prefix", P=2, labels=("negative", "positive"))


def tiny() -> TaskModel:
    cfg = preset("bert-tiny")
    heads = {"sst2": Head(cfg.hidden_size, 2, "sequence")}
    model = TaskModel(BertEncoder(cfg).attach(make_method("prefix", cfg, 2)), heads)
    set_trainable(model, "prefix")
    return model


def ck(edit_meta=None, text=None, edit_weights=None):
    """tmp/ck: the saved checkpoint, with checkpoint.json edited (edit_meta(meta) or raw text)
    and/or its tensors rewritten (edit_weights(tensors), the sha256 updated to match)."""
    def setup(tmp):
        folder = shutil.copytree(CKPT["dir"], tmp / "ck")
        meta = json.loads((folder / "checkpoint.json").read_text())
        if edit_weights:
            path = folder / "checkpoint.safetensors"
            save_file(edit_weights(load_file(str(path))), str(path))
            meta["weights_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        if edit_meta:
            edit_meta(meta)
        (folder / "checkpoint.json").write_text(text if text is not None else json.dumps(meta))
    return setup


def drop(field):
    return lambda meta: meta.pop(field)


def put(field, value):
    return lambda meta: meta.update({field: value})


def load(tmp):
    return load_checkpoint(tmp / "ck", model_dir="/no/backbone/needed")


def nan_head(tensors):
    t = tensors["heads.sst2.classifier.bias"].clone()
    t[0] = float("nan")
    return {**tensors, "heads.sst2.classifier.bias": t}


def train(*args):
    """`train ...` run from tmp: paths in args are relative to it."""
    def run(tmp):
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            return main(["train", *args, "--no-progress"])
        finally:
            os.chdir(cwd)
    return run


def resume_state(**args):
    """tmp/run/resume/state.json of an interrupted sst2/prefix run (only the JSON: every
    argument refusal comes before the tensors are read)."""
    def setup(tmp):
        folder = tmp / "run" / run_state.DIRNAME
        folder.mkdir(parents=True)
        saved_args = {"task": "sst2", "method": "prefix", "P": 16, "method_kwargs": {"positions": "real"},
                      "epochs": 3, "lr": 1e-2, "batch_size": 32, "max_train": None, "max_dev": None,
                      "max_length": 128, "seed": 0, "dropout": True, "diverge_factor": 3.0, "world_size": 1,
                      **args}
        meta = {"format": run_state.FORMAT, "epochs_done": 1, "history": [], "watch": {}, "optimizer": {},
                "scheduler": {}, "rng": [], "extra": {"args": saved_args}}
        (folder / "state.json").write_text(json.dumps(meta))
    return setup


def both(*setups):
    return lambda tmp: [s(tmp) for s in setups]


ROWS = [
    # --- checkpoint.json, field by field (read_meta) -----------------------------------------------
    Row("json: a list, not an object", load, ["checkpoint.json", "JSON object", "list"], setup=ck(text="[1, 2]")),
    Row("json: broken", load, ["checkpoint.json", "line 1, column 2"], setup=ck(text="{oops")),
    Row("json: another tool's file", load, ["checkpoint.json", "format='peft'"], setup=ck(put("format", "peft"))),
    Row("json: no backbone", load, ["checkpoint.json", "missing field 'backbone'", "an object"],
        setup=ck(drop("backbone"))),
    Row("json: no task", load, ["missing field 'task'", "a string"], setup=ck(drop("task"))),
    Row("json: no method_kwargs", load, ["missing field 'method_kwargs'"], setup=ck(drop("method_kwargs"))),
    Row("json: method_kwargs a list", load, ["'method_kwargs' must be an object", "[]"],
        setup=ck(put("method_kwargs", []))),
    Row("json: version a string", load, ["'version' must be an int", '"2" (str)'], setup=ck(put("version", "2"))),
    Row("json: version 99", load, ["checkpoint version 99", "versions 1 and 2"], setup=ck(put("version", 99))),
    Row("json: P is true", load, ["'P' must be an int", "true (bool)"], setup=ck(put("P", True))),
    Row("json: P negative", load, ["'P' must be >= 0, got -4"], setup=ck(put("P", -4))),
    Row("json: unknown task", load, ["'task' is 'mnli'", "sst2"], setup=ck(put("task", "mnli"))),
    Row("json: unknown method", load, ["'method' is 'lora'"], setup=ck(put("method", "lora"))),
    Row("json: labels an object", load, ["'labels' must be a list"], setup=ck(put("labels", {"0": "neg"}))),
    Row("json: weights a path", load, ["'weights'", "../x.safetensors"], setup=ck(put("weights", "../x.safetensors"))),
    Row("json: weights file missing", load, ["checkpoint-00000000deadbeef.safetensors"], MissingFileError,
        setup=ck(put("weights", "checkpoint-00000000deadbeef.safetensors"))),
    Row("weights: edited after saving", load, ["checkpoint.safetensors", "sha256"],
        setup=both(ck(), lambda tmp: (tmp / "ck" / "checkpoint.safetensors").write_bytes(
            (tmp / "ck" / "checkpoint.safetensors").read_bytes() + b" "))),
    Row("weights: NaN with a matching sha256", load, ["checkpoint.safetensors", "'heads.sst2.classifier.bias'",
                                                      "1 NaN"], NonFiniteError, setup=ck(edit_weights=nan_head)),
    Row("cli: eval of a checkpoint without a backbone field", lambda tmp: main(["eval", str(tmp / "ck")]),
        ["checkpoint.json", "'backbone'"], cli=True, setup=ck(drop("backbone"))),

    # --- --out, before any training ------------------------------------------------------------------
    Row("out: a file", train("sst2", "prefix", "--out", "f"), ["--out f is a file"], cli=True,
        setup=lambda tmp: (tmp / "f").write_text("x")),
    Row("out: under a file", train("sst2", "prefix", "--out", "f/run"), ["--out f/run is under f", "a file"],
        cli=True, setup=lambda tmp: (tmp / "f").write_text("x")),
    Row("out: someone else's files", train("sst2", "prefix", "--out", "mine"),
        ["--out mine", "notes.txt", "not a minigpt_ptv2 checkpoint"], cli=True,
        setup=lambda tmp: (tmp / "mine").mkdir() or (tmp / "mine" / "notes.txt").write_text("keep me")),
    Row("out: a checkpoint a new run would replace", train("sst2", "prefix", "--out", "ck"),
        ["--out ck already holds a checkpoint (sst2 / prefix)", "--overwrite"], cli=True, setup=ck()),
    Row("out: a broken checkpoint, even with --overwrite", train("sst2", "prefix", "--out", "ck", "--overwrite"),
        ["--out ck holds a checkpoint.json that is not a readable checkpoint", "'task'"], cli=True,
        setup=ck(drop("task"))),
    Row("out: an interrupted run", train("sst2", "prefix", "--out", "run"),
        ["--out run holds an interrupted run", "--resume run"], cli=True, setup=resume_state()),
    Row("train: no task", train("--out", "x"), ["needs TASK and METHOD", "--resume DIR"], cli=True),
    Row("train: --diverge-factor -1", train("sst2", "prefix", "--diverge-factor", "-1"),
        ["argument --diverge-factor", "got -1"], cli=True),

    # --- --resume -------------------------------------------------------------------------------------
    Row("resume: a missing folder", train("--resume", "gone"), ["--resume gone: no such folder"], cli=True),
    Row("resume: a finished run", train("--resume", "ck"), ["--resume ck", "holds no interrupted run"], cli=True,
        setup=ck()),
    Row("resume: another --lr", train("--resume", "run", "--lr", "0.1"),
        ["--lr: the run in run was started with 0.01, this one has 0.1"], cli=True, setup=resume_state()),
    Row("resume: more epochs", train("--resume", "run", "--epochs", "5"),
        ["--epochs: the run in run was started with 3, this one has 5"], cli=True, setup=resume_state()),
    Row("resume: another task", train("conll", "prefix", "--resume", "run"), ["TASK: ", "'sst2'", "'conll'"],
        cli=True, setup=resume_state()),
    Row("resume: other positions", train("--resume", "run", "--positions", "shifted"), ["--positions: "],
        cli=True, setup=resume_state()),
    Row("resume: --out elsewhere", train("--resume", "run", "--out", "other"), ["drop --out other"], cli=True,
        setup=resume_state()),
    Row("resume: and --overwrite", train("--resume", "run", "--overwrite"), ["--overwrite", "choose one"],
        cli=True, setup=resume_state()),
    Row("resume: a broken state.json", train("--resume", "run"), ["state.json", "missing field 'extra'"], cli=True,
        setup=lambda tmp: (tmp / "run" / "resume").mkdir(parents=True) or (tmp / "run" / "resume" / "state.json")
        .write_text(json.dumps({"format": run_state.FORMAT, "epochs_done": 1, "history": [], "watch": {},
                                "optimizer": {}, "scheduler": {}, "rng": []}))),
]


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_refused(row, tmp_path):
    row.setup(tmp_path)
    check(row, tmp_path)


def test_an_unwritable_out_is_refused_before_training(tmp_path):
    """Root may write anywhere os.access looks: there, /sys (which refuses new folders) stands in."""
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
        out, needle = str(tmp_path / "ro" / "run"), "no write permission on"
    elif Path("/sys").is_dir():
        out, needle = "/sys/minigpt_ptv2_test/run", "cannot be written"
    else:
        pytest.skip("no unwritable place to try")
    from minigpt_ptv2.data import data_dir
    try:
        data = str(data_dir())
    except FileNotFoundError as e:
        pytest.skip(str(e))
    message = check(Row("unwritable", train("sst2", "prefix", "--out", out, "--max-train", "8", "--data-dir", data),
                        [f"--out {out}", needle], cli=True), tmp_path)
    assert not Path(out).exists(), message


HOLDER = """
import sys
from minigpt_ptv2.training.lock import locked
with locked(sys.argv[1], "train sst2 prefix"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_folder_another_run_is_writing_is_refused(tmp_path):
    shutil.copytree(CKPT["dir"], tmp_path / "ck")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "ck")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        names = [str(tmp_path / "ck"), "is being written by another run", f"pid {proc.pid}", "train sst2 prefix"]
        model = tiny()
        check(Row("save into a locked folder", lambda tmp: save_checkpoint(
            model, tmp / "ck", task="sst2", method="prefix", P=2), names, FolderBusy), tmp_path)
        check(Row("train --overwrite into a locked folder", train(
            "sst2", "prefix", "--out", str(tmp_path / "ck"), "--overwrite", "--max-train", "8"), names, cli=True),
            tmp_path)
    finally:
        proc.kill()
        proc.wait()

