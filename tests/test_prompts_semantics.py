"""What the prompt methods mean, checked on the models' outputs.

- a masked-out prefix is a no-op; an all-zero prefix is not (pitfall 4);
- after `freeze_backbone`, gradients reach the prompt and nothing else (method_contract.py);
- positions: real tokens keep 0..N-1 by default, P..P+N-1 under "shifted", clear errors past
  the position table (pitfall 1);
- heads read real tokens: the pooler uses the real [CLS], outputs have N rows (pitfall 2);
- attention: every real token sees all P virtual entries, no later token and no padding.
"""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2 import GPT2Decoder, BertEncoder, ShapeTrace, preset
from minigpt_ptv2.core.attention import MultiHeadAttention
from minigpt_ptv2.core.masks import build_keep
from minigpt_ptv2.prompts import METHODS, KVPrefix, SoftPrompt, freeze_backbone, make_method
from method_contract import check_attention, check_gradients_reach_only_the_method, gates_read, move_off_start
from tolerances import EXACT, FP32_ULPS, FP64

P = 4
F64 = torch.float64  # equalities below hold to FP64: far below fp32's summation-order noise
SMALL = {"hidden": 16}  # the MLP / LSTM width of the reparameterised methods, to stay fast


def _small(name: str) -> dict:
    return SMALL if name in ("ptuning-mlp", "ptuning-lstm", "deep-mlp", "prefix-mlp") else {}


def _method(name: str, model, **kw):
    """A prompt method by name, in the model's dtype."""
    dtype = next(model.parameters()).dtype
    return make_method(name, model.config, P, **_small(name), **kw).to(dtype)


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return BertEncoder.from_pretrained(minilm_dir).eval()


@pytest.fixture(scope="module")
def gpt2(gpt2_tiny_dir):
    return GPT2Decoder.from_pretrained(gpt2_tiny_dir).eval()


@pytest.fixture(scope="module")
def minilm64(minilm_dir):
    return BertEncoder.from_pretrained(minilm_dir, dtype=F64).eval()


@pytest.fixture(scope="module")
def gpt2_64(gpt2_tiny_dir):
    return GPT2Decoder.from_pretrained(gpt2_tiny_dir, dtype=F64).eval()


@pytest.fixture(scope="module")
def bert_tiny():
    torch.manual_seed(3)
    return BertEncoder(preset("bert-tiny")).eval().to(F64)


@pytest.fixture(scope="module")
def gpt2_tiny_random():
    torch.manual_seed(4)
    return GPT2Decoder(preset("gpt2-tiny")).eval().to(F64)


def _batch(vocab: int, decoder: bool, B: int = 3, N: int = 10):
    """Token ids [B, N] with two padded rows: left padding for the decoder, right for the encoder."""
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(1, vocab, (B, N), generator=g)  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)
    for row, real in ((1, N - 3), (2, N // 2))[: B - 1]:
        if decoder:
            mask[row, : N - real] = 0
        else:
            mask[row, real:] = 0
    return ids, mask


def _outputs(model, ids, mask, method=None, **kw):
    """Run with `method` attached (None = plain) and leave the model plain again."""
    model.detach_prompt()
    if method is not None:
        model.attach(method)
    try:
        return model(ids, attention_mask=mask, **kw)
    finally:
        model.detach_prompt()


def _real(out, mask):
    """The real tokens' outputs (padding rows are garbage by design), as [#real, D or V]."""
    t = out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits
    return t[mask.bool()]


# --- 2. masked prefix: no-op; zero prefix: not -------------------------------------------------

@pytest.mark.parametrize("which", ["minilm64", "gpt2_64"])
@torch.no_grad()
def test_masked_out_prefix_is_a_no_op_but_a_zero_prefix_is_not(which, request, record_property):
    model = request.getfixturevalue(which)
    decoder = isinstance(model, GPT2Decoder)
    ids, mask = _batch(model.config.vocab_size, decoder)
    plain = _real(_outputs(model, ids, mask), mask)

    masked = KVPrefix(model.config, P, init_std=1.0).to(F64)
    masked.virtual_keep.fill_(False)  # real tokens may not attend to any prefix entry
    torch.testing.assert_close(_real(_outputs(model, ids, mask, masked), mask), plain,
                               atol=FP64, rtol=0)

    # A zero prefix is NOT masked: its keys score q.0 = 0, and exp(0) = 1 is a perfectly good
    # attention weight (only -inf would remove it). Each of the P zero keys takes a share of the
    # probability mass and contributes a zero value, so every real token's attention output is
    # diluted by Z / (Z + P), Z being the sum of exp(score) over its real keys.
    zero = KVPrefix(model.config, P).to(F64)
    zero.embedding.weight.zero_()
    gap = (_real(_outputs(model, ids, mask, zero), mask) - plain).abs().max().item()
    scale = plain.abs().max().item()
    print(f"{which}: zero prefix (P={P}) moves the outputs by up to {gap:.3g} (outputs up to {scale:.3g})")
    record_property("zero_prefix_max_change", gap)
    assert gap > 1e-3, f"a zero prefix should change the outputs, max change {gap:.2e}"
    assert gap > 0.01 * scale


@torch.no_grad()
def test_zero_prefix_dilutes_attention_exactly_by_the_prefix_mass():
    """The dilution in numbers, on one attention module: context_zero = (1 - m) * context_plain,
    where m = P / (Z + P) is the probability mass on the P zero keys."""
    attn = MultiHeadAttention(24, 4).eval()
    x = torch.randn(2, 6, 24)  # [B, N, D]
    zeros = (torch.zeros(2, 4, P, 6), torch.zeros(2, 4, P, 6))  # [B, H, P, d] each
    with ShapeTrace(keep=("attn.context",)) as plain_tr:
        attn(x)
    with ShapeTrace(keep=("attn.context",)) as zero_tr:
        _, probs, _ = attn(x, prefix=zeros, need_weights=True)  # probs [B, H, N, P+N]
    mass = probs[..., :P].sum(-1, keepdim=True)  # [B, H, N, 1]
    assert bool((mass > 0.1).all())  # not a tiny effect: the zero keys compete with real ones
    torch.testing.assert_close(zero_tr.tensors["attn.context"],
                               (1 - mass) * plain_tr.tensors["attn.context"], atol=FP32_ULPS, rtol=0)  # fp32 module


# --- 3. gradients reach only prompt parameters -------------------------------------------------

def _loss(model, ids, mask, decoder: bool):
    if decoder:
        return model(ids, attention_mask=mask, labels=ids).loss
    out = model(ids, attention_mask=mask)  # random read-outs: a plain sum of LayerNorm outputs has a near-zero gradient
    g = torch.Generator().manual_seed(5)
    return (out.last_hidden_state * torch.randn(out.last_hidden_state.shape, generator=g)).sum() \
        + (out.pooler_output * torch.randn(out.pooler_output.shape, generator=g)).sum()


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("which", ["minilm", "gpt2"])
def test_gradients_reach_only_the_prompt(which, name, request):
    """Every trainable tensor is the method's, and the gradient reaches it (method_contract.py)."""
    model = request.getfixturevalue(which)
    decoder = isinstance(model, GPT2Decoder)
    ids, mask = _batch(model.config.vocab_size, decoder, B=2, N=6)
    method = _method(name, model)
    model.attach(method)
    try:
        assert freeze_backbone(model) == method.num_trainable() > 0
        check_gradients_reach_only_the_method(model, method, lambda: _loss(model, ids, mask, decoder))
    finally:
        model.detach_prompt()
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None


# --- 5. positions ------------------------------------------------------------------------------

def _manual_encoder(model, ids, mask, start: int):
    """The plain encoder, written out, with real tokens at positions start..start+N-1."""
    B, N = ids.shape
    pos = torch.arange(start, start + N).expand(B, N)  # [B, N]
    x = model.embeddings(ids, torch.zeros_like(ids), pos)  # [B, N, D]
    keep = build_keep(mask.bool(), N)  # [B, 1, 1, N]
    for layer in model.layers:
        x = layer(x, keep=keep).hidden  # [B, N, D]
    return x


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_defaults_to_real_positions(name):
    assert make_method(name, preset("bert-tiny"), P, **_small(name)).positions == "real"


@pytest.mark.parametrize("positions", ["real", "shifted"])
@pytest.mark.parametrize("name", sorted(METHODS))
@torch.no_grad()
def test_positions_of_real_tokens_under_every_method(name, positions, bert_tiny, gpt2_tiny_random):
    """With every virtual entry masked out, the only trace a method leaves on the real tokens is
    the positions they were given: 0..N-1 ("real": the plain model) or P..P+N-1 ("shifted")."""
    for model in (bert_tiny, gpt2_tiny_random):
        decoder = isinstance(model, GPT2Decoder)
        ids, mask = _batch(model.config.vocab_size, decoder)
        method = _method(name, model, positions=positions)
        method.virtual_keep.fill_(False)
        B, N = ids.shape
        start = P if positions == "shifted" else 0
        got = _real(_outputs(model, ids, mask, method), mask)
        if decoder:
            pos = torch.arange(start, start + N).expand(B, N)  # [B, N]
            want = _real(_outputs(model, ids, mask, position_ids=pos), mask)
        else:
            want = _manual_encoder(model, ids, mask, start)[mask.bool()]
        torch.testing.assert_close(got, want, atol=FP64, rtol=0)
        if positions == "shifted":  # the shift is really visible: these are not the plain outputs
            assert (got - _real(_outputs(model, ids, mask), mask)).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(METHODS))
@torch.no_grad()
def test_embedding_rows_of_real_tokens_are_unchanged_by_the_method(name, bert_tiny, gpt2_tiny_random):
    """Traced: under the default policy, the real rows of `embeddings.out` equal the plain model's."""
    for model in (bert_tiny, gpt2_tiny_random):
        ids, mask = _batch(model.config.vocab_size, isinstance(model, GPT2Decoder))
        with ShapeTrace(keep=("embeddings.out",)) as plain:
            _outputs(model, ids, mask)
        with ShapeTrace(keep=("embeddings.out",)) as prompted:
            _outputs(model, ids, mask, _method(name, model))
        N = ids.shape[1]
        torch.testing.assert_close(prompted.tensors["embeddings.out"][:, -N:],
                                   plain.tensors["embeddings.out"], atol=EXACT, rtol=0)  # row by row: same kernel


@pytest.mark.parametrize("name", sorted(METHODS))
@torch.no_grad()
def test_position_table_limit_real_vs_shifted(name, bert_tiny, gpt2_tiny_random):
    for model in (bert_tiny, gpt2_tiny_random):
        M = model.config.max_position_embeddings
        full = torch.randint(1, model.config.vocab_size, (1, M))  # N = max positions
        real = _method(name, model)
        assert _outputs(model, full, None, real) is not None  # fits: real tokens use 0..M-1
        shifted = _method(name, model, positions="shifted")
        with pytest.raises(ValueError, match=rf"shift of P={P}") as err:
            _outputs(model, full, None, shifted)
        assert f"{M} rows" in str(err.value) and f"position {M + P - 1}" in str(err.value)
        _outputs(model, full[:, : M - P], None, shifted)  # M - P real tokens still fit


# --- 6. heads read the real tokens -------------------------------------------------------------

@torch.no_grad()
def test_pooler_reads_the_real_cls_after_a_shallow_prompt(bert_tiny):
    model = bert_tiny
    ids, mask = _batch(model.config.vocab_size, decoder=False)
    seen = {}
    hook = model.layers[-1].register_forward_hook(lambda mod, args, out: seen.update(full=out[0]))
    try:
        out = _outputs(model, ids, mask, SoftPrompt(model.config, P).to(F64))
    finally:
        hook.remove()
    full = seen["full"]  # [B, P+N, D]: the last layer sees the virtual rows too
    assert full.shape[1] == P + ids.shape[1]
    assert out.last_hidden_state.shape == (3, ids.shape[1], model.config.hidden_size)  # N rows
    torch.testing.assert_close(out.last_hidden_state, full[:, P:], atol=EXACT, rtol=0)  # a slice
    torch.testing.assert_close(out.pooler_output,
                               torch.tanh(model.pooler(out.last_hidden_state[:, 0])), atol=FP64, rtol=0)
    wrong = torch.tanh(model.pooler(full[:, 0]))  # [B, D]: pooling the first virtual token
    assert (out.pooler_output - wrong).abs().max() > 1e-2


@pytest.mark.parametrize("name", sorted(METHODS))
@torch.no_grad()
def test_token_level_outputs_have_N_rows(name, bert_tiny, gpt2_tiny_random):
    for model in (bert_tiny, gpt2_tiny_random):
        ids, mask = _batch(model.config.vocab_size, isinstance(model, GPT2Decoder))
        B, N = ids.shape
        out = _outputs(model, ids, mask, _method(name, model))
        if isinstance(model, BertEncoder):
            assert out.last_hidden_state.shape == (B, N, model.config.hidden_size)
            cls = out.last_hidden_state[:, 0]  # [B, D]: the real [CLS]
            torch.testing.assert_close(out.pooler_output, torch.tanh(model.pooler(cls)), atol=FP64, rtol=0)
        else:
            assert out.logits.shape == (B, N, model.config.vocab_size)


# --- 7. attention: all P virtual entries, nothing later, no padding ----------------------------

@pytest.mark.parametrize("name", sorted(METHODS))
@torch.no_grad()
def test_real_tokens_attend_to_every_virtual_entry_and_never_ahead_or_to_padding(name, gpt2, bert_tiny):
    """The probabilities each layer returns keep the contract (method_contract.check_attention)."""
    for model in (gpt2, bert_tiny):
        decoder = isinstance(model, GPT2Decoder)
        ids, mask = _batch(model.config.vocab_size, decoder)
        method = _method(name, model)
        move_off_start(method, seed=8)
        model.attach(method)
        gates = gates_read(model, method, ids.shape[0])
        out = _outputs(model, ids, mask, method, output_attentions=True)
        check_attention(out.attentions, mask, P, gates, causal=decoder)


def test_inference_forms_keep_the_mask_the_dtype_and_the_values():
    """KVPrefix.for_inference / PTuningV1.to_soft_prompt drop the MLP but nothing else."""
    from minigpt_ptv2.prompts import PTuningV1
    cfg = preset("bert-tiny")
    kv = KVPrefix(cfg, 3, projection=True).double()
    kv.virtual_keep[1] = False
    inf = kv.for_inference()
    assert inf.embedding.weight.dtype == torch.float64 and not inf.projection
    assert torch.equal(inf.virtual_keep, kv.virtual_keep)
    # the same MLP on the same weights, same kernels: exact, with no detour through float32
    assert torch.equal(inf.layer_kv(), kv.layer_kv())
    pt = PTuningV1(cfg, 3).double()
    pt.virtual_keep[0] = False
    soft = pt.to_soft_prompt()
    assert torch.equal(soft.virtual_keep, pt.virtual_keep)
    assert soft.weight.dtype == torch.float64 and torch.equal(soft.weight, pt.prompts())
