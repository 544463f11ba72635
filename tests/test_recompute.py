"""Gradient checkpointing (training/recompute.py, `train --grad-checkpoint`).

  - For every prompt method, and head-only and full fine-tuning, on tiny random BERT, GPT-2 and
    LLaMA models with dropout on and a padded row: the loss and every trainable gradient with
    checkpointing are bit-identical to those without (EXACT: the recompute runs the same kernels
    on the same inputs, and torch replays the random generators, so dropout draws the same masks;
    the generators also end where they would have ended without it).
  - It really recomputes: each layer's forward runs twice per step with it, once without, and
    the tensors kept for backward shrink; calls that return attention weights or K/V, evaluation
    and no-grad calls run once, as before. A trace sees each layer once.
  - fit(..., TrainConfig(grad_checkpoint=True)) trains exactly the same prompt; the CLI flag runs
    and is recorded in the checkpoint and the run's saved arguments.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json

import pytest
import torch
import torch.nn.functional as F

from architectures import ARCHS as TABLE
from minigpt_ptv2 import ShapeTrace, preset
from minigpt_ptv2.core.layer import Layer
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.models import build
from minigpt_ptv2.prompts import METHODS, freeze_backbone, make_method
from minigpt_ptv2.training.recompute import (disable_grad_checkpoint, enable_grad_checkpoint, grad_checkpoint,
                                             is_grad_checkpointed)
from method_contract import move_off_start
from tolerances import EXACT

ARCHS = sorted(TABLE)  # every architecture (tests/architectures.py)
ALL_METHODS = [*sorted(METHODS), "head-only", "full"]
P, B, N = 3, 3, 7

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.py


def tiny(arch: str, method: str, seed: int = 0):
    """A tiny random model with dropout on (LLaMA has none by default: 0.1 on its attention), the
    method attached and moved off its start (so every tensor of it has a gradient to compare: a
    gated prefix's rows get none at g = 0), the backbone frozen unless `full`, a trainable 3-way head."""
    cfg = TABLE[arch].tiny
    if "attention_dropout" in cfg.to_dict():  # LLaMA-style decoders have none by default
        cfg = cfg.replace(attention_dropout=0.1)
    torch.manual_seed(seed)
    model = build(cfg)
    if method in METHODS:
        m = make_method(method, cfg, P)
        move_off_start(m, seed=seed)
        model.attach(m)
    if method != "full":
        freeze_backbone(model)
    head = torch.nn.Linear(cfg.hidden_size, 3)
    return model.train(), head


def batch(cfg, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, cfg.vocab_size, (B, N), generator=g)  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)
    mask[1, 4:] = 0  # one padded row
    return ids, mask, torch.randint(0, 3, (B,), generator=g)


def step(model, head, dropout_seed: int = 5):
    """One forward + backward: the head reads the mean of the real tokens' last hidden states.
    Returns (loss, {name: grad} of every trainable tensor, the CPU generator's state after)."""
    ids, mask, labels = batch(model.config)
    for p in [*model.parameters(), *head.parameters()]:
        p.grad = None
    torch.manual_seed(dropout_seed)
    h = model.run(ids, mask).hidden  # [B, N, D]
    w = mask[..., None].float()  # [B, N, 1]
    loss = F.cross_entropy(head((h * w).sum(1) / w.sum(1)), labels)
    loss.backward()
    named = [*model.named_parameters(), *(("head." + n, p) for n, p in head.named_parameters())]
    grads = {n: p.grad.clone() for n, p in named if p.grad is not None}  # ("full": run() skips pooler, LM head)
    return loss.detach(), grads, torch.get_rng_state()


@contextlib.contextmanager
def counted_layer_calls(model):
    """Count the calls of the layers' class forward (the first run and any recompute alike)."""
    cls = type(next(m for m in model.modules() if isinstance(m, Layer)))
    real, calls = cls.forward, []

    def counting(self, *args, **kw):
        calls.append(self)
        return real(self, *args, **kw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cls, "forward", counting)
        yield calls


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_checkpointing_gives_the_same_loss_and_gradients_for_every_method(arch, method):
    model, head = tiny(arch, method)
    loss, grads, rng = step(model, head)
    with grad_checkpoint(model):
        loss_ckpt, grads_ckpt, rng_ckpt = step(model, head)
    assert not is_grad_checkpointed(model)  # the context manager took it away again
    assert grads.keys() == grads_ckpt.keys() and len(grads) >= 2
    assert all(g.abs().sum() > 0 for n, g in grads.items() if not n.startswith("head.")) or method == "head-only"
    # EXACT: the same kernels on the same inputs, the generators replayed for dropout
    assert (loss - loss_ckpt).abs().item() <= EXACT
    for name in grads:
        assert (grads[name] - grads_ckpt[name]).abs().max().item() <= EXACT, name
    assert torch.equal(rng, rng_ckpt), "the run must draw what it would have drawn without checkpointing"


@pytest.mark.parametrize("arch", ARCHS)
def test_dropout_is_on_in_these_models_so_the_equality_above_means_the_masks_were_replayed(arch):
    model, head = tiny(arch, "prefix")
    a, _, _ = step(model, head, dropout_seed=5)
    b, _, _ = step(model, head, dropout_seed=6)
    assert a != b


@pytest.mark.parametrize("method", ["soft", "deep", "prefix-mlp", "full"])
@pytest.mark.parametrize("arch", ARCHS)
def test_each_layer_runs_twice_per_step_with_checkpointing_and_once_without(arch, method):
    model, head = tiny(arch, method)
    L = model.config.num_hidden_layers
    with counted_layer_calls(model) as calls:
        step(model, head)
    assert len(calls) == L
    enable_grad_checkpoint(model)
    with counted_layer_calls(model) as calls:
        step(model, head)
    assert len(calls) == 2 * L  # forward, then again in backward
    assert [id(m) for m in calls[:L]] == [id(m) for m in model.layers]  # first run in order ...
    assert [id(m) for m in calls[L:]] == [id(m) for m in reversed(model.layers)]  # ... recomputed last first


def saved_bytes(model, head) -> int:
    """Bytes autograd keeps for backward outside any checkpointed region, over one forward."""
    kept = []

    def pack(t):
        kept.append(t.numel() * t.element_size())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ids, mask, labels = batch(model.config)
        F.cross_entropy(head(model.run(ids, mask).hidden[:, 0]), labels)
    return sum(kept)


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpointing_keeps_less_for_backward(arch):
    model, head = tiny(arch, "prefix")
    plain = saved_bytes(model, head)
    with grad_checkpoint(model):
        checkpointed = saved_bytes(model, head)
    assert checkpointed < plain / 2, (checkpointed, plain)


def test_weights_cache_evaluation_and_no_grad_calls_run_once():
    model, head = tiny("gpt2", "prefix")
    L = model.config.num_hidden_layers
    ids, mask, _ = batch(model.config)
    enable_grad_checkpoint(model)
    for kw in ({"need_weights": True}, {"use_cache": True}):
        with counted_layer_calls(model) as calls:
            out = model.run(ids, mask, **kw)
            out.hidden.sum().backward()
        assert len(calls) == L, kw
        assert all(a is not None for a in (out.attentions if "need_weights" in kw else out.presents))
    with counted_layer_calls(model) as calls, torch.no_grad():
        model.run(ids, mask)
    model.eval()
    with counted_layer_calls(model) as calls_eval:
        model.run(ids, mask).hidden.sum().backward()
    assert len(calls) == len(calls_eval) == L


def test_a_trace_sees_each_layer_once():
    model, head = tiny("bert", "deep")
    ids, mask, labels = batch(model.config)

    def traced():
        with ShapeTrace() as tr:
            F.cross_entropy(head(model.run(ids, mask).hidden[:, 0]), labels).backward()
        return [name for name, *_ in tr.rows]
    plain = traced()
    with grad_checkpoint(model):
        assert traced() == plain


def test_a_copy_recomputes_its_own_layers_and_disable_restores_the_plain_forward():
    model, head = tiny("llama", "prefix")
    assert enable_grad_checkpoint(model) == model.config.num_hidden_layers
    twin = copy.deepcopy(model)
    assert all(layer.forward.__self__ is layer for layer in twin.layers)
    disable_grad_checkpoint(model)
    assert not is_grad_checkpointed(model) and is_grad_checkpointed(twin)
    assert model.state_dict().keys() == twin.state_dict().keys()
    with pytest.raises(InputError, match="no transformer layer"):
        enable_grad_checkpoint(torch.nn.Linear(2, 2))


def test_fit_with_grad_checkpoint_trains_the_same_prompt():
    from minigpt_ptv2 import BertEncoder
    from minigpt_ptv2.training import Head, TaskModel, TrainConfig, fit, set_trainable
    cfg = preset("bert-tiny")

    def trained(on: bool):
        torch.manual_seed(0)
        model = TaskModel(BertEncoder(cfg).attach(make_method("prefix-mlp", cfg, P)),
                          {"sst2": Head(cfg.hidden_size, 2, "sequence")})
        set_trainable(model, "prefix-mlp")
        ids, mask, labels = batch(cfg)
        batches = [{"input_ids": ids, "attention_mask": mask, "labels": labels % 2}] * 3
        fit(model, batches, TrainConfig(epochs=2, lr=0.05, progress=False, grad_checkpoint=on), task="sst2")
        assert is_grad_checkpointed(model) == on  # stays on after fit (it acts only in training)
        return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    plain, checkpointed = trained(False), trained(True)
    assert all(torch.equal(plain[n], checkpointed[n]) for n in plain)


def test_train_grad_checkpoint_on_the_command_line(minilm_dir, tmp_path):
    from minigpt_ptv2.cli import main
    from minigpt_ptv2.data import data_dir
    from minigpt_ptv2.training.checkpoint import read_meta
    try:
        data = str(data_dir())
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path / "run"
    argv = ["train", "sst2", "prefix", "--P", "2", "--epochs", "1", "--max-train", "8", "--max-dev", "8",
            "--max-length", "16", "--batch-size", "8", "--no-progress", "--json", "--grad-checkpoint",
            "--data-dir", data, "--model-dir", str(minilm_dir), "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(argv) == 0
    assert json.loads(printed.getvalue())["history"][0]["train_loss"] > 0
    assert read_meta(out)["train"]["grad_checkpoint"] is True
