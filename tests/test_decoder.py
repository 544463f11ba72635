"""The GPT-2 decoder against transformers.GPT2LMHeadModel, its KV cache against full
recomputation, and named shapes.

No pretrained GPT-2 exists offline, so the references are random GPT-2s saved with
`save_pretrained`: the shared tiny one, and a copy whose weights are redrawn with a larger
spread so greedy decoding wanders through the vocabulary instead of repeating one token
(a repeated token would make "the same 20 tokens" a weak check).
"""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2.models.presets import preset
from minigpt_ptv2.models.gpt2 import GPT2Decoder, GPT2Block
from minigpt_ptv2.core.masks import build_keep
from minigpt_ptv2.core.prompt_rows import keys_in_front
from minigpt_ptv2.prompts import KVPrefix
from minigpt_ptv2.trace import ShapeTrace
from tolerances import FP32_KERNELS, FP32_ULPS

transformers = pytest.importorskip("transformers")
NEW = 20  # tokens generated in the generation tests
# Generated tokens are compared exactly: they are argmaxes, equal whenever no step's two best
# logits lie within FP32_KERNELS of each other (the closest pair these tests meet is 1e-2 apart).


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def varied_gpt2_dir(gpt2_tiny_dir, tmp_path_factory):
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_tiny_dir).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() > 1:  # matrices (wte is tied to the LM head, so it is redrawn once)
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    path = tmp_path_factory.mktemp("gpt2_varied")
    hf.save_pretrained(path)
    return path


def load_pair(path):
    ours = GPT2Decoder.from_pretrained(path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    return ours, hf


@pytest.fixture(scope="module")
def tiny(gpt2_tiny_dir):
    return load_pair(gpt2_tiny_dir)


@pytest.fixture(scope="module")
def varied(varied_gpt2_dir):
    return load_pair(varied_gpt2_dir)


def right_padded(vocab, lengths, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), n), generator=g)  # [B, N]
    mask = (torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]).long()  # [B, N]
    return ids * mask, mask  # pads are token 0


def left_padded(vocab, lengths, n, seed=0):
    ids, mask = right_padded(vocab, lengths, n, seed)
    shift = [n - k for k in lengths]
    roll = lambda t: torch.stack([row.roll(s) for row, s in zip(t, shift)])  # noqa: E731
    return roll(ids), roll(mask)


# --- logits ----------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["tiny", "varied"])
def test_logits_match_gpt2lmheadmodel_right_padding(which, request):
    ours, hf = request.getfixturevalue(which)
    ids, mask = right_padded(ours.config.vocab_size, [12, 9, 4], 12)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits
        b = hf(ids, attention_mask=mask).logits
    assert a.shape == b.shape == (3, 12, ours.config.vocab_size)
    real = mask.bool()
    assert max_diff(a[real], b[real]) <= FP32_KERNELS


def test_attentions_and_loss_match(varied):
    ours, hf = varied
    ids, mask = right_padded(ours.config.vocab_size, [10, 7], 10, seed=1)
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, labels=labels, output_attentions=True)
        b = hf(ids, attention_mask=mask, labels=labels, output_attentions=True)
    real = mask.bool()
    assert max_diff(a.logits[real], b.logits[real]) <= FP32_KERNELS
    assert abs(a.loss.item() - b.loss.item()) <= FP32_KERNELS
    for i, (pa, pb) in enumerate(zip(a.attentions, b.attentions)):
        q = real[:, None, :, None].expand_as(pa)  # compare rows of real queries
        assert max_diff(pa[q], pb[q]) <= FP32_KERNELS, f"layer {i}"


def test_block0_matches(varied):
    """One pre-LN block alone, on the same hidden states, with HF's own causal mask."""
    from transformers.masking_utils import create_causal_mask
    ours, hf = varied
    b, n, D = 2, 8, ours.config.hidden_size
    x = torch.randn(b, n, D)  # [B, N, D]
    mask = torch.ones(b, n, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        hf_mask = create_causal_mask(config=hf.config, inputs_embeds=x, attention_mask=mask,
                                     past_key_values=None, position_ids=torch.arange(n)[None])
        ref = hf.transformer.h[0](x, attention_mask=hf_mask)
        ref = ref[0] if isinstance(ref, tuple) else ref
        out, _, _ = ours.layers[0](x, keep=build_keep(mask.bool(), n, causal=True))
    assert out.shape == ref.shape == (b, n, D)
    assert max_diff(out[0], ref[0]) <= FP32_KERNELS and max_diff(out[1, :6], ref[1, :6]) <= FP32_KERNELS


def test_tied_head_and_gelu_flavour(varied):
    """The LM head is wte itself (one tensor) and the FFN uses the tanh GELU, as GPT-2 does."""
    ours, hf = varied
    assert torch.equal(ours.wte.weight, hf.lm_head.weight)
    x = torch.linspace(-4, 4, 101)
    act = transformers.activations.ACT2FN[hf.config.activation_function]
    assert max_diff(torch.nn.functional.gelu(x, approximate="tanh"), act(x)) <= FP32_ULPS  # fused vs written out
    assert max_diff(torch.nn.functional.gelu(x), act(x)) > 1e-5  # erf GELU would be wrong here


# --- generation ------------------------------------------------------------------------------

def hf_greedy(hf, ids, mask):
    """HF greedy decoding of exactly NEW tokens: no eos stop (eos 0 is also our pad id)."""
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False,
                      eos_token_id=None, pad_token_id=0)
    assert out.shape == (ids.shape[0], ids.shape[1] + NEW), "HF stopped early or dropped the prompt"
    return out


@pytest.mark.parametrize("which", ["tiny", "varied"])
def test_greedy_generation_matches_hf(which, request):
    ours, hf = request.getfixturevalue(which)
    ids = torch.randint(1, ours.config.vocab_size, (3, 6), generator=torch.Generator().manual_seed(3))
    ref = hf_greedy(hf, ids, torch.ones_like(ids))
    out = ours.generate(ids, NEW)
    assert out.shape == (3, 6 + NEW)
    assert torch.equal(out[:, :6], ids)  # the prompt comes back first
    assert torch.equal(out, ref)


def test_varied_model_really_varies(varied):
    ours, _ = varied
    ids = torch.randint(1, ours.config.vocab_size, (3, 6), generator=torch.Generator().manual_seed(3))
    new = ours.generate(ids, NEW)[:, 6:]
    assert all(len(set(row.tolist())) >= 5 for row in new)


def test_left_padded_generation_matches_hf(varied):
    ours, hf = varied
    ids, mask = left_padded(ours.config.vocab_size, [7, 4, 2], 7, seed=4)
    ref = hf_greedy(hf, ids, mask)
    out = ours.generate(ids, NEW, attention_mask=mask)
    assert torch.equal(out, ref)


def test_left_padding_does_not_change_a_row(varied):
    """A left-padded row continues exactly as it would alone (positions count real tokens)."""
    ours, _ = varied
    ids, mask = left_padded(ours.config.vocab_size, [7, 3], 7, seed=5)
    batched = ours.generate(ids, NEW, attention_mask=mask)
    alone = ours.generate(ids[1:, 4:], NEW)
    assert torch.equal(batched[1, 4:], alone[0])


def test_eos_stops_and_fills(varied):
    """Rows that produced eos keep emitting it; the others are unaffected."""
    ours, _ = varied
    ids = torch.randint(1, ours.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(6))
    free = ours.generate(ids, NEW)
    eos = int(free[0, 5 + 2])  # a token row 0 produces early plays eos
    out = ours.generate(ids, NEW, eos_token_id=eos)
    assert out.shape[1] <= free.shape[1]
    for r in range(2):
        hits = (free[r, 5:] == eos).nonzero()
        end = 5 + int(hits[0]) if len(hits) else free.shape[1] - 1  # index of the first eos
        assert torch.equal(out[r, : end + 1], free[r, : end + 1])
        assert (out[r, end:] == eos).all() if len(hits) else out.shape[1] == free.shape[1]
    assert (free[0, 5:] == eos).nonzero()[0].item() <= 2


# --- KV cache == recomputation ---------------------------------------------------------------

@pytest.mark.parametrize("padded", [False, True])
def test_cached_step_logits_equal_full_recomputation(varied, padded):
    ours, _ = varied
    n0, T = 4, 14
    if padded:
        ids, mask = left_padded(ours.config.vocab_size, [T, T - 3], T, seed=7)
    else:
        ids = torch.randint(1, ours.config.vocab_size, (2, T), generator=torch.Generator().manual_seed(7))
        mask = torch.ones_like(ids)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, T]: positions count real tokens
    with torch.no_grad():
        full = ours(ids, attention_mask=mask, position_ids=pos).logits  # [B, T, V]
        step = ours(ids[:, :n0], attention_mask=mask[:, :n0], position_ids=pos[:, :n0], use_cache=True)
        real = mask[:, :n0].bool()  # a padding query's output is never used: compare real rows
        assert max_diff(step.logits[real], full[:, :n0][real]) <= FP32_KERNELS
        for t in range(n0, T):
            cache = step.cache
            assert cache.length == t
            step = ours(ids[:, t:t + 1], past=cache, use_cache=True)
            assert step.logits.shape == (2, 1, ours.config.vocab_size)
            assert mask[:, t].all()  # left padding: every fed token is real
            assert max_diff(step.logits[:, 0], full[:, t]) <= FP32_KERNELS, f"step {t}"


def test_cached_generation_equals_recomputation(varied):
    ours, _ = varied
    ids, mask = left_padded(ours.config.vocab_size, [6, 3, 5], 6, seed=8)
    a = ours.generate(ids, NEW, attention_mask=mask, use_cache=True)
    b = ours.generate(ids, NEW, attention_mask=mask, use_cache=False)
    assert torch.equal(a, b)


def test_cache_with_kv_prefix_equals_recomputation(varied):
    """With a K/V prefix, the first cache already holds the prefix: decoding still matches."""
    ours, _ = varied
    cfg = ours.config
    ours.attach(KVPrefix(cfg, 5))
    try:
        with torch.no_grad():
            ours.prompt.embedding.weight.normal_(0, 1.0)
        ids = torch.randint(1, cfg.vocab_size, (2, 6), generator=torch.Generator().manual_seed(9))
        a = ours.generate(ids, 10, use_cache=True)
        b = ours.generate(ids, 10, use_cache=False)
        with torch.no_grad():
            first = ours(ids, use_cache=True)
        assert first.cache.length == 5 + 6
    finally:
        ours.detach_prompt()
    assert torch.equal(a, b)
    assert not torch.equal(a, ours.generate(ids, 10)), "the prefix should change the continuation"


# --- named shapes ----------------------------------------------------------------------------

B, N, P = 16, 128, 20


def test_decoder_block_shapes_with_prefix_and_causal_mask():
    """One GPT-2-size block (D=768, H=12, d=64) with the seed walkthrough's B, N, P."""
    cfg = preset("gpt2")
    D, H, d = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
    block = GPT2Block(cfg, index=0).eval()
    keep = build_keep(keys_in_front(torch.ones(B, N, dtype=torch.bool), P), N, causal=True)
    assert keep.shape == (B, 1, N, P + N)
    prefix = torch.randn(B, H, P, d), torch.randn(B, H, P, d)  # [B, H, P, d] each
    with ShapeTrace() as tr, torch.no_grad():
        out, probs, (k, v) = block(torch.randn(B, N, D), keep=keep, prefix=prefix, need_weights=True, use_cache=True)
    s = tr.shapes()
    assert s["layer0.attn.q"] == (B, H, N, d)
    assert s["layer0.attn.k_with_prefix"] == (B, H, P + N, d)
    assert out.shape == (B, N, D) and probs.shape == (B, H, N, P + N)
    assert k.shape == v.shape == (B, H, P + N, d)
    # causal: query i sees the whole prefix and real tokens 0..i, nothing later
    assert probs[:, :, 0, P + 1:].abs().max().item() == 0.0
    assert probs[:, :, 0, :P + 1].sum(-1).min().item() > 0.999


@pytest.mark.parametrize("with_prefix", [False, True])
def test_whole_decoder_shapes(with_prefix):
    cfg = preset("gpt2-tiny")
    D, L, H, d, V = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
                     cfg.head_dim, cfg.vocab_size)
    b, n, p = 3, 7, 5
    model = GPT2Decoder(cfg).eval()
    if with_prefix:
        model.attach(KVPrefix(cfg, p))
    keys = p + n if with_prefix else n
    ids = torch.randint(0, V, (b, n))
    with ShapeTrace() as tr, torch.no_grad():
        out = model(ids, use_cache=True, output_attentions=True)
    s = tr.shapes()
    assert s["embeddings.out"] == (b, n, D)
    assert s["final.logits"] == out.logits.shape == (b, n, V)
    for i in range(L):
        assert s[f"layer{i}.attn.q"] == (b, H, n, d)
        assert out.attentions[i].shape == (b, H, n, keys)
        assert out.cache.layers[i][0].shape == out.cache.layers[i][1].shape == (b, H, keys, d)
    assert out.cache.key_mask.shape == (b, keys)
    assert out.cache.next_position.tolist() == [n] * b
    with ShapeTrace() as tr, torch.no_grad():
        nxt = model(ids[:, :1], past=out.cache, use_cache=True, output_attentions=True)
    assert tr.shapes()["layer0.attn.q"] == (b, H, 1, d)
    assert nxt.logits.shape == (b, 1, V) and nxt.attentions[0].shape == (b, H, 1, keys + 1)
    assert nxt.cache.length == keys + 1
