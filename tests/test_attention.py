"""MultiHeadAttention: the explicit and fused paths compute one function, a prefix only ever
extends K and V, a masked-out prefix is a no-op, and the shapes are the notation letters.

Shapes use the seed walkthrough's numbers (B=16, N=128, P=20, bert-base D=768, H=12, d=64) on a
single attention module; the numeric comparisons use smaller sizes to stay fast.
"""
from __future__ import annotations

import math

import pytest
import torch

from minigpt_ptv2.core.attention import MultiHeadAttention, additive_mask, concat_prefix
from minigpt_ptv2.models.presets import preset
from minigpt_ptv2.core.masks import build_keep
from minigpt_ptv2.core.prompt_rows import keys_in_front
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.trace import ShapeTrace
from tolerances import EXACT, FP32_ULPS, PROB_SUM

B, N, P = 16, 128, 20  # the seed walkthrough


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def small_attention(D=48, H=4):
    """A randomly initialised attention module, in eval mode (dropout must not differ)."""
    return MultiHeadAttention(D, H, dropout=0.1).eval()


def padded_key_mask(lengths, n):
    """[B, n] True on the first `length` positions of each row (right padding)."""
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]  # [B, n]


def random_prefix(b, h, p, d):
    return torch.randn(b, h, p, d), torch.randn(b, h, p, d)  # [B, H, P, d] each


# --- explicit == fused ----------------------------------------------------------------------

CASES = ["plain", "padding", "prefix", "prefix+padding", "causal", "prefix+causal+padding",
         "prefix+causal+padding+window"]


@pytest.mark.parametrize("case", CASES)
def test_explicit_and_fused_paths_agree(case):
    torch.manual_seed(0)
    attn = small_attention()
    b, n, p, H, d = 3, 9, 5, attn.num_heads, attn.head_dim
    x = torch.randn(b, n, H * d)  # [B, N, D]
    prefix = random_prefix(b, H, p, d) if "prefix" in case else None
    key_mask = padded_key_mask([9, 6, 2], n) if "padding" in case else torch.ones(b, n, dtype=torch.bool)
    if prefix is not None:
        key_mask = keys_in_front(key_mask, p)  # [B, P+N]
    keep = build_keep(key_mask, n, causal="causal" in case, window=4 if "window" in case else None)
    assert (keep is None) == (case in ("plain", "prefix")), "each case exercises what its name says"
    with torch.no_grad():
        fused, no_probs, kv_f = attn(x, keep=keep, prefix=prefix, need_weights=False, use_cache=True)
        explicit, probs, kv_e = attn(x, keep=keep, prefix=prefix, need_weights=True, use_cache=True)
    assert no_probs is None
    assert probs.shape == (b, H, n, key_mask.shape[1])
    assert max_diff(fused, explicit) <= FP32_ULPS, case  # SDPA's kernel vs softmax step by step
    assert torch.equal(kv_f[0], kv_e[0]) and torch.equal(kv_f[1], kv_e[1])  # one projection: exact


def test_a_sliding_window_keeps_the_last_W_columns_of_each_query_itself_included():
    """Query q (a column of the keys, counted over prefix and pads too, as transformers counts its
    cache) sees key k when q - W < k <= q: a band under the diagonal, on top of the key mask."""
    P, N, W = 2, 5, 3
    key_mask = keys_in_front(padded_key_mask([5, 3], N), P)  # [2, P+N]
    keep = build_keep(key_mask, N, causal=True, window=W)  # [2, 1, N, P+N]
    for b in range(2):
        for i in range(N):
            q = P + i  # the query's own column
            want = [bool(key_mask[b, k]) and q - W < k <= q for k in range(P + N)]
            assert keep[b, 0, i].tolist() == want, (b, i)
    with pytest.raises(InputError, match="sliding window .* causal"):
        build_keep(key_mask, N, window=W)


def test_explicit_probabilities_are_the_textbook_formula():
    """probs == softmax(Q K^T / sqrt(d) + mask), recomputed here from the module's own weights."""
    torch.manual_seed(1)
    attn = small_attention()
    b, n, p, H, d = 2, 7, 3, attn.num_heads, attn.head_dim
    x = torch.randn(b, n, H * d)
    pk, pv = random_prefix(b, H, p, d)
    key_mask = keys_in_front(padded_key_mask([7, 4], n), p)  # [B, P+N]
    with torch.no_grad():
        out, probs, _ = attn(x, keep=build_keep(key_mask, n), prefix=(pk, pv), need_weights=True)
        Wq, Wk, Wv = attn.qkv.weight.split(H * d, dim=1)  # [D, D] each: W_qkv = [W_Q | W_K | W_V]
        bq, bk, bv = attn.qkv.bias.split(H * d)  # [D] each
        heads = lambda t: t.view(b, n, H, d).transpose(1, 2)  # noqa: E731  [B, N, D] -> [B, H, N, d]
        q = heads(x @ Wq + bq)  # [B, H, N, d]
        k = torch.cat([pk, heads(x @ Wk + bk)], dim=2)  # [B, H, P+N, d]
        v = torch.cat([pv, heads(x @ Wv + bv)], dim=2)  # [B, H, P+N, d]
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # [B, H, N, P+N]
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        ref = torch.softmax(scores, dim=-1)  # [B, H, N, P+N]
        ref_out = (ref @ v).transpose(1, 2).reshape(b, n, H * d) @ attn.output.weight + attn.output.bias  # [B, N, D]
    assert max_diff(probs, ref) <= FP32_ULPS  # one fused [D, 3D] product vs three [D, D] ones
    assert max_diff(out, ref_out) <= FP32_ULPS
    # padded keys get exactly zero weight; the P prefix keys get some
    assert probs[1, :, :, p + 4:].abs().max().item() == 0.0
    assert probs[:, :, :, :p].sum().item() > 0.0


def test_probability_rows_sum_to_one_with_prefix_and_mask():
    torch.manual_seed(2)
    attn = small_attention()
    b, n, p, H, d = 4, 6, 5, attn.num_heads, attn.head_dim
    key_mask = keys_in_front(padded_key_mask([6, 5, 3, 1], n), p)
    with torch.no_grad():
        _, probs, _ = attn(torch.randn(b, n, H * d), keep=build_keep(key_mask, n, causal=True), prefix=random_prefix(b, H, p, d), need_weights=True)
    assert probs.shape == (b, H, n, p + n)
    torch.testing.assert_close(probs.sum(-1), torch.ones(b, H, n), atol=PROB_SUM[torch.float32], rtol=0)
    assert probs.min().item() >= 0.0


# --- what a prefix does and does not do ------------------------------------------------------

@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_masked_out_prefix_changes_nothing(need_weights, causal):
    """A prefix whose P entries are all masked out is a no-op (up to summation order)."""
    torch.manual_seed(3)
    attn = small_attention()
    b, n, p, H, d = 3, 8, 6, attn.num_heads, attn.head_dim
    x = torch.randn(b, n, H * d)
    key_mask = padded_key_mask([8, 5, 3], n)  # [B, N]
    prefix = tuple(100 * t for t in random_prefix(b, H, p, d))  # large, so a leak would show
    with torch.no_grad():
        base, base_probs, _ = attn(x, keep=build_keep(key_mask, n, causal), prefix=None, need_weights=need_weights)
        hidden = keys_in_front(key_mask, torch.zeros(p, dtype=torch.bool))  # [B, P+N], prefix False
        out, probs, _ = attn(x, keep=build_keep(hidden, n, causal), prefix=prefix, need_weights=need_weights)
    assert max_diff(out, base) <= FP32_ULPS  # the kernel sums P+N keys, P of them exact zeros
    if need_weights:
        assert probs[..., :p].abs().max().item() == 0.0
        assert max_diff(probs[..., p:], base_probs) <= FP32_ULPS


def test_zero_prefix_is_not_a_no_op():
    """Pitfall 4: a zero key scores 0, not -inf, so it still takes attention mass."""
    torch.manual_seed(4)
    attn = small_attention()
    b, n, p, H, d = 2, 5, 4, attn.num_heads, attn.head_dim
    x = torch.randn(b, n, H * d)
    zeros = (torch.zeros(b, H, p, d), torch.zeros(b, H, p, d))
    with torch.no_grad():
        base, _, _ = attn(x)
        out, probs, _ = attn(x, keep=None, prefix=zeros, need_weights=True)
    assert probs[..., :p].sum(-1).min().item() > 0.01
    assert max_diff(out, base) > 1e-3


def test_queries_are_never_prefixed():
    """Pitfall 3: only K and V grow by P; the output keeps N rows and Q keeps [B, H, N, d]."""
    torch.manual_seed(5)
    attn = small_attention()
    b, n, p, H, d = 2, 5, 3, attn.num_heads, attn.head_dim
    with ShapeTrace() as tr, torch.no_grad():
        out, probs, (k, v) = attn(torch.randn(b, n, H * d), keep=None, prefix=random_prefix(b, H, p, d), need_weights=True, use_cache=True)
    s = tr.shapes()
    assert s["attn.q"] == (b, H, n, d)
    assert s["attn.k_with_prefix"] == s["attn.v_with_prefix"] == (b, H, p + n, d)
    assert out.shape == (b, n, H * d) and k.shape == v.shape == (b, H, p + n, d)


def test_concat_prefix_puts_the_prefix_first():
    k, v = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)  # [B, H, N, d]
    pk, pv = torch.randn(2, 3, 6, 5), torch.randn(2, 3, 6, 5)  # [B, H, P, d]
    k2, v2 = concat_prefix(k, v, (pk, pv))
    assert k2.shape == v2.shape == (2, 3, 10, 5)
    assert torch.equal(k2[:, :, :6], pk) and torch.equal(k2[:, :, 6:], k)
    assert torch.equal(v2[:, :, :6], pv) and torch.equal(v2[:, :, 6:], v)
    assert concat_prefix(k, v, None) == (k, v)


def test_concat_prefix_refuses_mismatched_prefix_with_both_shapes():
    k = v = torch.randn(2, 3, 4, 5)  # [B=2, H=3, N=4, d=5]
    bad = torch.randn(2, 4, 6, 5)  # H=4
    with pytest.raises(ValueError, match=r"prefix shape mismatch") as e:
        concat_prefix(k, v, (bad, bad))
    assert "[2, 4, 6, 5]" in str(e.value) and "[2, 3, 4, 5]" in str(e.value)


def test_mask_shape_mismatch_is_named():
    attn = small_attention()
    x = torch.randn(2, 5, 48)
    keep = torch.ones(2, 1, 1, 7, dtype=torch.bool)  # 7 keys, but there are 5
    with pytest.raises(ValueError, match=r"mask \[2, 1, 1, 7\].*5 key rows"):
        attn(x, keep=keep)


def test_fully_masked_row_is_finite_in_both_paths():
    """additive_mask uses finfo.min, not -inf: a row with nothing to attend to stays finite."""
    torch.manual_seed(6)
    attn = small_attention()
    x = torch.randn(2, 4, 48)
    keep = padded_key_mask([4, 0], 4)[:, None, None, :]  # row 1 may attend to nothing
    with torch.no_grad():
        fused, _, _ = attn(x, keep=keep)
        explicit, probs, _ = attn(x, keep=keep, need_weights=True)
    assert torch.isfinite(fused).all() and torch.isfinite(explicit).all()
    assert max_diff(fused, explicit) <= FP32_ULPS
    # every score + finfo.min rounds to finfo.min itself: four equal scores, exactly 1/4 each
    torch.testing.assert_close(probs[1], torch.full_like(probs[1], 0.25), atol=EXACT, rtol=0)  # uniform, not NaN


def test_additive_mask_values():
    keep = torch.tensor([[True, False]])
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        m = additive_mask(keep, dtype)
        assert m.dtype == dtype
        assert m[0, 0].item() == 0.0 and m[0, 1].item() == torch.finfo(dtype).min
    assert additive_mask(None, torch.float32) is None


def test_dropout_only_in_training():
    torch.manual_seed(7)
    attn = MultiHeadAttention(48, 4, dropout=0.5)
    x = torch.randn(2, 6, 48)
    with torch.no_grad():
        attn.eval()
        a, _, _ = attn(x)
        b, _, _ = attn(x)
        attn.train()
        c, _, _ = attn(x, need_weights=True)
    assert torch.equal(a, b)  # eval twice: same kernels, same order
    assert max_diff(a, c) > 1e-3


def test_head_count_must_divide_width():
    with pytest.raises(ValueError, match=r"num_heads=5 does not divide hidden_size=48"):
        MultiHeadAttention(48, 5)


# --- the seed walkthrough's shapes on one bert-base attention module --------------------------

@pytest.fixture(scope="module")
def bert_base_attention():
    cfg = preset("bert-base")
    return cfg, MultiHeadAttention(cfg.hidden_size, cfg.num_attention_heads, scope="layer0.attn").eval()


def test_attention_shapes_without_prefix(bert_base_attention):
    cfg, attn = bert_base_attention
    D, H, d = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
    assert (D, H, d) == (768, 12, 64)
    keep = build_keep(padded_key_mask([N] * (B - 1) + [N // 2], N), N)  # [B, 1, 1, N]
    with ShapeTrace(dims=dict(B=B, N=N, D=D, H=H, d=d)) as tr, torch.no_grad():
        out, probs, (k, v) = attn(torch.randn(B, N, D), keep=keep, prefix=None, need_weights=True, use_cache=True)
    s = tr.shapes()
    assert s["layer0.attn.q"] == s["layer0.attn.k"] == s["layer0.attn.v"] == (B, H, N, d)
    assert "layer0.attn.k_with_prefix" not in s
    assert s["layer0.attn.scores"] == s["layer0.attn.probs"] == (B, H, N, N)
    assert s["layer0.attn.context"] == (B, H, N, d)
    assert out.shape == s["layer0.attn.out"] == (B, N, D)
    assert probs.shape == (B, H, N, N) and k.shape == v.shape == (B, H, N, d)


def test_attention_shapes_with_prefix(bert_base_attention):
    cfg, attn = bert_base_attention
    D, H, d = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
    prefix = random_prefix(B, H, P, d)  # [B, H, P, d] each
    keep = build_keep(keys_in_front(torch.ones(B, N, dtype=torch.bool), P), N)  # None: all kept
    with ShapeTrace(dims=dict(B=B, N=N, P=P, D=D, H=H, d=d)) as tr, torch.no_grad():
        out, probs, (k, v) = attn(torch.randn(B, N, D), keep=keep, prefix=prefix, need_weights=True, use_cache=True)
    s = tr.shapes()
    assert s["layer0.attn.q"] == (B, H, N, d)  # queries: real tokens only
    assert s["layer0.attn.k"] == s["layer0.attn.v"] == (B, H, N, d)
    assert s["layer0.attn.k_with_prefix"] == s["layer0.attn.v_with_prefix"] == (B, H, P + N, d)
    assert s["layer0.attn.scores"] == s["layer0.attn.probs"] == (B, H, N, P + N)
    assert out.shape == (B, N, D)
    assert probs.shape == (B, H, N, P + N) and k.shape == (B, H, P + N, d)


@pytest.mark.parametrize("need_weights", [True, False])
def test_half_precision_large_scores_and_a_fully_masked_row_stay_finite(need_weights):
    """In fp16, score + finfo(fp16).min overflows to -inf once the score is below about -16; a fully
    masked row of -inf softmaxes to NaN. Large activations make such scores certain here."""
    attn = MultiHeadAttention(24, 4).half().eval()
    x = (torch.randn(2, 5, 24) * 30).half()  # [B, N, D], scores in the hundreds
    keep = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    keep[1] = False  # row 1 may attend to nothing at all
    out, probs, _ = attn(x, keep=keep, need_weights=need_weights)
    assert torch.isfinite(out).all()
    if need_weights:
        assert torch.isfinite(probs).all()
        torch.testing.assert_close(probs.float().sum(-1), torch.ones(2, 4, 5), atol=PROB_SUM[torch.float16], rtol=0)


def test_keys_and_values_are_returned_only_for_a_cache():
    """Without use_cache the layer keeps nothing alive after attention: present is None."""
    attn = small_attention()
    x = torch.randn(2, 5, attn.num_heads * attn.head_dim)
    with torch.no_grad():
        _, _, present = attn(x)
        _, _, (k, v) = attn(x, use_cache=True)
    assert present is None
    assert k.shape == v.shape == (2, attn.num_heads, 5, attn.head_dim)


def test_run_layers_keeps_no_keys_and_values_unless_a_cache_asks():
    from minigpt_ptv2.models.gpt2 import GPT2Block
    from minigpt_ptv2.models.presets import preset
    from minigpt_ptv2.core.stack import run_layers
    cfg = preset("gpt2-tiny")
    layers = torch.nn.ModuleList(GPT2Block(cfg, i) for i in range(2)).eval()
    x, keys = torch.randn(2, 4, cfg.hidden_size), torch.ones(2, 4, dtype=torch.bool)
    with torch.no_grad():
        off = run_layers(layers, x, keys, causal=True)
        on = run_layers(layers, x, keys, causal=True, use_cache=True)
    assert off.presents is None
    assert len(on.presents) == 2
    for k, v in on.presents:  # their own storage, not views into the [B, N, 3D] projection
        assert k.is_contiguous() and k.untyped_storage().nbytes() == k.numel() * k.element_size()
