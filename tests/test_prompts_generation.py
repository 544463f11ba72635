"""Generation with a prompt: the prompt (or K/V prefix) is simply the start of the KV cache.

The first decoding step runs the prompt and the real tokens and keeps every layer's K/V, so a
K/V prefix becomes the first P entries of the cache; each later step feeds one token. These
tests check that the cached path equals full recomputation, token for token, for every
method, with left padding in the batch.
"""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2 import GPT2Decoder, KVCache
from minigpt_ptv2.prompts import METHODS, hidden_to_kv, make_method
from method_contract import move_off_start
from tolerances import FP32_KERNELS, FP32_ULPS

P = 4
STEPS = 6
# Generated tokens are compared exactly: argmaxes agree whenever no step's two best logits lie
# within FP32_KERNELS of each other (cached and recomputed attention sum in another order; the
# closest pair these tests meet is 6.8e-4 apart, their logits differ by 1.2e-7 at most).


@pytest.fixture(scope="module")
def gpt2(gpt2_tiny_dir):
    return GPT2Decoder.from_pretrained(gpt2_tiny_dir).eval()


def _method(name, config, **kw):
    small = {"hidden": 16} if name in ("ptuning-mlp", "ptuning-lstm", "deep-mlp", "prefix-mlp") else {}
    return make_method(name, config, P, **small, **kw)


def _left_padded(vocab: int):
    """Three rows of 7 tokens, rows 1 and 2 left-padded to 5 and 3 real tokens."""
    g = torch.Generator().manual_seed(21)
    ids = torch.randint(1, vocab, (3, 7), generator=g)  # [B, N]
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    mask[2, :4] = 0
    ids = ids.masked_fill(mask == 0, 0)  # pad id 0 (= eos in this checkpoint)
    return ids, mask


def _positions(mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Positions counting real tokens only, as HF GPT-2 does under left padding."""
    return (mask.cumsum(-1) - 1).clamp(min=0) + offset  # [B, N]


@pytest.fixture
def attached(gpt2, request):
    """gpt2 with the method named by the test's `name` parameter attached, moved off its start (a
    gated prefix at g = 0 reads nothing, and the cache would be checked against nothing); plain
    again afterwards."""
    method = _method(request.node.callspec.params["name"], gpt2.config)
    move_off_start(method, seed=9)
    gpt2.attach(method)
    yield gpt2, method
    gpt2.detach_prompt()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_cached_generation_equals_full_recomputation(attached, name):
    model, _ = attached
    ids, mask = _left_padded(model.config.vocab_size)
    cached = model.generate(ids, STEPS, attention_mask=mask, use_cache=True)
    full = model.generate(ids, STEPS, attention_mask=mask, use_cache=False)
    assert cached.shape == (3, 7 + STEPS)
    assert torch.equal(cached, full)


@pytest.mark.parametrize("name", sorted(METHODS))
@torch.no_grad()
def test_each_cached_step_matches_recomputation_and_the_cache_grows_from_P(attached, name):
    model, method = attached
    ids, mask = _left_padded(model.config.vocab_size)
    B, N = ids.shape
    out = model(ids, attention_mask=mask, position_ids=_positions(mask), use_cache=True)
    cache = out.cache
    # The cache keeps every prefix the layers read: a gated one apart, exactly as the method
    # handed it over (it never joins the tokens' keys); the P entries of any other prompt first
    # among the joined keys, then the real tokens (and pads).
    prefixes = method.kv_prefix(B, layers=model.layers) or []  # L x Prefix (or None), or none
    gated = [p for p in prefixes if p is not None and p.gated]
    if gated:
        kept = [p for p in cache.gated if p is not None]
        assert len(kept) == len(gated) and all(torch.equal(a.k, b.k) and torch.equal(a.v, b.v) and
                                               torch.equal(a.gate, b.gate) for a, b in zip(kept, gated))
    P_joined = 0 if gated else P
    assert cache.length == P_joined + N
    assert bool(cache.key_mask[:, :P_joined].all()) and torch.equal(cache.key_mask[:, P_joined:], mask.bool())

    # The first P cache entries are the prompt's keys and values, layer by layer.
    if method.kind in ("kv", "hidden"):
        prefix = (method if method.kind == "kv" else hidden_to_kv(model, method)).kv_prefix(B)  # L x (K, V)
        for i, ((k, v), (pk, pv)) in enumerate(zip(cache.layers, prefix)):
            # a K/V prefix is copied in as is; a hidden prompt's K/V come from the layer's
            # projection of [B, P+N] rows here, of [1, P] rows in hidden_to_kv: other GEMM shapes
            torch.testing.assert_close(k[:, :, :P], pk, atol=FP32_ULPS, rtol=0)  # [B, H, P, d]
            torch.testing.assert_close(v[:, :, :P], pv, atol=FP32_ULPS, rtol=0)

    seq, m = ids, mask
    for step in range(STEPS):
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
        seq, m = torch.cat([seq, nxt], 1), torch.cat([m, torch.ones_like(nxt)], 1)
        out = model(nxt, past=out.cache, use_cache=True)  # one token per row
        assert out.cache.length == P_joined + N + step + 1
        assert out.cache.gated is cache.gated  # handed on as it was
        full = model(seq, attention_mask=m, position_ids=_positions(m))  # everything again
        torch.testing.assert_close(out.logits[:, -1], full.logits[:, -1], atol=FP32_KERNELS, rtol=0)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_left_padded_row_generates_what_it_generates_alone(attached, name):
    model, _ = attached
    ids, mask = _left_padded(model.config.vocab_size)
    batch = model.generate(ids, STEPS, attention_mask=mask)
    for row in (1, 2):
        alone = model.generate(ids[row : row + 1, mask[row].bool()], STEPS)  # no padding at all
        assert torch.equal(batch[row, -STEPS:], alone[0, -STEPS:]), f"row {row}"


@torch.no_grad()
def test_a_kv_prefix_is_an_initial_kv_cache(gpt2):
    """P-Tuning v2 at inference: the plain model, handed the prefix as `past`, gives the same
    logits as the model with the prefix attached."""
    ids, mask = _left_padded(gpt2.config.vocab_size)
    B = ids.shape[0]
    prefix = make_method("prefix", gpt2.config, P)
    pos = _positions(mask)
    gpt2.attach(prefix)
    try:
        attached = gpt2(ids, attention_mask=mask, position_ids=pos).logits
    finally:
        gpt2.detach_prompt()
    past = KVCache(layers=prefix.kv_prefix(B), key_mask=torch.ones(B, P, dtype=torch.bool),
                   next_position=torch.zeros(B, dtype=torch.long))
    as_cache = gpt2(ids, attention_mask=mask, position_ids=pos, past=past).logits
    plain = gpt2(ids, attention_mask=mask, position_ids=pos).logits
    real = mask.bool()
    torch.testing.assert_close(as_cache[real], attached[real], atol=FP32_KERNELS, rtol=0)
    assert (attached[real] - plain[real]).abs().max() > 100 * FP32_KERNELS  # the prefix does matter


def test_sampling_with_a_prefix_is_the_same_with_and_without_cache(gpt2):
    ids, mask = _left_padded(gpt2.config.vocab_size)
    gpt2.attach(make_method("prefix", gpt2.config, P))
    try:
        runs = [gpt2.generate(ids, STEPS, attention_mask=mask, do_sample=True, top_k=20,
                              generator=torch.Generator().manual_seed(5), use_cache=c)
                for c in (True, False)]
    finally:
        gpt2.detach_prompt()
    assert torch.equal(runs[0], runs[1])


def test_shifted_positions_run_out_during_generation_with_a_clear_error(gpt2):
    """Under "shifted" the table holds max_positions - P tokens; generating past it must fail
    loudly (naming the shift), not index out of range or wrap around."""
    M = gpt2.config.max_position_embeddings
    ids = torch.randint(1, gpt2.config.vocab_size, (1, M - P - 2))  # at positions P..M-3
    gpt2.attach(make_method("prefix", gpt2.config, P, positions="shifted"))
    try:
        # new tokens 1 and 2 are fed back at positions M-2 and M-1; the last one is never fed
        assert gpt2.generate(ids, 3).shape == (1, M - P + 1)
        with pytest.raises(ValueError, match=rf"position {M} .*shift of P={P}"):
            gpt2.generate(ids, 4)
    finally:
        gpt2.detach_prompt()
