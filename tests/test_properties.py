"""Property-based equivalence: the project's claims, checked on configurations nobody picked.

Hypothesis draws small configs (D = H * d, L, D_ff, vocabulary, LayerNorm eps), shapes (B, N, P)
and padding patterns (left or right, rows of any length, fully padded rows where that is
meaningful), and each test states one claim:

  1. the explicit and the fused attention paths compute one function (prefix, padding, causal);
  2. the bridge: a DeepPrompt and `hidden_to_kv(model, deep)` give every row the same output,
     in the encoder and in the decoder;
  3. decoding with the KV cache gives the logits of recomputing the whole sequence, with every
     kind of prompt attached;
  4. our BertEncoder / GPT2Decoder equal transformers' BertModel / GPT2LMHeadModel on random weights,
     saved with `save_pretrained` and read back by our loader.

Examples are derandomized (the same ones every run, no example database), so a failure
reproduces exactly; hypothesis prints the shrunk counterexample.
"""
from __future__ import annotations

import functools
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigpt_ptv2 import GPT2Decoder, GPT2Config, BertEncoder, BertConfig
from minigpt_ptv2.core.attention import MultiHeadAttention
from minigpt_ptv2.core.masks import build_keep
from minigpt_ptv2.core.prompt_rows import keys_in_front
from minigpt_ptv2.prompts import DeepPrompt, hidden_to_kv, make_method
from tolerances import PROPERTY

transformers = pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.py


def examples(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


# --- strategies ------------------------------------------------------------------------------

heads = st.tuples(st.integers(1, 4), st.sampled_from([1, 2, 4, 6, 8]))  # (H, d)


@st.composite
def configs(draw, kind: str):
    """A small random BertConfig or GPT2Config (dropout off: eval-mode equivalence)."""
    H, d = draw(heads)
    common = dict(vocab_size=draw(st.integers(5, 60)), hidden_size=H * d,
                  num_hidden_layers=draw(st.integers(1, 3)), num_attention_heads=H,
                  intermediate_size=draw(st.integers(2, 40)), max_position_embeddings=32,
                  layer_norm_eps=draw(st.sampled_from([1e-12, 1e-5, 1e-2])),
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if kind == "bert":
        return BertConfig(type_vocab_size=draw(st.integers(1, 3)), **common)
    return GPT2Config(bos_token_id=0, eos_token_id=0, **common)


@st.composite
def padding(draw, max_b: int = 3, max_n: int = 8, allow_empty: bool = False):
    """(B, N, lengths, left): B rows of N slots, row b holding lengths[b] real tokens."""
    B, N = draw(st.integers(1, max_b)), draw(st.integers(1, max_n))
    lengths = draw(st.lists(st.integers(0 if allow_empty else 1, N), min_size=B, max_size=B))
    return B, N, lengths, draw(st.booleans())


def key_mask(N: int, lengths, left: bool) -> torch.Tensor:
    """[B, N] bool: True on the real tokens, padding on the left or on the right."""
    slot, real = torch.arange(N)[None, :], torch.tensor(lengths)[:, None]  # [1, N], [B, 1]
    return slot >= N - real if left else slot < real


def positions(mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """[B, N] -> positions counting real tokens only (the HF convention for left padding)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0) + offset


def jitter_(model: torch.nn.Module, seed: int, scale: float = 0.3) -> torch.nn.Module:
    """Move every parameter (LayerNorm gains and all biases included) off its default init, so a
    swapped or dropped weight cannot hide behind a 1 or a 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a, b, **PROPERTY, msg=lambda m: f"{what}: {m}")


# --- 1. explicit == fused attention ----------------------------------------------------------

@examples(150)
@given(hd=heads, shape=padding(allow_empty=True), P=st.integers(0, 5), causal=st.booleans(),
       prefix_kept=st.sampled_from(["all", "some", "none"]), seed=st.integers(0, 2**16))
def test_explicit_and_fused_attention_agree(hd, shape, P, causal, prefix_kept, seed):
    (H, d), (B, N, lengths, left) = hd, shape
    torch.manual_seed(seed)
    attn = MultiHeadAttention(H * d, H).eval()
    x = torch.randn(B, N, H * d)  # [B, N, D]
    keys = key_mask(N, lengths, left)  # [B, N]
    prefix = None
    if P:
        prefix = (torch.randn(B, H, P, d), torch.randn(B, H, P, d))  # [B, H, P, d] each
        virtual = {"all": torch.ones(P), "none": torch.zeros(P), "some": torch.rand(P) < 0.5}[prefix_kept]
        keys = keys_in_front(keys, virtual.bool())  # [B, P+N]
    keep = build_keep(keys, N, causal)  # [B, 1, N or 1, P+N] or None
    with torch.no_grad():
        fused, none, kv_fused = attn(x, keep=keep, prefix=prefix, use_cache=True)
        explicit, probs, kv_explicit = attn(x, keep=keep, prefix=prefix, need_weights=True, use_cache=True)  # probs [B, H, N, P+N]
    assert none is None and probs.shape == (B, H, N, P + N)
    close(fused, explicit, "fused vs explicit output")
    assert torch.equal(kv_fused[0], kv_explicit[0]) and kv_fused[0].shape == (B, H, P + N, d)  # one projection
    close(probs.sum(-1), torch.ones(B, H, N), "probability rows")
    if keep is not None:  # a row with any visible key puts no weight on a hidden one
        keep4 = keep.expand(B, H, N, P + N)
        has_any = keep4.any(-1, keepdim=True)
        assert (probs[~keep4 & has_any] == 0).all()


# --- 2. the bridge: hidden-state prompts are tied K/V prefixes -------------------------------

@examples(80)
@given(kind=st.sampled_from(["bert", "gpt2"]), data=st.data(), shape=padding(), P=st.integers(1, 5),
       where=st.sampled_from(["real", "shifted"]), seed=st.integers(0, 2**16))
def test_deep_prompt_equals_its_bridged_prefix(kind, data, shape, P, where, seed):
    cfg = data.draw(configs(kind))
    B, N, lengths, left = shape
    torch.manual_seed(seed)
    model = jitter_((BertEncoder if kind == "bert" else GPT2Decoder)(cfg), seed).eval()
    deep = DeepPrompt(cfg, P, init_std=1.0, positions=where)
    deep.virtual_keep.copy_(torch.rand(P) < 0.7)  # some virtual entries may be masked out
    ids = torch.randint(0, cfg.vocab_size, (B, N))
    mask = key_mask(N, lengths, left).long()
    with torch.no_grad():
        a = model.attach(deep)(ids, mask)
        b = model.attach(hidden_to_kv(model, deep))(ids, mask)
    if kind == "bert":
        close(a.last_hidden_state, b.last_hidden_state, "last_hidden_state")
        close(a.pooler_output, b.pooler_output, "pooler_output")
    else:
        close(a.logits, b.logits, "logits")


# --- 3. KV cache == recomputation ------------------------------------------------------------

@examples(60)
@given(data=st.data(), shape=padding(max_n=6), new=st.integers(1, 4),
       method=st.sampled_from([None, "soft", "ptuning-mlp", "deep", "prefix", "prefix-mlp"]),
       P=st.integers(1, 4), where=st.sampled_from(["real", "shifted"]), seed=st.integers(0, 2**16))
def test_cached_decoding_equals_recomputation(data, shape, new, method, P, where, seed):
    cfg = data.draw(configs("gpt2"))
    B, N, lengths, left = shape
    torch.manual_seed(seed)
    model = jitter_(GPT2Decoder(cfg), seed).eval()
    if method is not None:
        model.attach(jitter_(make_method(method, cfg, P, positions=where), seed + 1))
    offset = model.prompt.position_offset() if model.prompt is not None else 0
    prompt_mask = key_mask(N, lengths, left).long()  # [B, N]
    ids = torch.randint(0, cfg.vocab_size, (B, N + new))  # prompt, then `new` fed one at a time
    mask = torch.cat([prompt_mask, torch.ones(B, new, dtype=torch.long)], dim=1)  # [B, N+new]
    with torch.no_grad():
        full = model(ids, attention_mask=mask, position_ids=positions(mask, offset)).logits  # [B, N+new, V]
        step = model(ids[:, :N], attention_mask=prompt_mask, position_ids=positions(prompt_mask, offset),
                     use_cache=True)
        real = prompt_mask.bool()  # a padding query's output is never used
        close(step.logits[real], full[:, :N][real], "prompt step")
        last = model(ids[:, :N], attention_mask=prompt_mask, position_ids=positions(prompt_mask, offset),
                     logits_to_keep=1).logits  # [B, 1, V]: what generation reads
        close(last, step.logits[:, -1:], "logits_to_keep=1")
        for t in range(N, N + new):
            step = model(ids[:, t:t + 1], past=step.cache, use_cache=True)
            close(step.logits[:, 0], full[:, t], f"cached step {t - N}")
    assert step.cache.length == N + new + (P if method is not None else 0)


# --- 4. ours == transformers on random weights -----------------------------------------------

@functools.lru_cache(maxsize=16)
def saved_pair(kind: str, cfg, seed: int):
    """A random transformers model for `cfg` (every parameter jittered), saved with
    save_pretrained and loaded back by our loader: (hf model, our model), both in eval mode."""
    torch.manual_seed(seed)
    c = cfg
    if kind == "bert":
        hf_cfg = transformers.BertConfig(
            vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
            max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
            layer_norm_eps=c.layer_norm_eps, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        hf = transformers.BertModel(hf_cfg)
    else:
        hf_cfg = transformers.GPT2Config(
            vocab_size=c.vocab_size, n_embd=c.hidden_size, n_layer=c.num_hidden_layers,
            n_head=c.num_attention_heads, n_inner=c.intermediate_size, n_positions=c.max_position_embeddings,
            layer_norm_epsilon=c.layer_norm_eps, resid_pdrop=0.0, attn_pdrop=0.0, embd_pdrop=0.0,
            bos_token_id=0, eos_token_id=0)
        hf = transformers.GPT2LMHeadModel(hf_cfg)
    jitter_(hf, seed).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = (BertEncoder if kind == "bert" else GPT2Decoder).from_pretrained(tmp)
    assert ours.config == cfg, "config.json must map back onto the config it was made from"
    return hf, ours.eval()


@examples(50)
@given(cfg=configs("bert"), shape=padding(), attentions=st.booleans(), seed=st.integers(0, 3))
def test_encoder_equals_bertmodel_on_random_weights(cfg, shape, attentions, seed):
    hf, ours = saved_pair("bert", cfg, seed)
    B, N, lengths, left = shape
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (B, N), generator=g)
    types = torch.randint(0, cfg.type_vocab_size, (B, N), generator=g)
    mask = key_mask(N, lengths, left).long()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = ours(ids, mask, types, output_attentions=attentions)  # explicit path when True
    close(out.last_hidden_state, ref.last_hidden_state, "last_hidden_state")
    close(out.pooler_output, ref.pooler_output, "pooler_output")


@examples(50)
@given(cfg=configs("gpt2"), shape=padding(), attentions=st.booleans(), seed=st.integers(0, 3))
def test_decoder_equals_gpt2lmheadmodel_on_random_weights(cfg, shape, attentions, seed):
    hf, ours = saved_pair("gpt2", cfg, seed)
    B, N, lengths, left = shape
    ids = torch.randint(0, cfg.vocab_size, (B, N), generator=torch.Generator().manual_seed(seed))
    mask = key_mask(N, lengths, left).long()
    pos = positions(mask)
    labels = ids.masked_fill(mask == 0, -100)  # no loss on padding ...
    labels[:, 1:] = labels[:, 1:].masked_fill(mask[:, :-1] == 0, -100)  # ... nor read from a padding row
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, position_ids=pos, labels=labels)
        out = ours(ids, mask, position_ids=pos, labels=labels, output_attentions=attentions)
    real = mask.bool()  # a padding query's row is never used (left padding: it may see no key)
    close(out.logits[real], ref.logits[real], "logits")
    if bool(labels[:, 1:].ne(-100).any()):
        close(out.loss, ref.loss, "loss")
