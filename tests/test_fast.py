"""The speed devices (fast/): the feed-forward block run a block of rows at a time gives the same
numbers as all rows at once, with and without a graph, in every model; RoPE's tables computed
once per forward give the very same outputs and never go stale; and the devices come on and off
without touching the model's class, names or copies. Run: `pytest tests/test_fast.py`."""
from __future__ import annotations

import copy

import pytest
import torch

from minigpt_ptv2 import fast
from minigpt_ptv2.fast import row_blocks
from minigpt_ptv2.fast.row_blocks import position_wise
from minigpt_ptv2.models import build
from architectures import ARCHS
from minigpt_ptv2.models.presets import preset
from tolerances import FP32_KERNELS, FP32_ULPS


def _counting(fn):
    calls = []

    def wrapped(x):
        calls.append(tuple(x.shape))
        return fn(x)
    return wrapped, calls


def test_blocks_cover_every_row_once_and_match():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 9)
    x = torch.randn(3, 7, 6)  # [B, N, D]: 21 rows
    with torch.no_grad():
        fn, calls = _counting(lin)
        out = position_wise(fn, x, chunk_rows=5)
        assert calls == [(5, 6)] * 4 + [(1, 6)]  # 21 rows in blocks of 5
        assert out.shape == (3, 7, 9)
        # a row's arithmetic does not depend on its neighbours; only the BLAS blocking may
        assert (out - lin(x)).abs().max().item() <= FP32_ULPS


@pytest.mark.parametrize("chunk_rows", [0, 21, 100])
def test_no_blocks_when_they_cannot_help(chunk_rows):
    lin = torch.nn.Linear(6, 9)
    fn, calls = _counting(lin)
    with torch.no_grad():
        position_wise(fn, torch.randn(3, 7, 6), chunk_rows)
    assert calls == [(3, 7, 6)]  # one call on the whole input


def test_with_autograd_on_all_rows_go_at_once_and_gradients_match():
    torch.manual_seed(1)
    lin = torch.nn.Linear(6, 9)
    x = torch.randn(3, 7, 6, requires_grad=True)
    fn, calls = _counting(lin)
    position_wise(fn, x, chunk_rows=5).square().sum().backward()
    assert calls == [(3, 7, 6)]
    grad = x.grad.clone()
    x.grad = None
    lin(x).square().sum().backward()
    assert torch.equal(grad, x.grad)  # both ran all rows at once: the same kernel


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_models_run_the_ffn_in_blocks_and_give_the_same_output(name):
    torch.manual_seed(2)
    cfg = ARCHS[name].tiny
    whole = build(cfg).eval()
    blocks = copy.deepcopy(whole)
    assert row_blocks.enable(blocks, rows=5) == cfg.num_hidden_layers
    seen = []
    for layer in blocks.layers:  # the rows each feed-forward input holds
        calls = []
        layer.ffn_in.register_forward_pre_hook(lambda module, args, calls=calls: calls.append(tuple(args[0].shape)))
        seen.append(calls)
    ids = torch.randint(0, cfg.vocab_size, (3, 11))  # 33 rows: 6 full blocks and a remainder
    with torch.no_grad():
        a, b = whole(ids), blocks(ids)
    D = cfg.hidden_size
    assert all(calls == [(5, D)] * 6 + [(3, D)] for calls in seen)
    a, b = (a.logits, b.logits) if whole.causal else (a.last_hidden_state, b.last_hidden_state)
    assert (a - b).abs().max().item() <= FP32_KERNELS  # blocked FFN rows, through every layer


def test_no_blocks_off_the_cpu():
    """Blocks answer the CPU allocator; on another device (here "meta") all rows go at once."""
    lin = torch.nn.Linear(6, 9, device="meta")
    fn, calls = _counting(lin)
    with torch.no_grad():
        position_wise(fn, torch.empty(3, 7, 6, device="meta"), chunk_rows=5)
    assert calls == [(3, 7, 6)]


def test_rows_must_be_positive():
    with pytest.raises(ValueError, match="rows must be a positive int"):
        row_blocks.enable(build(preset("bert-tiny")), rows=0)


def test_speed_devices_leave_the_class_and_state_dict_alone_and_come_off():
    """enable() changes no parameter and no name; disable() gives back the plain model; a copy
    of an enabled model runs its own weights (not the original's)."""
    model = build(preset("gpt2-tiny")).eval()
    names = list(model.state_dict())
    fast.enable(model)
    assert list(model.state_dict()) == names and "feed_forward" in model.layers[0].__dict__
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)
    ids = torch.randint(0, 130, (2, 5))
    with torch.no_grad():
        assert not torch.equal(twin(ids).logits, model(ids).logits)
    fast.disable(model)
    assert "feed_forward" not in model.layers[0].__dict__


def test_loaded_models_are_fast_unless_asked_for_the_plain_model(gpt2_tiny_dir):
    from minigpt_ptv2.models import load_pretrained
    assert "feed_forward" in load_pretrained(gpt2_tiny_dir).layers[0].__dict__
    assert "feed_forward" not in load_pretrained(gpt2_tiny_dir, fast=False).layers[0].__dict__


# --- rotary tables ------------------------------------------------------------------------------

def _llama(seed=3):
    torch.manual_seed(seed)
    model = build(preset("llama-tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model


def test_rotary_tables_are_computed_once_per_forward_and_change_nothing():
    from minigpt_ptv2.core.rotary import Rotary
    from minigpt_ptv2.fast import rotary_tables
    plain = _llama()
    quick = copy.deepcopy(plain)
    assert rotary_tables.enable(quick) == 1  # one Rotary, shared by every block
    assert all(layer.rotary is quick.rotary for layer in quick.layers)
    computed = []
    original = Rotary.cos_sin
    Rotary.cos_sin = lambda self, pos, dtype: computed.append(tuple(pos.shape)) or original(self, pos, dtype)
    try:
        ids = torch.randint(0, 140, (2, 7))
        with torch.no_grad():
            a = plain(ids).logits
            n_plain = len(computed)
            b = quick(ids).logits
    finally:
        Rotary.cos_sin = original
    assert n_plain == 2 * plain.config.num_hidden_layers and len(computed) == n_plain + 1
    assert torch.equal(a, b)  # the same tables, so the same numbers
    # decoding: every step brings new positions, and each is turned by its own
    ids = torch.randint(0, 140, (2, 5))
    assert torch.equal(plain.generate(ids, 12), quick.generate(ids, 12))


def test_remembered_tables_notice_an_edit_in_place():
    from minigpt_ptv2.fast import rotary_tables
    model = _llama()
    rotary_tables.enable(model)
    pos = torch.arange(6)[None]
    first = model.rotary.cos_sin(pos, torch.float32)
    assert model.rotary.cos_sin(pos, torch.float32) is first  # the same tensor object: remembered
    pos.add_(3)  # the same object, other positions
    again = model.rotary.cos_sin(pos, torch.float32)
    assert again is not first and not torch.equal(again[0], first[0])
    rotary_tables.disable(model)
    assert "cos_sin" not in model.rotary.__dict__ and "_last_tables" not in model.rotary.__dict__
