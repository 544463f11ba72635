"""The training loop's promises, each checked on a tiny random encoder (bert-tiny, D=24, L=3):
the exact learning rate of every step, gradient clipping as the optimizer sees it, the progress
bar's loss and throughput, several task heads over one prompt, the non-finite-loss diagnosis,
the divergence stop, and why 2 processes match 1 exactly for sentence tasks but only closely for token tasks."""
from __future__ import annotations

import contextlib
import copy
import math
import re
import sys
from fractions import Fraction as F

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from minigpt_ptv2 import BertEncoder
from minigpt_ptv2.models.presets import preset
from minigpt_ptv2.prompts import make_method
from minigpt_ptv2.training import Head, TaskModel, TrainConfig, fit, set_trainable, task_loss
from minigpt_ptv2.training.run import disable_dropout
from minigpt_ptv2.training.trainer import Alternate, warmup_decay
from tolerances import FP32_REL

CFG = preset("bert-tiny")  # V=120, D=24, L=3, H=4
B, N = 4, 6


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.py


def tiny_model(heads=("sst2",), P=4) -> TaskModel:
    """bert-tiny + a K/V prefix + heads; backbone frozen, dropout off (gradients are deterministic)."""
    kinds = {"sst2": ("sequence", 2), "conll": ("token", 9)}
    encoder = BertEncoder(CFG).attach(make_method("prefix", CFG, P))
    model = TaskModel(encoder, {t: Head(CFG.hidden_size, kinds[t][1], kinds[t][0]) for t in heads})
    set_trainable(model, "prefix")
    disable_dropout(model)
    return model


def _ids_and_mask(g):
    ids = torch.randint(1, CFG.vocab_size, (B, N), generator=g)  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)
    mask[1, 4:] = 0  # one padded row
    return ids, mask


def sentence_batches(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids, mask = _ids_and_mask(g)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (B,), generator=g)})
    return out


def token_batches(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids, mask = _ids_and_mask(g)
        labels = torch.randint(0, 9, (B, N), generator=g).masked_fill(mask == 0, -100)  # [B, N]
        labels[:, 0] = -100  # [CLS]
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


@contextlib.contextmanager
def optimizer_steps():
    """Record, at every optimizer.step(), the lr and the gradients the optimizer is about to use."""
    seen = []

    def hook(opt, args, kwargs):
        params = [p for group in opt.param_groups for p in group["params"]]
        seen.append({"lr": opt.param_groups[0]["lr"],
                     "grads": [None if p.grad is None else p.grad.detach().clone() for p in params]})
    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def global_norm(grads) -> float:
    return torch.cat([g.flatten() for g in grads if g is not None]).norm().item()


# --- 1. warm-up then linear decay, step by step -------------------------------------------------

def _scheduled_lrs(total: int, ratio: float, peak: float = 1.0) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = warmup_decay(opt, total, ratio)
    lrs = []
    for _ in range(total + 1):  # one past the last step: where the decay reaches 0
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("total, ratio, expected", [
    # W = int(10 * 0.2) = 2 warm-up steps up to the peak, then 8 equal steps down, 0 after the last
    (10, 0.2, [F(1, 2), 1, F(8, 9), F(7, 9), F(6, 9), F(5, 9), F(4, 9), F(3, 9), F(2, 9), F(1, 9), 0]),
    # W = int(7 * 0.5) = 3
    (7, 0.5, [F(1, 3), F(2, 3), 1, F(4, 5), F(3, 5), F(2, 5), F(1, 5), 0]),
    # no warm-up (W = 1): the peak first, then straight down
    (4, 0.0, [1, F(3, 4), F(2, 4), F(1, 4), 0]),
    # a single step runs at the peak
    (1, 0.1, [1, 0]),
])
def test_warmup_then_linear_decay_exact_lr_at_every_step(total, ratio, expected):
    lrs = _scheduled_lrs(total, ratio, peak=0.3)
    # Python floats: the schedule's few float64 operations, against exact fractions
    assert lrs == pytest.approx([0.3 * float(e) for e in expected], rel=1e-12, abs=1e-15)
    assert lrs[0] > 0 and lrs[total - 1] > 0  # neither the first nor the last step is wasted
    assert lrs.count(max(lrs)) == 1  # the peak is used once, no plateau


def test_warmup_decay_refuses_zero_steps():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="total_steps must be positive, got 0"):
        warmup_decay(opt, 0, 0.1)


def test_fit_steps_the_optimizer_with_the_scheduled_lr():
    model = tiny_model()
    cfg = TrainConfig(epochs=2, lr=0.05, warmup_ratio=0.34, progress=False)  # T = 6, W = 2
    with optimizer_steps() as seen:
        fit(model, sentence_batches(3), cfg, task="sst2")
    expected = [F(1, 2), 1, F(4, 5), F(3, 5), F(2, 5), F(1, 5)]
    assert [s["lr"] for s in seen] == pytest.approx([0.05 * float(e) for e in expected], rel=1e-12)  # float64


# --- 2. gradient clipping ---------------------------------------------------------------------

def _raw_gradients(model, batch) -> list[torch.Tensor]:
    """The unclipped gradients of one batch, in the optimizer's parameter order."""
    model = copy.deepcopy(model).train()
    loss = task_loss(model(batch["input_ids"], batch["attention_mask"], task="sst2"), batch["labels"])
    loss.backward()
    return [p.grad for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("clip_factor", [0.1, 0.0, 10.0], ids=["clipped", "off", "below-the-limit"])
def test_fit_clips_the_global_gradient_norm_the_optimizer_sees(clip_factor):
    model = tiny_model()
    batch = sentence_batches(1)[0]
    raw = _raw_gradients(model, batch)
    raw_norm = global_norm(raw)
    assert raw_norm > 0
    clip = clip_factor * raw_norm
    with optimizer_steps() as seen:
        fit(model, [batch], TrainConfig(epochs=1, clip=clip, progress=False), task="sst2")
    grads = seen[0]["grads"]
    assert [g.shape for g in grads] == [g.shape for g in raw]
    # clipping scales all gradients by one factor, min(1, clip / norm): the direction is kept
    scale = clip / raw_norm if 0 < clip < raw_norm else 1.0
    assert global_norm(grads) == pytest.approx(raw_norm * scale, rel=FP32_REL)
    for g, r in zip(grads, raw):  # atol: entries that are (near) 0 in both
        torch.testing.assert_close(g, r * scale, rtol=FP32_REL, atol=1e-8)


def test_clip_zero_passes_a_huge_gradient_through_unchanged():
    model = tiny_model()
    with torch.no_grad():
        model.heads["sst2"].classifier.weight.mul_(1e4)  # logits ~1e4: a huge gradient on the prompt
    batch = sentence_batches(1)[0]
    raw_norm = global_norm(_raw_gradients(model, batch))
    assert raw_norm > 100
    with optimizer_steps() as seen:
        fit(copy.deepcopy(model), [batch], TrainConfig(epochs=1, clip=0, progress=False), task="sst2")
    assert global_norm(seen[0]["grads"]) == pytest.approx(raw_norm, rel=FP32_REL)
    with optimizer_steps() as seen:
        fit(model, [batch], TrainConfig(epochs=1, clip=1.0, progress=False), task="sst2")
    assert global_norm(seen[0]["grads"]) == pytest.approx(1.0, rel=FP32_REL)


def test_negative_clip_is_refused():
    with pytest.raises(ValueError, match="clip .* must be >= 0 .* got -1"):
        TrainConfig(clip=-1)


# --- 3. the progress bar ----------------------------------------------------------------------

def test_progress_bar_shows_running_loss_and_examples_per_second(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars draw only on a terminal
    history = fit(tiny_model(), sentence_batches(3), TrainConfig(epochs=1, progress=True), task="sst2")
    out, err = capsys.readouterr()
    # the bar (stderr), after every step: "epoch 1/1: ... 2/3 [..., ex_s=83.7, loss=0.6146]"
    shown = re.findall(r"epoch 1/1: .*?, ex_s=(\d+\.\d), loss=(\d+\.\d{4})\]", err)
    assert len(shown) >= 3, err
    assert all(float(ex_s) > 0 for ex_s, _ in shown)
    assert shown[-1][1] == f"{history[0]['train_loss']:.4f}"  # the running mean ends at the epoch's loss
    # the epoch line (stdout) once the bar is gone
    assert re.fullmatch(r"epoch=1, train_loss=\d+\.\d{4}, seconds=\d+\.\d{4}, examples=12\n", out), out


@pytest.mark.parametrize("progress, is_main", [(False, True), (True, False)])
def test_no_progress_or_not_rank_0_prints_nothing(capsys, progress, is_main):
    fit(tiny_model(), sentence_batches(2), TrainConfig(epochs=1, progress=progress), task="sst2",
        is_main=is_main)
    assert capsys.readouterr() == ("", "")


# --- 4. several task heads over one frozen backbone and one prompt ------------------------------

def test_each_task_gets_its_own_output_shape():
    model = tiny_model(("sst2", "conll")).eval()
    ids, mask = _ids_and_mask(torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model(ids, mask, task="sst2").shape == (B, 2)  # [B, C]: pooled [CLS]
        assert model(ids, mask, task="conll").shape == (B, N, 9)  # [B, N, C]: every real token


def test_unknown_or_missing_task_is_a_clear_error():
    model = tiny_model(("sst2", "conll"))
    ids, mask = _ids_and_mask(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"unknown task 'pos'; this model has heads \['sst2', 'conll'\]"):
        model(ids, mask, task="pos")
    with pytest.raises(ValueError, match=r"several heads \['sst2', 'conll'\]: pass task=<name>"):
        model(ids, mask)
    batch = {**sentence_batches(1)[0], "task": "pos"}
    with pytest.raises(ValueError, match="unknown task 'pos'"):
        fit(model, [batch], TrainConfig(epochs=1, progress=False))


def test_add_head_checks_name_type_and_width():
    model = tiny_model(("sst2",))
    assert model.add_head("conll", Head(CFG.hidden_size, 9, "token")) is model
    assert list(model.heads) == ["sst2", "conll"]
    with pytest.raises(ValueError, match="already has a head named 'sst2'"):
        model.add_head("sst2", Head(CFG.hidden_size, 2, "sequence"))
    with pytest.raises(ValueError, match="head 'x' reads 32 features, the encoder's hidden size D is 24"):
        model.add_head("x", Head(32, 2, "sequence"))
    with pytest.raises(TypeError, match="head 'y' must be a Head, got Linear"):
        model.add_head("y", torch.nn.Linear(24, 2))
    with pytest.raises(ValueError, match="at least one head"):
        TaskModel(model.encoder, {})


def test_alternate_interleaves_tasks_until_every_loader_runs_out():
    mixed = Alternate({"a": [{"i": 0}, {"i": 1}, {"i": 2}], "b": [{"i": 0}]})
    assert len(mixed) == 4
    assert [(b["task"], b["i"]) for b in mixed] == [("a", 0), ("b", 0), ("a", 1), ("a", 2)]
    with pytest.raises(ValueError, match="at least one task loader"):
        Alternate({})


def test_two_heads_train_in_turn_over_one_shared_prompt():
    model = tiny_model(("sst2", "conll"))
    names = [n for n, p in model.named_parameters() if p.requires_grad]  # the optimizer's order
    assert {".".join(n.split(".")[:2]) for n in names} == {"encoder.prompt", "heads.sst2", "heads.conll"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mixed = Alternate({"sst2": sentence_batches(2), "conll": token_batches(2, seed=1)})
    with optimizer_steps() as seen:
        history = fit(model, mixed, TrainConfig(epochs=1, lr=1e-2, progress=False))
    assert len(seen) == 4 and history[0]["examples"] == 4 * B
    for step, task in enumerate(["sst2", "conll", "sst2", "conll"]):
        got_grad = {n.split(".")[1] for n, g in zip(names, seen[step]["grads"])
                    if g is not None and n.startswith("heads.")}
        assert got_grad == {task}, (step, got_grad)  # only this batch's head
        assert all(g is not None for n, g in zip(names, seen[step]["grads"]) if n.startswith("encoder.prompt."))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(names)  # both heads and the prompt moved, nothing of the frozen backbone did


# --- 5. a loss that is not finite, or far above its start, stops the run before the bad step ----

def _broken(*names, value=float("nan")) -> TaskModel:
    """A tiny model with every entry of the named tensors set to `value`."""
    model = tiny_model()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in names:
            params[name].fill_(value)
    return model


def _nan_model() -> TaskModel:
    return _broken("heads.sst2.classifier.bias")


@pytest.mark.parametrize("names, says", [
    # at step 0 nothing has been updated yet: the starting values were broken, not the lr
    (["heads.sst2.classifier.bias"], "the head held non-finite values before any update "
                                     "(heads.sst2.classifier.bias): the starting values were broken"),
    # the prompt checks itself as it runs (prompts/base.py); fit adds where
    (["encoder.prompt.embedding.weight"], "'embedding.weight' holds 576 NaN values"),
    (["encoder.layers.1.ffn_in.weight"], "the frozen backbone tensor encoder.layers.1.ffn_in.weight holds NaN"),
    # the input embeddings are named first, whatever else is broken too
    (["encoder.layers.1.ffn_in.weight", "encoder.embeddings.word_embeddings.weight"],
     "the frozen backbone tensor encoder.embeddings.word_embeddings.weight (and 1 more) holds NaN"),
], ids=["head", "prompt", "frozen-layer", "embeddings-first"])
def test_non_finite_loss_names_the_culprit_before_blaming_the_learning_rate(names, says):
    model = _broken(*names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(FloatingPointError) as info:
        fit(model, sentence_batches(2), TrainConfig(epochs=1, lr=0.01, progress=False), task="sst2")
    message = str(info.value)
    assert message.startswith(("loss became nan at epoch 1, step 0: ", "at epoch 1, step 0: ")), message
    assert says in message, message
    frozen = any(not dict(model.named_parameters())[n].requires_grad for n in names)
    assert ("learning rate" in message) and ("not the cause" in message or not frozen), message
    assert all(torch.equal(p.nan_to_num(), before[n].nan_to_num()) for n, p in model.named_parameters())


def test_finite_weights_with_overflowing_logits_point_at_the_learning_rate_only_after_an_update():
    from minigpt_ptv2.training.divergence import non_finite_loss
    model = tiny_model()
    with torch.no_grad():  # finite, but the logits overflow float32 (+-inf), so the loss is nan
        model.heads["sst2"].classifier.weight[0].fill_(3e38)
        model.heads["sst2"].classifier.weight[1].fill_(-3e38)
    with pytest.raises(FloatingPointError, match="every weight is finite and no update has been applied yet, so the "
                                                 "inputs overflowed the model .* the learning rate is not the cause"):
        fit(model, sentence_batches(1), TrainConfig(epochs=1, lr=0.01, progress=False), task="sst2")
    # after updates (a later step, or a resumed run), the learning rate is the likely cause
    assert "every weight is finite, so the logits overflowed; lower the learning rate (now 0.01)" in \
        str(non_finite_loss(model, float("nan"), "epoch 2, step 3", 0.01, updated=True))


def test_cli_reports_a_non_finite_loss_in_one_line(monkeypatch, capsys):
    from minigpt_ptv2.cli import main
    from minigpt_ptv2.training import run as training_run

    def train_task(*args, **kwargs):  # the real loop on a model whose loss is NaN
        fit(_nan_model(), sentence_batches(1), TrainConfig(epochs=1, lr=0.01, progress=False), task="sst2")
    monkeypatch.setattr(training_run, "train_task", train_task)  # the train command imports it when it runs
    monkeypatch.delenv("MINIGPT_PTV2_TRACEBACK", raising=False)
    assert main(["train", "sst2", "prefix", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: loss became nan at epoch 1, step 0: the head held non-finite values") and \
        len(err.splitlines()) == 1, err


def test_loss_watch_stops_a_sustained_climb_not_a_single_batch():
    from minigpt_ptv2.training.divergence import Diverged, LossWatch
    ln2 = math.log(2)

    def feed(watch, relative):  # losses in units of ln C (C = 2)
        for i, x in enumerate(relative):
            watch.check(x * ln2, 2, f"step {i}")

    feed(LossWatch(3.0, 3), [1, 1, 1, 3, 3, 3])  # exactly 3 x the start: not above it
    feed(LossWatch(3.0, 3), [1, 1, 1, 7, 1, 1])  # one bad batch: the mean of 3 steps is exactly 3
    with pytest.raises(Diverged, match="at step 6: the mean loss of the last 3 steps is 2.149"):
        feed(LossWatch(3.0, 3), [1, 1, 1, 3, 3, 3, 3.3])
    with pytest.raises(Diverged, match="at step 2: .* starting loss 0.6931 .*ln C = 0.6931"):
        feed(LossWatch(3.0, 3), [10, 20, 30])  # blown up from the first steps: ln C is the start
    with pytest.raises(Diverged, match="at step 5: .* starting loss 0.1386 "):
        feed(LossWatch(3.0, 3), [0.2, 0.2, 0.2, 0.7, 0.7, 0.7])  # started trained: its own start counts
    feed(LossWatch(0.0, 3), [1, 50, 100, 200])  # factor 0: never
    half = LossWatch(3.0, 3)
    feed(half, [1, 1, 1, 3])
    with pytest.raises(Diverged, match="at step 1:"):  # the state carries on exactly (a resume)
        feed(LossWatch(3.0, 3, half.state()), [3, 3.3])


def test_fit_stops_a_diverging_run_before_its_bad_step_is_applied():
    from minigpt_ptv2.training.divergence import Diverged
    cfg = TrainConfig(epochs=6, lr=10.0, progress=False)  # bert-tiny at lr 10: the loss climbs to ~40
    with optimizer_steps() as seen, pytest.raises(Diverged, match=r"training diverged at epoch 2, step 1: "
                                                                  r"the mean loss of the last 10 steps is \d+"):
        fit(tiny_model(), sentence_batches(8), cfg, task="sst2")
    assert len(seen) == 9  # steps 0..7 of epoch 1 and step 0 of epoch 2; not the one that diverged
    history = fit(tiny_model(), sentence_batches(8), TrainConfig(epochs=6, lr=0.1, progress=False), task="sst2")
    assert len(history) == 6  # lr 0.1 wobbles (0.76, 0.92, 0.56...) but is never stopped


def test_train_config_checks_the_divergence_settings():
    for bad in (-1, 0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=rf"diverge_factor must be 0 \(off\) or a finite number >= 1 .* got {bad}"):
            TrainConfig(diverge_factor=bad)
    with pytest.raises(ValueError, match="diverge_window positive, got 3.0 and 0"):
        TrainConfig(diverge_window=0)


# --- 6. what DDP averages: exact for sentence tasks, close for token tasks -----------------------

def _gradient(model, batches, task, weights=None) -> torch.Tensor:
    """Flat gradient of sum_r w_r * loss(batch_r) (w_r = 1/W: what DDP's all-reduce averages)."""
    model.zero_grad(set_to_none=True)
    weights = weights or [1.0 / len(batches)] * len(batches)
    for w, b in zip(weights, batches):
        (w * task_loss(model(b["input_ids"], b["attention_mask"], task=task), b["labels"])).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _halves(batch) -> list[dict]:
    return [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]  # 2 ranks


def test_two_rank_average_is_the_global_mean_for_sentences_only():
    model = tiny_model(("sst2", "conll")).train()
    seq = sentence_batches(1)[0]
    # two half-batch gradients summed vs one batch: the same terms in another order (atol: entries near 0)
    torch.testing.assert_close(_gradient(model, _halves(seq), "sst2"), _gradient(model, [seq], "sst2"),
                               rtol=FP32_REL, atol=1e-7)
    tok = token_batches(1)[0]
    tok["labels"][2:, 2:] = -100  # rank 1 keeps fewer labelled tokens than rank 0
    counts = [int((h["labels"] != -100).sum()) for h in _halves(tok)]
    assert counts[0] != counts[1]
    single = _gradient(model, [tok], "conll")
    ddp = _gradient(model, _halves(tok), "conll")
    assert (ddp - single).norm() > 1e-3 * single.norm()  # not the single-process gradient ...
    token_weighted = _gradient(model, _halves(tok), "conll", [c / sum(counts) for c in counts])
    torch.testing.assert_close(token_weighted, single, rtol=FP32_REL, atol=1e-7)  # ... for this reason
