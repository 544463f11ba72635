"""Every prompt method on the LLaMA-style decoder, with what rotary positions and grouped K/V
heads change made explicit (lesson 15):

- a K/V prefix is [B, H_kv, P, d]: one key/value head per group of H / H_kv query heads;
- its keys are used as given (rotate_keys=False, PEFT's convention: they score like keys at
  position 0) or turned to the prompt rows' positions (rotate_keys=True);
- under RoPE only distances count, so "real" and "shifted" agree wherever every key is turned:
  shallow and deep prompts, and a prefix with rotate_keys=True; with unturned prefix keys they differ;
- the bridge: K = RoPE(RMSNorm(h) W_K) at the prompt rows' positions, V = RMSNorm(h) W_V;
- every method: gradients reach only the prompt, cached decoding equals recomputation, a
  left-padded row generates what it generates alone, real tokens see every virtual entry.
"""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2 import GPT2Decoder, ShapeTrace, preset
from minigpt_ptv2.models.llama import LlamaDecoder
from minigpt_ptv2.prompts import METHODS, DeepPrompt, KVPrefix, freeze_backbone, hidden_to_kv, make_method
from minigpt_ptv2.trace import dims_for
from method_contract import check_attention, check_gradients_reach_only_the_method, gates_read, move_off_start
from tolerances import FP32_KERNELS, FP64

pytestmark = pytest.mark.usefixtures("one_thread")
P = 4
STEPS = 8
F64 = torch.float64
# The bridge on this decoder: within 1e-5 on a model at transformers' default init (logits ~0.5;
# obs 4e-7); on the varied one (std 0.3, logits up to ~7) within the whole-model bound FP32_KERNELS
# (obs 1.05e-5: the prompt rows go through a [B, P+N, D] product in one path, [1, P, D] in the other).
BRIDGE = {"llama_default": 1e-5, "llama": FP32_KERNELS}


def _method(name, config, **kw):
    small = {"hidden": 16} if name in ("ptuning-mlp", "ptuning-lstm", "deep-mlp", "prefix-mlp") else {}
    return make_method(name, config, P, **small, **kw)


@pytest.fixture(scope="module")
def llama(llama_varied_dir):
    return LlamaDecoder.from_pretrained(llama_varied_dir).eval()


@pytest.fixture(scope="module")
def llama_default(llama_tiny_dir):
    return LlamaDecoder.from_pretrained(llama_tiny_dir).eval()


@pytest.fixture(scope="module")
def llama64():
    torch.manual_seed(8)
    model = LlamaDecoder(preset("llama-tiny")).eval().to(F64)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model


def _left_padded(V=140):
    g = torch.Generator().manual_seed(21)
    ids = torch.randint(1, V, (3, 7), generator=g)  # [B, N]
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    mask[2, :4] = 0
    return ids.masked_fill(mask == 0, 0), mask


def _logits(model, method, ids, mask, **kw):
    model.detach_prompt()
    if method is not None:
        model.attach(method)
    try:
        with torch.no_grad():
            return model(ids, attention_mask=mask, **kw).logits[mask.bool()]  # [#real, V]
    finally:
        model.detach_prompt()


# --- grouped K/V heads -------------------------------------------------------------------------

def test_a_kv_prefix_has_h_kv_heads_and_a_table_of_L_2_H_kv_d(llama):
    c = llama.config
    prefix = KVPrefix(c, P)
    assert prefix.embedding.weight.shape == (P, c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim)
    ids, mask = _left_padded()
    llama.attach(prefix)
    try:
        with ShapeTrace(dims=dims_for(c, B=3, N=7, P=P)) as tr, torch.no_grad():
            llama(ids, attention_mask=mask)
    finally:
        llama.detach_prompt()
    shapes = tr.shapes()
    assert shapes["layer0.attn.prefix_k"] == (3, 2, P, 10)  # [B, H_kv, P, d]
    assert shapes["layer0.attn.k_with_prefix"] == (3, 2, P + 7, 10)  # [B, H_kv, P+N, d]
    assert shapes["layer0.attn.q"] == (3, 4, 7, 10)  # [B, H, N, d]: queries keep all H heads
    assert tr.letters(shapes["prefix.table"], "prefix.table") == "[P, L*2*H_kv*d]"
    assert tr.letters(shapes["layer0.attn.prefix_k"], "layer0.attn.prefix_k") == "[B, H_kv, P, d]"


# --- positions under RoPE ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["soft", "ptuning-mlp", "deep", "deep-mlp"])
def test_real_and_shifted_agree_when_every_key_is_rotated(llama64, name):
    """Under RoPE a score depends on distances only: moving the prompt rows and the real tokens by
    the same P changes nothing. (On GPT-2 the same switch changes the outputs: learned positions.)"""
    ids, mask = _left_padded()
    torch.manual_seed(1)
    real = _method(name, llama64.config).to(F64)
    shifted = _method(name, llama64.config, positions="shifted").to(F64)
    shifted.load_state_dict(real.state_dict())
    plain = _logits(llama64, None, ids, mask)
    a, b = _logits(llama64, real, ids, mask), _logits(llama64, shifted, ids, mask)
    assert (a - plain).abs().max() > 1e-2  # the prompt does something
    torch.testing.assert_close(a, b, atol=FP64, rtol=0)


def test_an_unrotated_prefix_sees_the_shift_and_a_rotated_one_does_not(llama64):
    """rotate_keys=False: the prefix keys score like keys at position 0, so moving the real tokens
    from 0.. to P.. changes every score against them. rotate_keys=True: keys at the prompt rows'
    positions, moved with the text, so the two policies agree."""
    ids, mask = _left_padded()
    outs = {}
    for rotate in (False, True):
        for positions in ("real", "shifted"):
            torch.manual_seed(2)
            outs[rotate, positions] = _logits(llama64, KVPrefix(llama64.config, P, init_std=1.0, positions=positions,
                                                                rotate_keys=rotate).to(F64), ids, mask)
    assert (outs[False, "real"] - outs[False, "shifted"]).abs().max() > 1e-2
    torch.testing.assert_close(outs[True, "real"], outs[True, "shifted"], atol=FP64, rtol=0)
    assert (outs[True, "real"] - outs[False, "real"]).abs().max() > 1e-2  # rotation is a real choice


def test_rotate_keys_turns_the_keys_once_at_the_prompt_rows_positions(llama64):
    """A prefix holding the *unturned* keys of hidden rows h, with rotate_keys=True, is exactly the
    deep prompt h: the model turns them to -P..-1 (real) as the deep loop turns the rows' keys."""
    ids, mask = _left_padded()
    torch.manual_seed(3)
    deep = DeepPrompt(llama64.config, P, init_std=1.0).to(F64)
    h = deep.layer_prompts()  # [L, P, D]
    kv = []
    with torch.no_grad():
        for i, layer in enumerate(llama64.layers):
            _, k, v = layer.attn.project(layer.attn_norm(h[i][None]))  # no positions: unturned
            kv.append(torch.cat([k, v]))  # [2, H_kv, P, d]
    prefix = KVPrefix.from_layer_kv(llama64.config, torch.stack(kv), rotate_keys=True).to(F64)
    torch.testing.assert_close(_logits(llama64, prefix, ids, mask), _logits(llama64, deep, ids, mask),
                               atol=FP64, rtol=0)
    prefix.rotate_prefix_keys = False  # used as given, the same keys are another prompt
    assert (_logits(llama64, prefix, ids, mask) - _logits(llama64, deep, ids, mask)).abs().max() > 1e-2


def test_rotating_prefix_keys_is_refused_where_there_is_no_rotation(gpt2_tiny_dir):
    model = GPT2Decoder.from_pretrained(gpt2_tiny_dir)
    with pytest.raises(ValueError, match=r"rotate_keys=True\) needs a model with rotary positions"):
        model.attach(KVPrefix(model.config, P, rotate_keys=True))
    with pytest.raises(ValueError, match="rotate_keys must be True or False"):
        KVPrefix(model.config, P, rotate_keys="yes")


# --- the bridge, restated for this block -------------------------------------------------------

@pytest.mark.parametrize("which", sorted(BRIDGE))
@pytest.mark.parametrize("positions", ["real", "shifted"])
@pytest.mark.parametrize("reparam", [False, True])
def test_hidden_to_kv_equals_the_deep_prompt(which, positions, reparam, request):
    llama = request.getfixturevalue(which)
    ids, mask = _left_padded()
    torch.manual_seed(4)
    deep = DeepPrompt(llama.config, P, init_std=1.0, reparam=reparam, hidden=16, positions=positions).eval()
    prefix = hidden_to_kv(llama, deep)
    assert not prefix.rotate_prefix_keys  # its keys come out turned already
    got, want = _logits(llama, prefix, ids, mask), _logits(llama, deep, ids, mask)
    assert (want - _logits(llama, None, ids, mask)).abs().max() > 1e-2
    assert (got - want).abs().max().item() <= BRIDGE[which]


def test_hidden_to_kv_keys_are_rmsnorm_w_k_and_rope_at_the_rows_positions(llama64):
    """By hand from the weights: K = RoPE(RMSNorm(h) W_K, -P..-1), V = RMSNorm(h) W_V."""
    c = llama64.config
    torch.manual_seed(5)
    deep = DeepPrompt(c, P, init_std=1.0).to(F64)
    kv = hidden_to_kv(llama64, deep).layer_kv()  # [L, 2, H_kv, P, d]
    H, H_kv, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
    for i, layer in enumerate(llama64.layers):
        x = layer.attn_norm(deep.layer_prompts()[i])  # [P, D]
        W = layer.attn.qkv.weight  # [D, (H + 2 H_kv) d] = [W_Q | W_K | W_V]
        k = (x @ W[:, H * d:(H + H_kv) * d]).view(P, H_kv, d).transpose(0, 1)  # [H_kv, P, d]
        v = (x @ W[:, (H + H_kv) * d:]).view(P, H_kv, d).transpose(0, 1)  # [H_kv, P, d]
        k = layer.rotary(k[None], torch.arange(-P, 0)[None])[0]  # turned to -P..-1
        torch.testing.assert_close(kv[i, 0], k, atol=FP64, rtol=0)
        torch.testing.assert_close(kv[i, 1], v, atol=FP64, rtol=0)


# --- every method --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(METHODS))
def test_gradients_reach_only_the_prompt(llama, name):
    ids, mask = _left_padded()
    method = _method(name, llama.config)
    llama.attach(method)
    try:
        assert freeze_backbone(llama) == method.num_trainable() > 0
        check_gradients_reach_only_the_method(
            llama, method, lambda: llama(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss)
    finally:
        llama.detach_prompt()
        for p in llama.parameters():
            p.requires_grad_(True)
            p.grad = None


@pytest.mark.parametrize("name", sorted(METHODS))
def test_generation_with_every_method_cached_equals_recomputed_and_ignores_padding(llama, name):
    ids, mask = _left_padded()
    torch.manual_seed(6)
    method = _method(name, llama.config)
    with torch.no_grad():
        for p in method.parameters():
            p.normal_(0.0, 0.5)
    llama.attach(method.eval())
    try:
        run = dict(eos_token_id=None)  # exactly STEPS tokens a row: no row stops early
        cached = llama.generate(ids, STEPS, attention_mask=mask, **run)
        assert torch.equal(cached, llama.generate(ids, STEPS, attention_mask=mask, use_cache=False, **run))
        assert torch.equal(cached[2:, 4:], llama.generate(ids[2:, 4:], STEPS, **run))  # row 2 without its 4 pads
        plain = llama.detach_prompt()
        assert not torch.equal(cached, llama.generate(ids, STEPS, attention_mask=mask, **run))  # the prompt steers
        llama.attach(plain)
    finally:
        llama.detach_prompt()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_real_tokens_see_every_virtual_entry_and_nothing_ahead(llama, name):
    ids, mask = _left_padded()
    B, N = ids.shape
    method = _method(name, llama.config)
    move_off_start(method, seed=8)
    llama.attach(method)
    try:
        with torch.no_grad():
            gates = gates_read(llama, method, B)
            out = llama(ids, attention_mask=mask, output_attentions=True)
    finally:
        llama.detach_prompt()
    assert out.logits.shape == (B, N, llama.config.vocab_size)  # N rows, whatever the method
    assert all(probs.shape[1] == 4 for probs in out.attentions)  # H query heads, over H_kv = 2 K/V heads
    check_attention(out.attentions, mask, P, gates, causal=True)


def test_a_masked_prefix_is_a_no_op_and_a_zero_prefix_is_not(llama64):
    ids, mask = _left_padded()
    plain = _logits(llama64, None, ids, mask)
    masked = KVPrefix(llama64.config, P, init_std=1.0).to(F64)
    masked.virtual_keep.fill_(False)
    torch.testing.assert_close(_logits(llama64, masked, ids, mask), plain, atol=FP64, rtol=0)
    zero = KVPrefix(llama64.config, P).to(F64)
    with torch.no_grad():
        zero.embedding.weight.zero_()
    assert (_logits(llama64, zero, ids, mask) - plain).abs().max() > 1e-3


def test_fp32_prefix_logits_are_stable_across_paths(llama):
    """The explicit path (attention probabilities) and the fused one give the same logits."""
    ids, mask = _left_padded()
    prefix = KVPrefix(llama.config, P, init_std=1.0)
    fused = _logits(llama, prefix, ids, mask)
    explicit = _logits(llama, prefix, ids, mask, output_attentions=True)
    assert (fused - explicit).abs().max().item() <= FP32_KERNELS
