"""The LLaMA-style decoder against transformers.LlamaForCausalLM: logits, attentions, loss, one
block, greedy generation (left padding included), its KV cache against full recomputation, and
the pieces a learner compares with GPT-2 (RMSNorm, RoPE, SwiGLU, grouped K/V heads).

No pretrained LLaMA exists offline: the references are random LlamaForCausalLMs saved with
`save_pretrained` (conftest.py), with grouped K/V heads (H=4 query heads, H_kv=2).
"""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2.core.rotary import Rotary, rotate_half
from minigpt_ptv2.models import load_pretrained
from minigpt_ptv2.models.llama import LlamaConfig, LlamaDecoder, RMSNorm
from minigpt_ptv2.models.presets import preset
from minigpt_ptv2.trace import ShapeTrace, dims_for
from tolerances import FP32_KERNELS, FP32_REL, FP32_ULPS

transformers = pytest.importorskip("transformers")
config_from_hf = LlamaDecoder.config_from_hf
import reference as R  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
NEW = 20  # tokens generated in the generation tests
# The issue's bound for logits on a model at transformers' default init (|logits| ~ 0.5). The varied
# model's logits reach ~7, so there the whole-model bound FP32_KERNELS applies (obs 6.7e-6).
LOGITS_DEFAULT_INIT = 1e-5


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def tiny(llama_tiny_dir):
    return LlamaDecoder.from_pretrained(llama_tiny_dir), R.hf_llama(llama_tiny_dir)


@pytest.fixture(scope="module")
def varied(llama_varied_dir):
    return LlamaDecoder.from_pretrained(llama_varied_dir), R.hf_llama(llama_varied_dir)


def left_padded(V, lengths, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (len(lengths), n), generator=g)  # [B, N]
    mask = (torch.arange(n)[None, :] >= n - torch.tensor(lengths)[:, None]).long()  # [B, N]: pads first
    return ids * mask, mask


def hf_greedy(hf, ids, mask):
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, eos_token_id=None,
                      pad_token_id=0)
    assert out.shape == (ids.shape[0], ids.shape[1] + NEW), "HF stopped early or dropped the prompt"
    return out


# --- the model against transformers ------------------------------------------------------------

def test_loads_with_grouped_kv_heads_and_an_untied_head(tiny):
    ours, hf = tiny
    c = ours.config
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (4, 2, 10)
    assert ours.layers[0].attn.qkv.weight.shape == (40, (4 + 2 * 2) * 10)  # [D, (H + 2 H_kv) d]
    assert ours.lm_head is not None and not torch.equal(ours.lm_head.weight, ours.tok_embeddings.weight)
    assert all(m.bias is None for layer in ours.layers for m in (layer.attn.qkv, layer.attn.output,
                                                                 layer.ffn_in, layer.ffn_out))


@pytest.mark.parametrize("which, bound", [("tiny", LOGITS_DEFAULT_INIT), ("varied", FP32_KERNELS)])
def test_logits_match_llamaforcausallm(which, bound, request):
    ours, hf = request.getfixturevalue(which)
    ids = torch.randint(0, ours.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours(ids).logits, hf(ids).logits
    assert a.shape == b.shape == (3, 12, ours.config.vocab_size)
    assert max_diff(a, b) <= bound
    with torch.no_grad():  # the comparison can fail: a one-token change moves the logits
        assert max_diff(ours(ids.roll(1, dims=1)).logits, b) > 1e-2


def test_attentions_and_loss_match_with_left_padding(varied):
    ours, hf = varied
    ids, mask = left_padded(ours.config.vocab_size, [10, 6], 10, seed=2)
    labels = ids.masked_fill(mask == 0, -100)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, N]: real tokens count from 0, as generate does
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, position_ids=pos, labels=labels, output_attentions=True)
        b = hf(ids, attention_mask=mask, position_ids=pos, labels=labels, output_attentions=True)
    real = mask.bool()
    assert max_diff(a.logits[real], b.logits[real]) <= FP32_KERNELS
    assert abs(a.loss.item() - b.loss.item()) <= FP32_KERNELS
    for i, (pa, pb) in enumerate(zip(a.attentions, b.attentions)):
        assert pa.shape == pb.shape == (2, 4, 10, 10)  # [B, H, N, N]: H query heads, not H_kv
        q = real[:, None, :, None].expand_as(pa)
        assert max_diff(pa[q], pb[q]) <= FP32_KERNELS, f"layer {i}"


def test_block0_matches(varied):
    """One block alone on the same hidden states: RMSNorm, RoPE at the given positions, GQA, SwiGLU."""
    ours, hf = varied
    B, N, D = 2, 7, ours.config.hidden_size
    x = torch.randn(B, N, D)  # [B, N, D]
    pos = torch.arange(3, 3 + N)[None]  # [1, N]: not starting at 0, so a missing rotation shows
    with torch.no_grad():
        cos_sin = hf.model.rotary_emb(x, pos)
        causal = torch.full((N, N), torch.finfo(x.dtype).min).triu(1)[None, None]  # [1, 1, N, N]
        ref = hf.model.layers[0](x, attention_mask=causal, position_embeddings=cos_sin, position_ids=pos)
        ref = ref[0] if isinstance(ref, tuple) else ref
        from minigpt_ptv2.core.masks import build_keep
        out = ours.layers[0](x, keep=build_keep(torch.ones(B, N, dtype=torch.bool), N, causal=True),
                             positions=pos).hidden
    assert out.shape == ref.shape == (B, N, D)
    assert max_diff(out, ref) <= FP32_KERNELS


def test_rmsnorm_rope_and_swiglu_pieces(varied):
    ours, hf = varied
    x = torch.randn(3, 5, 40) * 4
    assert max_diff(ours.layers[1].attn_norm(x), hf.model.layers[1].input_layernorm(x)) <= FP32_ULPS
    # RMSNorm subtracts no mean: a shifted input is not normalised back, as LayerNorm would
    norm = RMSNorm(40, 1e-6)
    assert max_diff(norm(x + 3.0), norm(x)) > 0.1
    # RoPE: the rotate-half convention, and a score that depends only on the distance
    assert torch.equal(rotate_half(torch.tensor([1., 2., 3., 4.])), torch.tensor([-3., -4., 1., 2.]))
    rot = Rotary(10, 10000.0)
    q, k = torch.randn(1, 1, 1, 10), torch.randn(1, 1, 1, 10)

    def score(i, j):
        return float(rot(q, torch.tensor([[i]])) @ rot(k, torch.tensor([[j]])).transpose(-1, -2))
    assert abs(score(7, 3) - score(24, 20)) <= FP32_ULPS * 10  # both 4 apart
    assert abs(score(7, 3) - score(7, 4)) > 1e-3
    cos, sin = hf.model.rotary_emb(q, torch.arange(9)[None])
    our_cos, our_sin = rot.cos_sin(torch.arange(9)[None], torch.float32)
    assert torch.equal(our_cos[:, 0], cos) and torch.equal(our_sin[:, 0], sin)  # same float32 angles
    # SwiGLU: down(silu(gate) * up), with gate and up fused side by side
    h = torch.randn(2, 3, 40)
    mlp = hf.model.layers[2].mlp
    # fused [gate | up] product vs two: the same sums split otherwise; outputs up to ~10
    torch.testing.assert_close(ours.layers[2].feed_forward(h), mlp(h), atol=FP32_ULPS, rtol=FP32_REL)


def test_tied_embeddings_read_logits_off_the_input_table(tmp_path):
    hf, path = R.hf_llama_tiny(tmp_path, seed=3, tie_word_embeddings=True, initializer_range=0.3)
    ours = load_pretrained(path)
    assert ours.lm_head is None and ours.lm_head_weight() is ours.tok_embeddings.weight
    ids = torch.randint(0, 140, (2, 9))
    with torch.no_grad():
        assert max_diff(ours(ids).logits, hf(ids).logits) <= FP32_KERNELS


def test_head_dim_of_its_own_and_no_grouping(tmp_path):
    """head_dim need not be D/H (H*d = 48 != D = 40), and H_kv = H is plain multi-head attention."""
    hf, path = R.hf_llama_tiny(tmp_path, seed=5, head_dim=12, num_key_value_heads=4, initializer_range=0.3)
    ours = load_pretrained(path)
    assert ours.config.dims() == {"D": 40, "L": 3, "H": 4, "H_kv": 4, "d": 12}
    ids = torch.randint(0, 140, (2, 9))
    with torch.no_grad():
        assert max_diff(ours(ids).logits, hf(ids).logits) <= FP32_KERNELS


# --- generation --------------------------------------------------------------------------------

def test_greedy_generation_matches_hf_with_left_padding(varied):
    ours, hf = varied
    for ids, mask in [left_padded(140, [8, 8, 8], 8, seed=3), left_padded(140, [8, 5, 2], 8, seed=4)]:
        ref = hf_greedy(hf, ids, mask)
        out = ours.generate(ids, NEW, attention_mask=mask)
        assert torch.equal(out, ref), f"ours {out[:, 8:].tolist()}\nHF   {ref[:, 8:].tolist()}"
        assert len(set(out[0, 8:].tolist())) > 5  # varied text, so agreement is informative
    alone = ours.generate(ids[2:, 6:], NEW)  # the row padded with 6 pads, unpadded
    assert torch.equal(out[2:, 6:], alone)


def test_kv_cache_decoding_equals_recomputation_and_holds_h_kv_heads(varied):
    ours, _ = varied
    ids, mask = left_padded(140, [7, 4], 7, seed=5)
    assert torch.equal(ours.generate(ids, NEW, attention_mask=mask),
                       ours.generate(ids, NEW, attention_mask=mask, use_cache=False))
    with torch.no_grad():
        out = ours(ids, attention_mask=mask, use_cache=True)
    k, v = out.cache.layers[0]
    assert k.shape == v.shape == (2, 2, 7, 10)  # [B, H_kv, N, d]: half of [B, H, N, d]
    with torch.no_grad():  # one cached step equals the same position recomputed
        nxt = torch.tensor([[5], [9]])
        step = ours(nxt, past=out.cache, use_cache=True).logits[:, -1]
        full_mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
        pos = (full_mask.cumsum(-1) - 1).clamp(min=0)
        full = ours(torch.cat([ids, nxt], 1), attention_mask=full_mask, position_ids=pos).logits[:, -1]
    assert max_diff(step, full) <= FP32_KERNELS


def test_shape_trace_names_grouped_heads(tiny):
    ours, _ = tiny
    ids = torch.randint(0, 140, (2, 6))
    with ShapeTrace(dims=dims_for(ours.config, B=2, N=6)) as tr:
        with torch.no_grad():
            ours(ids)
    shapes = tr.shapes()
    assert shapes["layer0.attn.q"] == (2, 4, 6, 10)
    spelled = {name: tr.letters(shapes[name], name) for name in ("layer0.attn.q", "layer0.attn.k", "final.logits")}
    assert spelled == {"layer0.attn.q": "[B, H, N, d]", "layer0.attn.k": "[B, H_kv, N, d]",
                       "final.logits": "[B, N, V]"}


# --- config.json -------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, needle", [
    ("hidden_act", "gelu", "hidden_act='gelu' is not supported"),
    ("rope_parameters", {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0},
     "rope_type 'llama3' takes factor, low_freq_factor, high_freq_factor, original_max_position_embeddings; "
     "missing ['high_freq_factor', 'low_freq_factor']"),
    ("rope_scaling", {"type": "dynamic", "factor": 2.0}, "rope_type 'dynamic' is not implemented"),
    ("pretraining_tp", 2, "pretraining_tp=2"),
    ("num_key_value_heads", 3, "num_key_value_heads=3 must divide num_attention_heads=4"),
    ("head_dim", 9, "head_dim=9 must be even"),
    ("num_key_value_heads", "2", "num_key_value_heads"),
])
def test_configs_that_would_compute_something_else_are_refused_by_name(field, value, needle):
    hf = {"model_type": "llama", **R.TINY_LLAMA, field: value}
    if field == "rope_scaling":
        hf.pop("rope_parameters", None)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        config_from_hf(hf, "x/config.json")


def test_nulls_and_older_spellings_mean_what_they_mean_in_transformers():
    base = {"model_type": "llama", **R.TINY_LLAMA}
    cfg = config_from_hf({**base, "head_dim": None, "num_key_value_heads": None})
    assert (cfg.head_dim, cfg.num_key_value_heads) == (10, 4)  # D/H and H
    assert config_from_hf({**base, "rope_theta": 5e5, "rope_scaling": None}).rope_theta == 5e5  # transformers 4
    assert config_from_hf({**base, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}).rope_theta == 1e6
    # a field left out means transformers' default, not ours: LlamaConfig() is transformers' LlamaConfig()
    hf_default = transformers.LlamaConfig()
    ours = LlamaConfig()
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings"):
        assert getattr(ours, name) == getattr(hf_default, name), name


def test_the_1b_preset_has_llama_3_2_1b_parameter_count():
    from minigpt_ptv2.prompts.registry import backbone_parameters
    assert backbone_parameters(preset("llama-1b")) == 1_235_814_400
