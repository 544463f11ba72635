"""The BERT encoder against transformers.BertModel on the shipped all-MiniLM-L6-v2, end to end
and per component (embeddings, layer 0, pooler), plus named-shape checks.

The batch is real text through the checkpoint's own tokenizer: a sentence pair (token types 0
and 1) next to shorter, right-padded rows, so padding and both token types are exercised.
"""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2.models.presets import preset
from minigpt_ptv2.models.bert import BertEncoder, BertLayer
from minigpt_ptv2.core.masks import build_keep
from minigpt_ptv2.core.prompt_rows import keys_in_front
from minigpt_ptv2.prompts import KVPrefix
from minigpt_ptv2.trace import ShapeTrace
from tolerances import FP32_KERNELS, FP32_ULPS

transformers = pytest.importorskip("transformers")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def models(minilm_dir):
    ours = BertEncoder.from_pretrained(minilm_dir)
    hf = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    return ours, hf


@pytest.fixture(scope="module")
def batch(minilm_dir):
    """input_ids, attention_mask, token_type_ids, each [B=3, N]."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.enable_padding(pad_id=0)
    enc = tok.encode_batch([("the movie was great", "i loved every minute of it"),
                            "a dull, tedious film", ("short", "pair")])
    ids, mask, types = (torch.tensor([getattr(e, f) for e in enc])
                        for f in ("ids", "attention_mask", "type_ids"))
    assert (mask == 0).any() and (types == 1).any() and len(set(mask.sum(1).tolist())) == 3
    return ids, mask, types


def test_matches_bertmodel_fused_path(models, batch):
    ours, hf = models
    ids, mask, types = batch
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, token_type_ids=types)
        b = hf(ids, attention_mask=mask, token_type_ids=types)
    assert a.attentions is None
    assert a.last_hidden_state.shape == b.last_hidden_state.shape
    assert max_diff(a.last_hidden_state, b.last_hidden_state) <= FP32_KERNELS
    assert max_diff(a.pooler_output, b.pooler_output) <= FP32_KERNELS


def test_matches_bertmodel_with_attentions(models, batch):
    """output_attentions=True takes the explicit path; its probabilities equal HF's."""
    ours, hf = models
    ids, mask, types = batch
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, token_type_ids=types, output_attentions=True)
        b = hf(ids, attention_mask=mask, token_type_ids=types, output_attentions=True)
    assert max_diff(a.last_hidden_state, b.last_hidden_state) <= FP32_KERNELS
    assert max_diff(a.pooler_output, b.pooler_output) <= FP32_KERNELS
    assert len(a.attentions) == len(b.attentions) == ours.config.num_hidden_layers
    for i, (pa, pb) in enumerate(zip(a.attentions, b.attentions)):
        assert pa.shape == pb.shape, i
        assert max_diff(pa, pb) <= FP32_KERNELS, f"layer {i}"


def test_token_types_and_padding_matter(models, batch):
    """Guard against a comparison that passes because an input is ignored on both sides."""
    ours, _ = models
    ids, mask, types = batch
    with torch.no_grad():
        ref = ours(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        no_types = ours(ids, attention_mask=mask).last_hidden_state
        no_mask = ours(ids, token_type_ids=types).last_hidden_state
    assert max_diff(ref[0], no_types[0]) > 1e-2  # row 0 has token type 1
    real = mask[1].bool()
    assert max_diff(ref[1][real], no_mask[1][real]) > 1e-2  # row 1 has padding


def test_embeddings_match(models, batch):
    ours, hf = models
    ids, _, types = batch
    B, N = ids.shape
    pos = torch.arange(N).expand(B, N)  # [B, N]
    with torch.no_grad():
        a = ours.embeddings(ids, types, pos)  # [B, N, D]
        b = hf.embeddings(input_ids=ids, token_type_ids=types)
    assert a.shape == (B, N, ours.config.hidden_size)
    assert max_diff(a, b) <= FP32_KERNELS


@pytest.mark.parametrize("need_weights", [False, True])
def test_layer0_matches(models, batch, need_weights):
    """Layer 0 alone, on the same hidden states and the same padding."""
    from transformers.masking_utils import create_bidirectional_mask
    ours, hf = models
    ids, mask, _ = batch
    B, N = ids.shape
    torch.manual_seed(0)
    x = torch.randn(B, N, ours.config.hidden_size)  # [B, N, D]
    with torch.no_grad():
        hf_mask = create_bidirectional_mask(config=hf.config, inputs_embeds=x, attention_mask=mask)
        b = hf.encoder.layer[0](x, attention_mask=hf_mask)
        b = b[0] if isinstance(b, tuple) else b
        a, probs, _ = ours.layers[0](x, keep=build_keep(mask.bool(), N), need_weights=need_weights)
    assert a.shape == b.shape == (B, N, ours.config.hidden_size)
    assert max_diff(a, b) <= FP32_KERNELS
    assert (probs is not None) == need_weights


def test_pooler_matches(models):
    ours, hf = models
    h = torch.randn(2, 5, ours.config.hidden_size)
    with torch.no_grad():
        assert max_diff(torch.tanh(ours.pooler(h[:, 0])), hf.pooler(h)) <= FP32_ULPS  # one Linear and a tanh


def test_pooler_reads_the_real_cls_and_padding_does_not_leak(models, batch):
    """Appending extra padding to a row must not change its real outputs."""
    ours, _ = models
    ids, mask, types = batch
    pad = torch.zeros(ids.shape[0], 4, dtype=ids.dtype)
    with torch.no_grad():
        a = ours(ids, mask, types)
        b = ours(torch.cat([ids, pad], 1), torch.cat([mask, pad], 1), torch.cat([types, pad], 1))
    for r in range(ids.shape[0]):
        real = mask[r].bool()
        assert max_diff(a.last_hidden_state[r][real], b.last_hidden_state[r, : ids.shape[1]][real]) <= FP32_KERNELS
    assert max_diff(a.pooler_output, b.pooler_output) <= FP32_KERNELS


# --- named shapes ----------------------------------------------------------------------------

B, N, P = 16, 128, 20  # the seed walkthrough, on one bert-base layer


@pytest.fixture(scope="module")
def bert_base_layer():
    cfg = preset("bert-base")
    return cfg, BertLayer(cfg, index=0).eval()


def test_encoder_layer_shapes_with_kv_prefix(bert_base_layer):
    cfg, layer = bert_base_layer
    D, H, d = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
    prefix = torch.randn(B, H, P, d), torch.randn(B, H, P, d)  # [B, H, P, d] each
    key_mask = torch.ones(B, N, dtype=torch.bool)
    key_mask[-1, N // 2:] = False  # one padded row
    keep = build_keep(keys_in_front(key_mask, P), N)  # [B, 1, 1, P+N]
    with ShapeTrace() as tr, torch.no_grad():
        out, probs, (k, v) = layer(torch.randn(B, N, D), keep=keep, prefix=prefix, need_weights=True, use_cache=True)
    s = tr.shapes()
    assert s["layer0.attn.q"] == (B, H, N, d)
    assert s["layer0.attn.k_with_prefix"] == s["layer0.attn.v_with_prefix"] == (B, H, P + N, d)
    assert s["layer0.attn.probs"] == (B, H, N, P + N)
    assert out.shape == (B, N, D) and probs.shape == (B, H, N, P + N)
    assert k.shape == v.shape == (B, H, P + N, d)
    assert probs[-1, :, :, P + N // 2:].abs().max().item() == 0.0  # padded keys get no weight


def test_encoder_layer_shapes_with_injected_prompt(bert_base_layer):
    """Inject, process, slice: the layer itself sees P+N rows and returns P+N rows."""
    cfg, layer = bert_base_layer
    D, H, d = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
    x = torch.cat([torch.randn(B, P, D), torch.randn(B, N, D)], dim=1)  # [B, P+N, D]
    with ShapeTrace() as tr, torch.no_grad():
        out, probs, _ = layer(x, keep=None, prefix=None, need_weights=True)
    s = tr.shapes()
    assert s["layer0.attn.q"] == s["layer0.attn.k"] == (B, H, P + N, d)
    assert "layer0.attn.k_with_prefix" not in s
    assert out.shape == (B, P + N, D) and probs.shape == (B, H, P + N, P + N)
    assert out[:, P:].shape == (B, N, D)


def test_embeddings_shape():
    cfg = preset("bert-tiny")
    model = BertEncoder(cfg).eval()
    b, n, D = 3, 7, cfg.hidden_size
    ids = torch.randint(0, cfg.vocab_size, (b, n))
    pos = torch.arange(n).expand(b, n)
    with torch.no_grad():
        x = model.embeddings(ids, torch.zeros_like(ids), pos)  # [B, N, D]
        rows = model.shallow_rows(torch.randn(b, 5, D), None)  # [B, P, D]
        xp = model.embed_finish(torch.cat([rows, model.embed_tokens(ids, pos)], dim=1))  # [B, P+N, D]
    assert x.shape == (b, n, D) and xp.shape == (b, 5 + n, D)


@pytest.mark.parametrize("with_prefix", [False, True])
def test_whole_encoder_shapes(with_prefix):
    cfg = preset("bert-tiny")
    D, L, H, d = cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.head_dim
    b, n, p = 3, 7, 5
    model = BertEncoder(cfg).eval()
    if with_prefix:
        model.attach(KVPrefix(cfg, p))
    ids = torch.randint(0, cfg.vocab_size, (b, n))
    keys = p + n if with_prefix else n
    with ShapeTrace() as tr, torch.no_grad():
        out = model(ids, attention_mask=torch.ones(b, n, dtype=torch.long), output_attentions=True)
    s = tr.shapes()
    assert s["embeddings.out"] == (b, n, D)
    for i in range(L):
        assert s[f"layer{i}.attn.q"] == (b, H, n, d)
        assert s[f"layer{i}.attn.probs"] == (b, H, n, keys)
        assert (f"layer{i}.attn.k_with_prefix" in s) == with_prefix
    assert out.last_hidden_state.shape == (b, n, D)
    assert out.pooler_output.shape == (b, D)
    assert len(out.attentions) == L and all(a.shape == (b, H, n, keys) for a in out.attentions)
