"""Output folders, the machine's faults, numbers at the door and messages that name the real cause.

- Every command that writes a folder refuses, before any work, a folder holding something it did
  not make (unless --overwrite), a folder it reads (with or without --overwrite: after symlinks
  and '..' are resolved), a file, a broken link, an unwritable place (outdir.py). Before, three
  of these rows lost the user's files: import-peft over a trained checkpoint, export-hf over its
  own --model-dir, export-hf over another model.
- A full disk, a file-size limit, a closed stdout: one line naming the path and the cause, exit
  1, the old checkpoint intact (faults.py). A full disk is simulated here by making the lowest
  write of a save, atomic.write_file, write half its bytes and raise ENOSPC as os.write does
  (no file name); tests/test_writers.py fills a real tmpfs where it can (root), and sets a real
  file-size limit.
- Every numeric option is range-checked by the parser, naming the option (cli/_shared.py).
- fp16 overflows, a resume's folders, an import onto a short position table: named as what they are.
Rows run on tiny inputs (tests/tiny_world.py); each is refused before a model is loaded, or
works in well under a second.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import os
import resource
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from unittest import mock

import pytest
import tiny_world
import torch
from harness import Case, check
from torch import nn

from minigpt_ptv2.cli import main
from minigpt_ptv2.errors import NonFiniteError, WriteError
from minigpt_ptv2.training import TrainConfig, fit, save_checkpoint, set_seed
from minigpt_ptv2.training import atomic, lock
from minigpt_ptv2.training import state as run_state

pytestmark = pytest.mark.usefixtures("one_thread")
W: dict = {}


@dataclass
class Row(Case):
    setup: Callable = lambda tmp: None  # writes the bad input before the snapshot


@pytest.fixture(scope="module", autouse=True)
def world(tmp_path_factory):
    W.update(tiny_world.build(tmp_path_factory.mktemp("outputs"), decoder=False))


def cli(*argv, cwd=None):
    """A row running `main`; in an argument, {tmp} is the row's folder and {bert}, {ck}, ... the world's."""
    def run(tmp):
        old = os.getcwd()
        os.chdir(tmp / cwd if cwd else tmp)
        try:
            return main([a.format(tmp=tmp, **W) for a in argv])
        finally:
            os.chdir(old)
    return run


def copy(key, to):
    return lambda tmp: shutil.copytree(W[key], tmp / to)


def both(*setups):
    return lambda tmp: [s(tmp) for s in setups]


def link(name, target):
    return lambda tmp: (tmp / name).symlink_to(tmp / target)


def full_disk(path, data):
    """atomic.write_file on a full disk: half the bytes, then ENOSPC without a file name (os.write's)."""
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def on_full_disk(run):
    def wrapped(tmp):
        with mock.patch.object(atomic, "write_file", full_disk):
            return run(tmp)
    return wrapped


class FullDiskOs:
    """`os` for lock.py, whose os.write of the lock file's contents finds the disk full."""
    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def write(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def lock_on_full_disk(run):
    def wrapped(tmp):
        with mock.patch.object(lock, "os", FullDiskOs()):
            return run(tmp)
    return wrapped


def file_size_limit(run, limit=32 * 1024):
    """`ulimit -f` for this process while the row runs: a write past `limit` bytes raises EFBIG
    (Python ignores SIGXFSZ); export-hf writes an 80 KB model.safetensors."""
    def wrapped(tmp):
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            return run(tmp)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    return wrapped


class ClosedPipe(io.TextIOBase):
    """stdout whose reader has gone (`... | head -1`)."""
    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def into_closed_pipe(run):
    def wrapped(tmp):
        old = sys.stdout
        sys.stdout = ClosedPipe()
        try:
            return run(tmp)
        finally:
            sys.stdout = old
    return wrapped


def unwritable(tmp):
    """A place nothing can be created in: for root (whom permissions do not stop), /sys."""
    if os.geteuid() == 0:
        return Path("/sys/minigpt_ptv2_test/figs")
    (tmp / "ro").mkdir(mode=0o500, exist_ok=True)
    return tmp / "ro" / "figs"


def figures_unwritable(tmp):
    return main(["figures", "--quick", "--no-progress", "--model-dir", str(W["bert"]), "--data-dir", str(W["data"]),
                 "--out", str(unwritable(tmp))])


def resume_state(**args):
    """tmp/run/resume/state.json of an interrupted sst2 run on the world's folders (only the JSON:
    these refusals come before its tensors are read)."""
    def setup(tmp):
        folder = tmp / "run" / run_state.DIRNAME
        folder.mkdir(parents=True)
        saved = {"task": "sst2", "method": "prefix", "P": 2, "method_kwargs": {"positions": "real"}, "epochs": 2,
                 "lr": 1e-2, "batch_size": 4, "max_train": 4, "max_dev": 2, "max_length": 16, "seed": 0,
                 "dropout": True, "diverge_factor": 3.0, "world_size": 1, "model_dir": str(W["bert"]),
                 "data_dir": str(W["data"]), **args}
        meta = {"format": run_state.FORMAT, "epochs_done": 1, "history": [], "watch": {}, "optimizer": {},
                "scheduler": {}, "rng": [], "extra": {"args": saved, "run": "aaaaaaaaaaaaaaaa"}}
        (folder / "state.json").write_text(json.dumps(meta))
    return setup


def checkpoint_of_run(run_id):
    def setup(tmp):
        shutil.copytree(W["ck"], tmp / "run", dirs_exist_ok=True)
        meta = json.loads((tmp / "run" / "checkpoint.json").read_text())
        (tmp / "run" / "checkpoint.json").write_text(json.dumps({**meta, "run": run_id}))
    return setup


# --- fp16 and the learning rate ----------------------------------------------------------------------

def tiny_prefix(value: float):
    from minigpt_ptv2 import BertEncoder, preset
    from minigpt_ptv2.prompts import make_method
    from minigpt_ptv2.training import Head, TaskModel, set_trainable
    cfg = preset("bert-tiny")
    model = TaskModel(BertEncoder(cfg).attach(make_method("prefix", cfg, 2)),
                      {"sst2": Head(cfg.hidden_size, 2, "sequence")})
    set_trainable(model, "prefix")
    with torch.no_grad():
        model.encoder.prompt.embedding.weight.fill_(value)  # past float16's 65504, fine in float32
    return model


def batches(n: int):
    ids = torch.randint(5, 100, (4, 6))  # [B, N]
    return [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 0, 1])}] * n


class InfiniteGradient(nn.Module):
    """A finite loss whose gradient is infinite at every step: the fp16 loss scaler skips them all."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.ones(2))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, task=None):
        root = torch.sqrt(self.p - self.p.detach())  # 0 in value, d/dp = inf
        return (root + self.p).expand(input_ids.shape[0], 2)  # [B, 2]


def fp16_fit(model, steps):
    return lambda tmp: fit(model(), batches(steps), TrainConfig(epochs=1, lr=1e-3, precision="fp16", progress=False),
                           task="sst2")


# --- import-peft onto a short position table ----------------------------------------------------------

def import_then_predict(tmp):
    """64 positions, P=2 shifted: eval and predict read 62 tokens by default, not 128."""
    assert main(["import-peft", str(W["adapter"]), str(tmp / "out"), "--model-dir", str(W["bert"])]) == 0
    meta = json.loads((tmp / "out" / "checkpoint.json").read_text())
    assert meta["train"]["max_length"] == 62, meta
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["predict", str(tmp / "out"), "a fine film", "--model-dir", str(W["bert"])])
    assert code == 0 and "a fine film" in out.getvalue()
    return 0


def long_adapter(tmp):
    """An adapter whose 62 virtual tokens leave bert-tiny's 64 positions no room (PEFT's positions)."""
    from minigpt_ptv2.interop import export_checkpoint
    from minigpt_ptv2.training import build_task_model
    model = build_task_model("sst2", "prefix", 62, model_dir=W["bert"], positions="shifted")
    save_checkpoint(model, tmp / "ck62", task="sst2", method="prefix", P=62, method_kwargs={"positions": "shifted"},
                    labels=("negative", "positive"))
    export_checkpoint(tmp / "ck62", tmp / "ad62", model_dir=W["bert"])
    shutil.rmtree(tmp / "ck62")


TRAIN = ["train", "sst2", "prefix", "--P", "2", "--epochs", "1", "--max-train", "4", "--max-length", "16",
         "--no-progress", "--model-dir", "{bert}", "--data-dir", "{data}"]
FIGURES = ["figures", "--quick", "--no-progress", "--model-dir", "{bert}", "--data-dir", "{data}"]
DEMO = ["demo", "--quick", "--model-dir", "{bert}", "--data-dir", "{data}"]
GENERATE = ["generate", "--model-dir", "{tmp}", "Once", "--do-sample"]
FAULT = "the machine's fault: exit 1"

ROWS = [
    # --- writers: never over what they did not make, never where they read -------------------------
    Row("import-peft over a trained checkpoint", cli("import-peft", "{adapter}", "{tmp}/out", "--model-dir", "{bert}"),
        ["OUT {tmp}/out already holds a minigpt_ptv2 checkpoint (sst2 / prefix)", "--overwrite"], cli=True,
        was="loss", setup=copy("ck", "out")),
    Row("export-hf with --model-dir OUT", cli("export-hf", "{full}", "{tmp}/base", "--model-dir", "{tmp}/base"),
        ["OUT {tmp}/base is --model-dir ({tmp}/base), which this command reads"], cli=True, was="loss",
        setup=copy("bert", "base")),
    Row("export-hf --overwrite with --model-dir OUT",
        cli("export-hf", "{full}", "{tmp}/base", "--model-dir", "{tmp}/base", "--overwrite"),
        ["is --model-dir", "with or without --overwrite"], cli=True, was="loss", setup=copy("bert", "base")),
    Row("export-hf into another model's folder", cli("export-hf", "{full}", "{tmp}/other", "--model-dir", "{bert}"),
        ["OUT {tmp}/other already holds a model (config.json, model.safetensors, vocab.txt)"], cli=True, was="loss",
        setup=copy("bert", "other")),
    Row("export-hf into a symlink to its --model-dir",
        cli("export-hf", "{full}", "{tmp}/link", "--model-dir", "{tmp}/base", "--overwrite"),
        ["OUT {tmp}/link is --model-dir ({tmp}/base)"], cli=True, was="loss",
        setup=both(copy("bert", "base"), link("link", "base"))),
    Row("export-hf into MODEL/../MODEL",
        cli("export-hf", "{full}", "{tmp}/base/../base", "--model-dir", "{tmp}/base", "--overwrite"),
        ["OUT {tmp}/base/../base is --model-dir"], cli=True, was="loss", setup=copy("bert", "base")),
    Row("export-hf into a folder inside its checkpoint", cli("export-hf", "{tmp}/full", "{tmp}/full/hf",
                                                             "--model-dir", "{bert}"),
        ["OUT {tmp}/full/hf lies inside CHECKPOINT ({tmp}/full)"], cli=True, was="silent", setup=copy("full", "full")),
    Row("export-peft into its checkpoint folder", cli("export-peft", "{tmp}/ck", "{tmp}/ck", "--model-dir", "{bert}"),
        ["OUT {tmp}/ck is CHECKPOINT"], cli=True, was="silent", setup=copy("ck", "ck")),
    Row("export-peft over an adapter", cli("export-peft", "{ck}", "{tmp}/ad", "--model-dir", "{bert}"),
        ["OUT {tmp}/ad already holds a PEFT adapter"], cli=True, was="silent", setup=copy("adapter", "ad")),
    Row("import-peft --overwrite into its adapter folder",
        cli("import-peft", "{tmp}/ad", "{tmp}/ad", "--model-dir", "{bert}", "--overwrite"),
        ["OUT {tmp}/ad is ADAPTER"], cli=True, was="silent", setup=copy("adapter", "ad")),
    Row("import-peft --overwrite into the folder holding its adapter",
        cli("import-peft", "{tmp}/p/ad", "{tmp}/p", "--model-dir", "{bert}", "--overwrite"),
        ["OUT {tmp}/p contains ADAPTER ({tmp}/p/ad)"], cli=True, was="silent", setup=copy("adapter", "p/ad")),
    Row("lessons --overwrite into the working directory", cli("lessons", "--out", ".", "--overwrite", cwd="work"),
        ["--out . is the working directory"], cli=True, was="silent",
        setup=lambda tmp: (tmp / "work").mkdir() or (tmp / "work" / "mine.txt").write_text("mine")),
    Row("figures into a folder holding a checkpoint", cli(*FIGURES, "--out", "{tmp}/ck"),
        ["--out {tmp}/ck already holds a minigpt_ptv2 checkpoint"], cli=True, was="silent", setup=copy("ck", "ck")),
    Row("figures --out a file, before training", cli(*FIGURES, "--out", "{tmp}/notes"), ["--out {tmp}/notes is a file"],
        cli=True, was="ugly", setup=lambda tmp: (tmp / "notes").write_text("mine")),
    Row("figures --out an unwritable place, before training", figures_unwritable, ["/figs", "cannot be written"],
        cli=True, was="ugly"),
    Row("figures' default folder holding files", cli(*FIGURES), ["--out figures already holds 1 entry (claim.png)"],
        cli=True, was="silent", setup=lambda tmp: (tmp / "figures").mkdir() or (tmp / "figures" / "claim.png")
        .write_bytes(b"\x89PNG mine")),
    Row("demo over an earlier demo's output (its default folder)", cli(*DEMO),
        ["--out runs/demo already holds 1 entry (sst2_prefix)", "--overwrite"], cli=True, was="loss",
        setup=lambda tmp: shutil.copytree(W["ck"], tmp / "runs" / "demo" / "sst2_prefix")),
    Row("train --out a broken symbolic link", cli(*TRAIN, "--out", "{tmp}/run"),
        ["--out {tmp}/run is a symbolic link to", "which does not exist"], cli=True, was="ugly",
        setup=link("run", "gone")),
    Row("export-peft OUT a broken symbolic link", cli("export-peft", "{ck}", "{tmp}/ad", "--model-dir", "{bert}"),
        ["OUT {tmp}/ad is a symbolic link to"], cli=True, was="ugly", setup=link("ad", "gone")),
    Row("train --out inside its data's sst2 folder", cli(*TRAIN[:-1], "{tmp}/data", "--out", "{tmp}/data/sst2/run"),
        ["--out {tmp}/data/sst2/run lies inside --data-dir ({tmp}/data/sst2)"], cli=True, was="silent",
        setup=lambda tmp: tiny_world.sst2(tmp / "data")),
    Row("train --out a folder holding its data", cli(*TRAIN[:-1], "{tmp}/data", "--out", "{tmp}/data", "--overwrite"),
        ["--out {tmp}/data contains --data-dir ({tmp}/data/sst2)"], cli=True,
        setup=lambda tmp: tiny_world.sst2(tmp / "data")),

    # --- the machine's faults: one line, the path, exit 1, nothing lost ---------------------------------
    Row("a checkpoint saved over another on a full disk", on_full_disk(lambda tmp: save_checkpoint(
        tiny_prefix(0.0), tmp / "ck", task="sst2", method="prefix", P=2)),
        ["could not save checkpoint.json in {tmp}/ck", "no space left on the device",
         "the checkpoint.json and weights already there are intact"], WriteError, was="escape", setup=copy("ck", "ck")),
    Row("import-peft --overwrite on a full disk", on_full_disk(cli("import-peft", "{adapter}", "{tmp}/out",
                                                                   "--model-dir", "{bert}", "--overwrite")),
        ["OUT {tmp}/out: no space left on the device", "it holds what it held before"], cli=True, code=1,
        was="escape", setup=copy("ck", "out")),
    Row("train's lock file on a full disk", lock_on_full_disk(cli(*TRAIN, "--out", "{tmp}/run")),
        ["{tmp}/run/checkpoint.lock: no space left on the device", "nothing else was written"], cli=True, code=1,
        was="escape"),
    Row("export-hf --overwrite past the file-size limit", file_size_limit(
        cli("export-hf", "{full}", "{tmp}/out", "--model-dir", "{bert}", "--overwrite")),
        ["OUT {tmp}/out: a file grew past the file-size limit (`ulimit -f`)", "it holds what it held before"],
        cli=True, code=1, was="escape", setup=copy("ck", "out")),
    Row("params into a closed pipe", into_closed_pipe(cli("params", "--config", "bert-tiny")),
        ["standard output was closed before everything was printed"], cli=True, code=1, was="escape"),

    # --- numbers at the door ---------------------------------------------------------------------------
    Row("train --seed -1", cli(*TRAIN, "--seed", "-1"), ["argument --seed", "from 0 to 4,294,967,295", "got -1"],
        cli=True, was="escape"),
    Row("train --seed 2**70", cli(*TRAIN, "--seed", str(2**70)), ["argument --seed", "got 1180591620717411303424"],
        cli=True, was="escape"),
    Row("figures --seed -1", cli(*FIGURES, "--seed", "-1"), ["argument --seed"], cli=True, was="escape"),
    Row("pretrain --seed -1", cli("pretrain", "--out", "{tmp}/dec", "--steps", "1", "--seed", "-1"),
        ["argument --seed", "from 0 to 4,294,967,295", "got -1"], cli=True, was="held"),  # was refused, after reading
    Row("trace --seed 10**20", cli("trace", "--seed", "1" + "0" * 20), ["argument --seed"], cli=True, was="escape"),
    Row("generate --temperature 1e-45", cli(*GENERATE, "--temperature", "1e-45"),
        ["argument --temperature", "in [0.001, 1000]", "greedy decoding in all but name"], cli=True, was="ugly"),
    Row("generate --temperature inf", cli(*GENERATE, "--temperature", "inf"),
        ["argument --temperature", "must be a finite number"], cli=True, was="silent"),
    Row("generate --temperature 1e9", cli(*GENERATE, "--temperature", "1e9"),
        ["argument --temperature", "uniform noise"], cli=True, was="silent"),
    Row("train --lr inf", cli(*TRAIN, "--lr", "inf"), ["argument --lr", "must be a finite number"], cli=True,
        was="ugly"),
    Row("train --diverge-factor nan", cli(*TRAIN, "--diverge-factor", "nan"), ["argument --diverge-factor", "finite"],
        cli=True, was="silent"),
    Row("train --diverge-factor 0.5", cli(*TRAIN, "--diverge-factor", "0.5"),
        ["argument --diverge-factor", "0 (never stop) or at least 1", "stopped as diverged"], cli=True, was="silent"),
    Row("trace --B 4096 --N 1024", cli("trace", "--model", "decoder", "--B", "4096", "--N", "1024"),
        ["--B 4096 --N 1024 --P 20", "GiB", "trace a smaller --B or --N"], cli=True, was="escape"),
    Row("demo --P 0", cli(*DEMO, "--P", "0"), ["argument --P: must be a positive integer, got 0"], cli=True,
        was="ugly"),
    Row("demo --lr -1", cli(*DEMO, "--lr", "-1"), ["argument --lr: must be a positive number, got -1"], cli=True,
        was="ugly"),
    Row("params --P 0", cli("params", "--P", "0"), ["argument --P: must be a positive integer, got 0"], cli=True),
    Row("api: set_seed(-1)", lambda tmp: set_seed(-1), ["seed must be an integer from 0 to 4,294,967,295", "-1"],
        was="escape"),
    Row("api: TrainConfig(lr=inf)", lambda tmp: TrainConfig(lr=float("inf")), ["lr must be positive, got",
                                                                               "lr=inf (and lr finite)"], was="silent"),
    Row("api: TrainConfig(diverge_factor=nan)", lambda tmp: TrainConfig(diverge_factor=float("nan")),
        ["diverge_factor must be 0 (off) or a finite number >= 1", "nan"], was="silent"),

    # --- messages that name the real cause -------------------------------------------------------------
    Row("fp16: the forward pass overflows at step 0", fp16_fit(lambda: tiny_prefix(7e4), 1),
        ["step 0", "float16's range", "--precision fp16", "the learning rate is not the cause", "bf16"],
        NonFiniteError, was="ugly"),
    Row("fp16: the loss scaler skips every step", fp16_fit(InfiniteGradient, 40),
        ["first 32 steps", "overflowed float16's range", "no update has been applied", "--precision bf16"],
        NonFiniteError, was="silent"),
    Row("import-peft onto a 64-position model: predict reads what fits", import_then_predict, works=True, was="ugly"),
    Row("import-peft of a prompt that fills the position table",
        cli("import-peft", "{tmp}/ad62", "{tmp}/out", "--model-dir", "{bert}"),
        ["{tmp}/ad62: its 62 virtual tokens take 62 of the model's 64 positions", "no room for [CLS], [SEP]"],
        cli=True, was="ugly", setup=long_adapter),
    Row("resume: the --data-dir it was started with is gone", cli("train", "--resume", "{tmp}/run"),
        ["--data-dir: the run in {tmp}/run was started with --data-dir {tmp}/moved, which is gone"], cli=True,
        was="ugly", setup=lambda tmp: resume_state(data_dir=str(tmp / "moved"))(tmp)),
    Row("resume: --text-file for an sst2 run", cli("train", "--resume", "{tmp}/run", "--text-file", "{tmp}/t.txt"),
        ["--text-file is for task lm", "the run in {tmp}/run is sst2"], cli=True, was="silent",
        setup=resume_state()),
    Row("resume: a state older than the checkpoint beside it", cli("train", "--resume", "{tmp}/run"),
        ["--resume {tmp}/run: its resume state belongs to an earlier run"], cli=True,
        setup=both(resume_state(), checkpoint_of_run("bbbbbbbbbbbbbbbb"))),
]


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_refused_or_works(row, tmp_path):
    row.setup(tmp_path)
    check(dataclasses.replace(row, names=[n.format(tmp=tmp_path) for n in row.names]), tmp_path)
