"""Mixed precision in the training loop (TrainConfig.precision, `train --precision`).

  - bf16 and fp16 autocast on CPU: a tiny model trained for a few epochs reaches mean losses
    close to fp32's; the prompt and head stay float32; autocast really ran, in training (the
    attention's queries are computed in the low precision) and in the per-epoch evaluation.
  - fp16 uses a GradScaler: its scale is in the resume state, a step whose gradients overflow
    is skipped (no update, the schedule does not advance, the scale halves) without being
    reported as a non-finite loss or tripping the scheduler's order warning; and a run resumed
    under fp16 ends bit-identical to one that never stopped, loss scale included.
  - The command line: `--precision fp16` trains and is recorded; a resume with another precision
    is refused. CUDA: the same loop on a GPU (skipped without one).
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from minigpt_ptv2 import BertEncoder, ShapeTrace, catalog, preset
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.prompts import make_method
from minigpt_ptv2.training import Head, TaskModel, TrainConfig, fit, set_trainable
from minigpt_ptv2.training import precision as amp
from minigpt_ptv2.training import state as run_state
from tolerances import AUTOCAST_TRAINED_REL

CFG = preset("bert-tiny")  # D=24, L=3, H=4; dropout 0.1 (on: the generators matter for resume)
B, N, P = 4, 6, 4
LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.py


def tiny_model(method: str = "prefix", device="cpu") -> TaskModel:
    torch.manual_seed(0)
    model = TaskModel(BertEncoder(CFG).attach(make_method(method, CFG, P)),
                      {"sst2": Head(CFG.hidden_size, 2, "sequence")})
    set_trainable(model, method)
    return model.to(device)


def batches(n: int = 4, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, CFG.vocab_size, (B, N), generator=g)  # [B, N]
        mask = torch.ones(B, N, dtype=torch.long)
        mask[1, 4:] = 0  # one padded row
        out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (B,), generator=g)})
    return out


def train(precision: str, method: str = "prefix", epochs: int = 3, device="cpu", **kw):
    model = tiny_model(method, device)
    cfg = TrainConfig(epochs=epochs, lr=0.05, progress=False, precision=precision, device=device)
    return model, fit(model, batches(), cfg, task="sst2", **kw)


@contextlib.contextmanager
def optimizer_steps():
    """The lr of every optimizer.step() actually taken."""
    lrs = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kw: lrs.append(opt.param_groups[0]["lr"]))
    try:
        yield lrs
    finally:
        handle.remove()


def test_the_names_are_the_catalogs():
    assert tuple(amp.DTYPES) == catalog.PRECISIONS
    with pytest.raises(InputError, match="precision must be one of"):
        TrainConfig(precision="fp8")


@pytest.mark.parametrize("method", ["soft", "deep", "prefix"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_training_stays_close_to_fp32_and_keeps_parameters_fp32(precision, method):
    _, reference = train("fp32", method)
    seen = []

    def evaluate(m):  # the per-epoch evaluation runs under the same autocast
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return {}
    with ShapeTrace(keep=("layer0.attn.q",)) as trace:
        model, history = train(precision, method, evaluate=evaluate)
    losses, ref = [h["train_loss"] for h in history], [h["train_loss"] for h in reference]
    assert losses[-1] < losses[0]
    for got, want in zip(losses, ref):  # each epoch's mean loss
        assert got == pytest.approx(want, rel=AUTOCAST_TRAINED_REL), (losses, ref)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained), "the prompt and head must stay fp32"
    assert trace.tensors["layer0.attn.q"].dtype == LOW[precision]  # autocast really ran
    assert seen == [(True, LOW[precision])] * 3


def test_fp32_runs_without_autocast():
    with ShapeTrace(keep=("layer0.attn.q",)) as trace:
        train("fp32", epochs=1)
    assert trace.tensors["layer0.attn.q"].dtype == torch.float32


def overflow_at(model, steps: set):
    """Make the prompt's gradient inf at the given (0-based, counted over the run) backward passes."""
    count = [0]

    def hook(grad):
        count[0] += 1
        return torch.full_like(grad, float("inf")) if count[0] - 1 in steps else grad
    return model.encoder.prompt.embedding.weight.register_hook(hook)


def test_fp16_skips_an_overflowing_step_without_failing_or_moving_the_schedule():
    model = tiny_model()
    overflow_at(model, {2})
    cfg = TrainConfig(epochs=2, lr=0.05, progress=False, precision="fp16")
    snaps = []
    with optimizer_steps() as lrs, warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        history = fit(model, batches(), cfg, task="sst2", on_epoch=lambda rec, snap: snaps.append(snap()))
    with optimizer_steps() as plain_lrs:
        train("fp16", epochs=2)
    assert len(plain_lrs) == 8 and len(lrs) == 7  # 2 epochs of 4 batches, one step skipped
    assert lrs == plain_lrs[:7]  # the skipped step did not advance the schedule
    assert all(h["train_loss"] == h["train_loss"] for h in history)  # finite, reported as usual
    scaler = snaps[-1][0]["scaler"]
    assert scaler["scale"] == 65536.0 / 2 and scaler["_growth_tracker"] == 5  # halved, then 5 good steps


def test_bf16_and_fp32_keep_no_scaler():
    snaps = []
    train("bf16", epochs=1, on_epoch=lambda rec, snap: snaps.append(snap()))
    assert snaps[0][0]["scaler"] is None


class Stop(Exception):
    pass


def test_an_fp16_run_resumed_after_epoch_1_is_bit_identical(tmp_path):
    def run(start=None, stop_after=None, overflow=True):
        model = tiny_model()
        if overflow:
            overflow_at(model, {1} if start is None else set())  # epoch 1 halves the scale
        cfg = TrainConfig(epochs=3, lr=0.05, progress=False, precision="fp16")
        kept = {}

        def on_epoch(record, snapshot):
            kept["state"] = snapshot({"args": {}})  # (train_task keeps its arguments there)
            if record["epoch"] == stop_after:
                run_state.save(tmp_path, *kept["state"])
                raise Stop
        try:
            history = fit(model, batches(), cfg, task="sst2", on_epoch=on_epoch, start=start)
        except Stop:
            return None
        return model, history, kept["state"]

    full_model, full_history, (full_meta, _) = run()
    assert run(stop_after=1) is None
    start = run_state.load(tmp_path)
    assert start[0]["scaler"]["scale"] == 32768.0
    model, history, (meta, _) = run(start=start)
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in full_history]
    full = dict(full_model.named_parameters())
    assert all(torch.equal(p, full[n]) for n, p in model.named_parameters() if p.requires_grad)
    assert meta["scaler"] == full_meta["scaler"]
    # the control: a resume whose scaler starts afresh ends with another loss scale
    start[0]["scaler"] = torch.amp.GradScaler("cpu").state_dict()
    _, _, (control, _) = run(start=start, overflow=False)
    assert control["scaler"] != full_meta["scaler"]
    with pytest.raises(InputError, match="fp16 loss scaler"):  # a bf16 run cannot continue it
        model = tiny_model()
        fit(model, batches(), TrainConfig(epochs=3, lr=0.05, progress=False, precision="bf16"), task="sst2",
            start=run_state.load(tmp_path))


def test_train_precision_on_the_command_line(minilm_dir, tmp_path, monkeypatch, capsys):
    from minigpt_ptv2.cli import main
    from minigpt_ptv2.data import data_dir
    from minigpt_ptv2.training.checkpoint import read_meta
    try:
        data = str(data_dir())
    except FileNotFoundError as e:
        pytest.skip(str(e))
    common = ["--P", "2", "--max-train", "8", "--max-dev", "8", "--max-length", "16", "--batch-size", "8",
              "--no-progress", "--data-dir", data, "--model-dir", str(minilm_dir)]
    done = tmp_path / "fp16"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["train", "sst2", "prefix", "--epochs", "1", "--precision", "fp16", "--json",
                     "--out", str(done), *common]) == 0
    assert json.loads(printed.getvalue())["history"][0]["train_loss"] > 0
    assert read_meta(done)["train"]["precision"] == "fp16"

    cut = tmp_path / "cut"  # a bf16 run interrupted after epoch 1 of 2 ...
    real = run_state.save

    def save_then_stop(run_dir, meta, tensors):
        real(run_dir, meta, tensors)
        raise KeyboardInterrupt
    monkeypatch.setattr(run_state, "save", save_then_stop)
    assert main(["train", "sst2", "prefix", "--epochs", "2", "--precision", "bf16", "--out", str(cut), *common]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["train", "--resume", str(cut), "--precision", "fp32"]) == 2  # ... resumes in bf16 only
    assert "--precision: the run in" in capsys.readouterr().err
    from minigpt_ptv2.training.run import saved_arguments
    assert saved_arguments(cut)["precision"] == "bf16" and saved_arguments(cut)["grad_checkpoint"] is False


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_training_on_cuda(precision):
    _, reference = train("fp32", device="cuda")
    with ShapeTrace(keep=("layer0.attn.q",)) as trace:
        model, history = train(precision, device="cuda")
    for got, want in zip(history, reference):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=AUTOCAST_TRAINED_REL)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert trace.tensors["layer0.attn.q"].dtype == LOW[precision]
