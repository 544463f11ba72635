"""The bridge between the two deep styles, checked on real weights.

Injecting a hidden-state prompt h [P, D] before every layer and slicing the prompt rows off
afterwards gives the real tokens exactly what a K/V prefix gives with

    K = f(h) W_K + b_K,   V = f(h) W_V + b_V     (f = identity for post-LN BERT,
                                                  f = the block's ln_1 for pre-LN GPT-2)

because the real tokens only ever read the prompt rows' keys and values. The K/V below are
built by hand from each layer's weights, so the test does not merely trust `hidden_to_kv`.
The converse fails: a prefix whose K and V come from different h is not a hidden-state prompt.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minigpt_ptv2 import GPT2Decoder, BertEncoder
from minigpt_ptv2.prompts import DeepPrompt, KVPrefix, hidden_to_kv
from tolerances import FP32_KERNELS, FP32_REL, FP32_ULPS, FP64

P = 5


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return BertEncoder.from_pretrained(minilm_dir).eval()


@pytest.fixture(scope="module")
def decoder(gpt2_tiny_dir):
    return GPT2Decoder.from_pretrained(gpt2_tiny_dir).eval()


def _batch(vocab: int, left_pad: bool):
    """Three rows of 12 tokens; rows 1 and 2 are padded (on the right for BERT, left for GPT-2)."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(1, vocab, (3, 12), generator=g)  # [B, N]
    mask = torch.ones_like(ids)
    for row, real in ((1, 8), (2, 5)):
        if left_pad:
            mask[row, : 12 - real] = 0
        else:
            mask[row, real:] = 0
    return ids, mask


def _by_hand(model, h: torch.Tensor) -> torch.Tensor:
    """h [L, P, D] -> kv [L, 2, H, P, d], written out from each layer's own Linear weights."""
    H, d = model.config.num_attention_heads, model.config.head_dim
    out = []
    for i, layer in enumerate(model.layers):
        x = layer.ln_1(h[i]) if isinstance(model, GPT2Decoder) else h[i]  # f(h): [P, D]
        W, b = layer.attn.qkv.weight, layer.attn.qkv.bias  # [D, 3D] = [W_Q | W_K | W_V], [3D]
        D = H * d
        k = x @ W[:, D:2 * D] + b[D:2 * D]  # [P, D]
        v = x @ W[:, 2 * D:] + b[2 * D:]  # [P, D]
        k = k.view(-1, H, d).transpose(0, 1)  # [H, P, d]
        v = v.view(-1, H, d).transpose(0, 1)  # [H, P, d]
        out.append(torch.stack([k, v]))  # [2, H, P, d]
    return torch.stack(out)  # [L, 2, H, P, d]


def _run(model, method, ids, mask):
    """The real tokens' outputs under `method` (None = plain model), as one flat tensor."""
    if method is None:
        model.detach_prompt()
    else:
        model.attach(method)
    try:
        out = model(ids, attention_mask=mask)
    finally:
        model.detach_prompt()
    if isinstance(model, BertEncoder):
        return torch.cat([out.last_hidden_state.flatten(), out.pooler_output.flatten()])
    return out.logits.flatten()


MODELS = ["encoder", "decoder"]


@pytest.mark.parametrize("which", MODELS)
@torch.no_grad()
def test_inject_process_slice_equals_kv_prefix_built_by_hand(which, request):
    model = request.getfixturevalue(which)
    ids, mask = _batch(model.config.vocab_size, left_pad=which == "decoder")
    deep = DeepPrompt(model.config, P, init_std=1.0)  # hidden states of BERT are O(1) after LN
    kv = _by_hand(model, deep.layer_prompts())  # [L, 2, H, P, d]
    prefix = KVPrefix.from_layer_kv(model.config, kv)

    plain = _run(model, None, ids, mask)
    with_deep = _run(model, deep, ids, mask)
    with_prefix = _run(model, prefix, ids, mask)
    # The equality below would be trivial if the prompt did nothing: its effect on the outputs
    # must be far larger than the tolerance (measured: ~2 for MiniLM, ~0.05 for tiny GPT-2).
    assert (with_deep - plain).abs().max() > 1000 * FP32_KERNELS
    # the two paths sum the same products in another order, through every layer
    torch.testing.assert_close(with_prefix, with_deep, atol=FP32_KERNELS, rtol=0)


@pytest.mark.parametrize("which", MODELS)
@torch.no_grad()
def test_hidden_to_kv_matches_the_hand_built_prefix(which, request):
    model = request.getfixturevalue(which)
    deep = DeepPrompt(model.config, P, init_std=1.0)
    deep.virtual_keep[1] = False  # the keep mask travels with the prompt
    converted = hidden_to_kv(model, deep)
    assert isinstance(converted, KVPrefix)
    torch.testing.assert_close(converted.layer_kv(), _by_hand(model, deep.layer_prompts()),
                               atol=FP32_ULPS, rtol=FP32_REL)  # one [D, 3D] product vs [D, D] slices
    assert converted.virtual_keep.tolist() == deep.virtual_keep.tolist()
    assert converted.positions == deep.positions


@pytest.mark.parametrize("which", MODELS)
@torch.no_grad()
def test_hidden_to_kv_works_through_the_mlp_reparameterisation(which, request):
    """deep-mlp's prompts come out of an MLP; the bridge reads the MLP's output [L, P, D]."""
    model = request.getfixturevalue(which)
    ids, mask = _batch(model.config.vocab_size, left_pad=which == "decoder")
    deep = DeepPrompt(model.config, P, reparam=True, hidden=16).eval()
    torch.testing.assert_close(_run(model, hidden_to_kv(model, deep), ids, mask),
                               _run(model, deep, ids, mask), atol=FP32_KERNELS, rtol=0)


@pytest.mark.parametrize("which", MODELS)
@torch.no_grad()
def test_untied_prefix_is_not_a_hidden_state_prompt(which, request):
    """K from h1 and V from h2 != h1: the result differs from the deep prompt h1 and from h2.

    The gaps are far outside the tolerance at which the tied prefix matched (measured on tiny
    random GPT-2: ~5e-2 against h1, whose V differs, and ~7e-4 against h2, whose K differs; keys
    matter little there because its 0.02-scale weights keep attention scores near 0)."""
    model = request.getfixturevalue(which)
    ids, mask = _batch(model.config.vocab_size, left_pad=which == "decoder")
    d1 = DeepPrompt(model.config, P, init_std=1.0)
    d2 = DeepPrompt(model.config, P, init_std=1.0)
    kv1, kv2 = _by_hand(model, d1.layer_prompts()), _by_hand(model, d2.layer_prompts())
    mixed = torch.stack([kv1[:, 0], kv2[:, 1]], dim=1)  # [L, 2, H, P, d]: K from h1, V from h2
    out_mixed = _run(model, KVPrefix.from_layer_kv(model.config, mixed), ids, mask)
    for deep in (d1, d2):
        gap = (out_mixed - _run(model, deep, ids, mask)).abs().max().item()
        assert gap > 10 * FP32_KERNELS, f"mixed prefix should differ from a deep prompt, max gap {gap:.2e}"


@pytest.mark.parametrize("which", MODELS)
@torch.no_grad()
def test_no_h_explains_an_untied_prefix_rank_argument(which, request):
    """Every layer's W_K is a full-rank D x D matrix, so K = u W_K + b_K has exactly one solution
    u = f(h) (whatever f is: identity for BERT, ln_1 for GPT-2). That u fixes V = u W_V + b_V;
    a prefix pairing this K with any other V cannot come from a hidden-state prompt."""
    model = request.getfixturevalue(which)
    layer = model.layers[0]
    D = model.config.hidden_size
    W, b = layer.attn.qkv.weight.double(), layer.attn.qkv.bias.double()  # [D, 3D] = [W_Q | W_K | W_V], [3D]
    W_K, b_K = W[:, D:2 * D], b[D:2 * D]  # [D, D], [D]
    W_V, b_V = W[:, 2 * D:], b[2 * D:]
    assert torch.linalg.matrix_rank(W_K).item() == D  # the unique-solution premise, checked

    def f(h):  # [P, D] -> [P, D], in float64
        if which == "encoder":
            return h
        ln = layer.ln_1
        return F.layer_norm(h, (D,), ln.weight.double(), ln.bias.double(), ln.eps)

    u1 = f(torch.randn(P, D, dtype=torch.float64))  # [P, D]
    u2 = f(torch.randn(P, D, dtype=torch.float64))  # [P, D]: from another h
    K = u1 @ W_K + b_K  # [P, D]
    V = u2 @ W_V + b_V  # [P, D]: taken from the other h
    u = torch.linalg.solve(W_K.T, (K - b_K).T).T  # [P, D]: the only f(h) with this K
    torch.testing.assert_close(u, u1, atol=FP64, rtol=0)  # a float64 solve: error ~ cond(W_K) * 1e-16
    V_forced = u @ W_V + b_V  # [P, D]: the only V a hidden-state prompt can pair with K
    gap = (V_forced - V).abs().max().item()
    assert gap > 0.1 * V.abs().max().item(), f"forced V differs from the prefix's V by only {gap:.2e}"


# --- dtype: the prefix comes back in the model's dtype ------------------------------------------

def _tiny(which: str, dtype):
    from minigpt_ptv2 import preset
    model = (BertEncoder(preset("bert-tiny")) if which == "encoder" else GPT2Decoder(preset("gpt2-tiny"))).eval()
    return model.to(dtype)


@pytest.mark.parametrize("which", MODELS)
@torch.no_grad()
def test_float64_model_gets_a_float64_prefix_computed_in_float64(which):
    model = _tiny(which, torch.float64)
    ids, mask = _batch(model.config.vocab_size, left_pad=which == "decoder")
    deep = DeepPrompt(model.config, P, init_std=1.0).double()
    prefix = hidden_to_kv(model, deep)
    assert prefix.embedding.weight.dtype == torch.float64
    exact = _by_hand(model, deep.layer_prompts())  # [L, 2, H, P, d], all float64
    torch.testing.assert_close(prefix.layer_kv(), exact, atol=FP64, rtol=0)
    # rounding through float32 would be caught: it moves the values (|x| ~ 1) by ~5e-8, far beyond FP64
    assert (exact.float().double() - exact).abs().max() > 100 * FP64
    torch.testing.assert_close(_run(model, prefix, ids, mask), _run(model, deep, ids, mask), atol=FP64, rtol=0)
    # a float32 prompt in a float64 model: h is widened (exactly), the prefix is float64
    deep32 = DeepPrompt(model.config, P, init_std=1.0)
    torch.testing.assert_close(hidden_to_kv(model, deep32).layer_kv(),
                               _by_hand(model, deep32.layer_prompts().double()), atol=FP64, rtol=0)


@pytest.mark.parametrize("which", MODELS)
@torch.no_grad()
def test_bfloat16_model_gets_a_bfloat16_prefix_it_can_run(which):
    """A float32 prefix would be refused by a bf16 forward ('prefix is torch.float32 ... keys are
    torch.bfloat16'). The bf16 values are the model's own projection of h, unchanged by the trip
    through from_layer_kv (which widens to float32) and back: compared exactly."""
    model = _tiny(which, torch.bfloat16)
    ids, mask = _batch(model.config.vocab_size, left_pad=which == "decoder")
    deep = DeepPrompt(model.config, P, init_std=1.0).to(torch.bfloat16)
    prefix = hidden_to_kv(model, deep)
    assert {p.dtype for p in prefix.parameters()} == {torch.bfloat16}
    h = deep.layer_prompts()  # [L, P, D]
    own = []
    for i, layer in enumerate(model.layers):
        x = layer.ln_1(h[i]) if which == "decoder" else h[i]
        _, k, v = layer.attn.project(x[None])  # [1, H, P, d] each
        own.append(torch.cat([k, v]))
    assert torch.equal(prefix.layer_kv(), torch.stack(own))  # EXACT: same kernels, no cast in between
    out = _run(model, prefix, ids, mask)
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())


@torch.no_grad()
def test_the_bridge_asks_the_hook_not_a_deep_prompt_method(decoder):
    """Any method answering `hidden_prompts` crosses the bridge, not only DeepPrompt: here one [P, D]
    table shared by every layer, written against the PromptMethod interface alone."""
    from minigpt_ptv2.core.prompt_method import PromptMethod

    class Shared(PromptMethod):
        kind = "hidden"

        def __init__(self, config, P):
            super().__init__(config, P)
            self.table = torch.nn.Parameter(torch.randn(P, config.hidden_size))  # [P, D]

        def hidden_prompts(self, batch_size):
            return [self.table.expand(batch_size, -1, -1)] * self.config.num_hidden_layers  # L x [B, P, D]

    shared = Shared(decoder.config, P)
    ids, mask = _batch(decoder.config.vocab_size, left_pad=True)
    torch.testing.assert_close(_run(decoder, hidden_to_kv(decoder, shared), ids, mask),
                               _run(decoder, shared, ids, mask), atol=FP32_KERNELS, rtol=0)
    with pytest.raises(ValueError, match="gives no hidden-state prompts"):
        hidden_to_kv(decoder, KVPrefix(decoder.config, P))
