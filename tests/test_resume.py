"""`train --resume DIR`: a run killed after epoch 1 and resumed ends bit-identical to a run that
never stopped (CPU, fixed seed, dropout on so the random generators matter): every trainable
tensor, the history, the kept checkpoint; and a run whose generators are not restored does not. Also: the best epoch is kept, not the last; a finished
run leaves only the checkpoint; a diverging run stops loudly and keeps the better checkpoint."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from minigpt_ptv2.cli import main
from minigpt_ptv2.catalog import RECIPES
from minigpt_ptv2.training import state as run_state
from minigpt_ptv2.training.checkpoint import read_checkpoint
from minigpt_ptv2.training.divergence import Diverged
from minigpt_ptv2.training.run import saved_arguments, train_task

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny batches: see conftest.py
KILLED = 77

# 24 sentences in batches of 8: 3 steps an epoch, 2 epochs, 8 dev sentences
ARGS = dict(task="sst2", method="prefix", P=2, epochs=2, lr=0.05, batch_size=8, max_train=24, max_dev=8,
            max_length=12, seed=0)


@pytest.fixture(scope="module", autouse=True)
def one_backbone_load(minilm_dir):
    """Every run here builds its model from one MiniLM loaded once (a copy each time): the same
    weights, without reading them again for every run."""
    from minigpt_ptv2 import BertEncoder
    from minigpt_ptv2.training import run as training_run
    encoder = BertEncoder.from_pretrained(minilm_dir)
    real = training_run.build_task_model

    def build(task, method, P, model_dir=None, **kw):
        return real(task, method, P, encoder=copy.deepcopy(encoder), **kw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training_run, "build_task_model", build)
        yield


@pytest.fixture(scope="module")
def data():
    from minigpt_ptv2.data import data_dir
    try:
        return str(data_dir())
    except FileNotFoundError as e:
        pytest.skip(str(e))


def run(out, data, minilm_dir, **kw):
    return train_task(**{**ARGS, **kw}, out_dir=out, data_dir=data, model_dir=minilm_dir, progress=False)


def trainable(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def timeless(history) -> list:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def killed_after_epoch(n: int, work) -> None:
    """Run work() in a forked child that dies (os._exit: no `finally`, no clean-up, the lock file
    left behind, as with SIGKILL) right after epoch n's resume state is on disk."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            real = run_state.save

            def save_then_die(run_dir, meta, tensors):
                real(run_dir, meta, tensors)
                if meta["epochs_done"] == n:
                    os._exit(KILLED)
            run_state.save = save_then_die
            work()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the child run did not finish")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(done[1]) == KILLED


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data, minilm_dir):
    out = tmp_path_factory.mktemp("resume") / "full"
    summary, model = run(out, data, minilm_dir)
    return summary, trainable(model), read_checkpoint(out)


def test_a_run_killed_after_epoch_1_and_resumed_is_bit_identical(uninterrupted, tmp_path, data, minilm_dir,
                                                                 monkeypatch):
    full, full_tensors, (full_meta, full_ckpt) = uninterrupted
    killed_after_epoch(1, lambda: run(tmp_path / "cut", data, minilm_dir))
    assert run_state.load_meta(tmp_path / "cut")["epochs_done"] == 1
    assert (tmp_path / "cut" / "checkpoint.lock").exists()  # left by the kill; nobody holds it
    assert saved_arguments(tmp_path / "cut") == {**ARGS, "method_kwargs": {}, "dropout": True,
                                                 "diverge_factor": 3.0, "grad_checkpoint": False,
                                                 "precision": "fp32", "warmup": RECIPES["prefix"].warmup,
                                                 "init": RECIPES["prefix"].init, "holdout": None,
                                                 "batches": "grouped", "model_dir": str(Path(minilm_dir).resolve()),
                                                 "data_dir": str(Path(data).resolve())}
    shutil.copytree(tmp_path / "cut", tmp_path / "control")
    summary, model = run(tmp_path / "cut", data, minilm_dir, resume=True)
    assert summary["resumed_after_epoch"] == 1
    tensors = trainable(model)
    assert tensors.keys() == full_tensors.keys() and len(tensors) == 3
    for name in tensors:
        assert torch.equal(tensors[name], full_tensors[name]), name  # bit for bit
    assert timeless(summary["history"]) == timeless(full["history"])
    meta, ckpt = read_checkpoint(tmp_path / "cut")
    assert meta["kept"] == full_meta["kept"] == summary["kept"]
    assert all(torch.equal(ckpt[n], full_ckpt[n]) for n in full_ckpt)
    # a finished run leaves the plain pair: no resume state, no lock, no other weights name
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]

    # The control: restore everything but the random generators, and dropout draws other masks.
    monkeypatch.setattr(run_state, "_set_rng", lambda plain, tensors: None)
    _, model = run(tmp_path / "control", data, minilm_dir, resume=True)
    assert not torch.equal(trainable(model)["encoder.prompt.embedding.weight"],
                           full_tensors["encoder.prompt.embedding.weight"])


def test_the_command_line_resumes_with_only_the_folder(uninterrupted, tmp_path, data, minilm_dir, monkeypatch,
                                                       capsys):
    full, _, _ = uninterrupted
    out = str(tmp_path / "cut")
    argv = ["train", "sst2", "prefix", "--P", "2", "--epochs", "2", "--lr", "0.05", "--batch-size", "8",
            "--max-train", "24", "--max-dev", "8", "--max-length", "12", "--positions", "real",
            "--data-dir", data, "--model-dir", str(minilm_dir), "--no-progress", "--out", out]
    real = run_state.save

    def save_then_stop(run_dir, meta, tensors):
        real(run_dir, meta, tensors)
        raise KeyboardInterrupt
    monkeypatch.setattr(run_state, "save", save_then_stop)
    assert main(argv) == 130
    assert f"interrupted: `train --resume {out}` continues after epoch 1" in capsys.readouterr().err
    monkeypatch.undo()
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "cut").rglob("*"))
    assert main(["train", "--resume", out, "--lr", "0.1"]) == 2  # another run: refused, nothing touched
    assert "--lr: the run in" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "cut").rglob("*")) == before
    import shutil
    shutil.copytree(out, tmp_path / "cut-recompute")  # the same interrupted run, twice
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = main(["train", "--resume", out, "--data-dir", data, "--model-dir", str(minilm_dir), "--json"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(printed.getvalue())
    assert timeless(summary["history"]) == timeless(full["history"])
    assert summary["kept"] == full["kept"] and summary["resumed_after_epoch"] == 1
    # A resume may turn on gradient checkpointing (less memory, the same numbers): the same run's end.
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = main(["train", "--resume", str(tmp_path / "cut-recompute"), "--grad-checkpoint", "--data-dir", data,
                     "--model-dir", str(minilm_dir), "--json"])
    assert code == 0, capsys.readouterr().err
    assert timeless(json.loads(printed.getvalue())["history"]) == timeless(full["history"])
    _, a = read_checkpoint(out)
    _, b = read_checkpoint(tmp_path / "cut-recompute")
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_the_best_epoch_is_kept_not_the_last(tmp_path, data, minilm_dir, monkeypatch):
    """Make epoch 2's dev accuracy worse than epoch 1's: the checkpoint keeps epoch 1's weights."""
    from minigpt_ptv2.training import run as training_run
    real = training_run.evaluate
    scores = iter([0.75, 0.5])

    def evaluate(*args, **kw):
        return {**real(*args, **kw), "accuracy": next(scores)}
    monkeypatch.setattr(training_run, "evaluate", evaluate)
    saved = []
    real_state = run_state.save
    monkeypatch.setattr(run_state, "save", lambda d, meta, t: saved.append(copy.deepcopy(t)) or real_state(d, meta, t))
    summary, model = run(tmp_path / "out", data, minilm_dir)
    assert summary["kept"] == {"epoch": 1, "of_epochs": 2, "metric": "accuracy", "value": 0.75}
    meta, ckpt = read_checkpoint(tmp_path / "out")
    assert meta["kept"] == summary["kept"]
    epoch1 = {n[len("model."):]: t for n, t in saved[0].items() if n.startswith("model.")}
    assert all(torch.equal(ckpt[n], epoch1[n]) for n in ckpt)  # epoch 1's weights ...
    assert not torch.equal(ckpt["encoder.prompt.embedding.weight"],  # ... not the last epoch's
                           model.encoder.prompt.embedding.weight.detach())


def test_a_diverging_run_stops_loudly_and_keeps_the_better_checkpoint(tmp_path, data, minilm_dir):
    out = tmp_path / "out"
    # lr 10: epoch 1 (3 steps) is saved before the 10-step window fills; epoch 2 then blows up
    kw = dict(lr=10.0, epochs=8, max_train=48, batch_size=8)
    with pytest.raises(Diverged) as info:
        run(out, data, minilm_dir, **kw)
    message = str(info.value)
    assert "training diverged at epoch 2, step 3: the mean loss of the last 10 steps is" in message, message
    assert f"The checkpoint in {out} is intact: epoch 1, dev accuracy" in message
    assert "Try a lower learning rate (now 10, e.g. --lr 1)" in message
    meta, _ = read_checkpoint(out)
    assert meta["kept"]["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]  # no resume/
