"""The zero-init gated prefix (prompts/gated.py) and the typed prefix it is read through (core/prefix.py).

- at g = 0 the model IS the frozen model: torch.equal, fused and explicit paths, encoder and
  decoders, both joins, with padding, and in generation; a zero K/V prefix is not (pitfall 4/10);
- the tokens' own softmax is never touched: only the gate decides how much the prefix adds;
- training opens the gate: at g = 0 only the gates get a gradient, the gate moves, the loss falls;
- a masked gated prefix adds exactly nothing; layers below `adapter_layers` are the frozen ones;
- where the read joins: before W_O ("context") or after it ("output"), the same only if W_O = 1;
- refusals by name: no layers, a bad adapter_layers / join / gate, a joined prefix missing on a
  layer, a gated prefix unpacked as (K, V), MixedPrompts, a PEFT export it cannot express.
"""
from __future__ import annotations

import pytest
import torch

from architectures import ARCHS
from minigpt_ptv2 import ShapeTrace, preset
from minigpt_ptv2.core.attention import MultiHeadAttention
from minigpt_ptv2.core.prefix import Prefix
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.models import build
from minigpt_ptv2.prompts import GatedPrefix, KVPrefix, freeze_backbone
from minigpt_ptv2.prompts.mixed import MixedPrompts
from tolerances import FP32_KERNELS, FP32_ULPS

P, B, N = 4, 3, 7

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.py


def tiny(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    return build(ARCHS[arch].tiny).eval()


def batch(model, seed: int = 1):
    """ids [B, N] with one padded row: on the right for the encoder, on the left for decoders."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, model.config.vocab_size, (B, N), generator=g)  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)
    if model.causal:
        mask[1, :3] = 0
    else:
        mask[1, 4:] = 0
    return ids, mask


def out_of(o):
    return o.logits if hasattr(o, "logits") else o.last_hidden_state


def run(model, method, ids, mask, **kw):
    model.detach_prompt()
    if method is not None:
        model.attach(method)
    try:
        with torch.no_grad():
            return model(ids, attention_mask=mask, **kw)
    finally:
        model.detach_prompt()


# --- g = 0: the frozen model, bit for bit -----------------------------------------------------------

@pytest.mark.parametrize("join", ["context", "output"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_a_fresh_gated_prefix_is_exactly_the_frozen_model_on_both_paths(arch, join):
    model = tiny(arch)
    ids, mask = batch(model)
    method = GatedPrefix(model.config, P, join=join)  # rows drawn from N(0, 1): far from nothing
    assert float(method.rows.detach().abs().mean()) > 0.5 and not bool(method.gates.any())
    for explicit in (False, True):
        plain = run(model, None, ids, mask, output_attentions=explicit)
        gated = run(model, method, ids, mask, output_attentions=explicit)
        assert torch.equal(out_of(gated), out_of(plain)), f"explicit={explicit}"
        if explicit:  # the tokens' own probabilities too, behind P weights of exactly 0
            for mine, theirs in zip(gated.attentions, plain.attentions):
                assert torch.equal(mine[..., P:], theirs) and not bool(mine[..., :P].any())


def test_a_zero_kv_prefix_changes_the_model_a_fresh_gated_one_does_not():
    """Pitfall 4/10 side by side: a K/V prefix of zeros still takes attention (its keys score 0,
    and exp(0) = 1 is a weight like any other); a gated prefix at g = 0 takes nothing, whatever
    its rows hold; open the gate and the prefix matters."""
    model = tiny("gpt2")
    ids, mask = batch(model)
    real = mask.bool()
    plain = out_of(run(model, None, ids, mask))[real]
    zero = KVPrefix(model.config, P)
    with torch.no_grad():
        zero.embedding.weight.zero_()
    assert (out_of(run(model, zero, ids, mask))[real] - plain).abs().max() > 1e-3
    gated = GatedPrefix(model.config, P)
    assert torch.equal(out_of(run(model, gated, ids, mask))[real], plain)
    with torch.no_grad():
        gated.gates.fill_(0.5)
    assert (out_of(run(model, gated, ids, mask))[real] - plain).abs().max() > 1e-3


def test_generation_with_a_fresh_gated_prefix_is_the_frozen_models():
    model = tiny("llama")
    ids, mask = batch(model)
    plain = model.generate(ids, 6, attention_mask=mask)
    model.attach(GatedPrefix(model.config, P))
    try:
        assert torch.equal(model.generate(ids, 6, attention_mask=mask), plain)
        assert torch.equal(model.generate(ids, 6, attention_mask=mask, use_cache=False), plain)
    finally:
        model.detach_prompt()


def one_attention(seed: int):
    """A lone attention module (D=24, H=4, d=6), its input x [B, N, D] and a prefix's K, V [B, H, P, d]."""
    torch.manual_seed(seed)
    attn = MultiHeadAttention(24, 4).eval()
    return attn, torch.randn(2, 6, 24), torch.randn(2, 4, P, 6), torch.randn(2, 4, P, 6)


@torch.no_grad()
def test_the_gate_scales_a_separately_normalised_read_and_never_touches_the_tokens_softmax():
    """One attention module, by hand: out = W_O(softmax(q K^T) V + g softmax(q K_p^T) V_p) + b_O."""
    attn, x, pk, pv = one_attention(3)
    gate = torch.tensor([0.7])
    plain = attn(x, need_weights=True)
    out, probs, _ = attn(x, gated=Prefix(pk, pv, gate=gate), need_weights=True)
    assert torch.equal(probs[..., P:], plain.probs)  # the tokens' softmax: untouched
    q, _, _ = attn.project(x)  # [B, H, N, d]
    own = torch.softmax(q @ pk.transpose(-2, -1) / 6 ** 0.5, dim=-1)  # [B, H, N, P]: over P keys alone
    torch.testing.assert_close(probs[..., :P], gate * own, atol=FP32_ULPS, rtol=0)
    ctx = plain.probs @ attn.project(x)[2] + gate * own @ pv  # [B, H, N, d]
    want = attn.output(ctx.transpose(1, 2).reshape(2, 6, 24))  # [B, N, D]
    torch.testing.assert_close(out, want, atol=FP32_ULPS, rtol=0)
    fused = attn(x, gated=Prefix(pk, pv, gate=gate)).out
    torch.testing.assert_close(fused, out, atol=FP32_KERNELS, rtol=0)


@torch.no_grad()
def test_join_context_and_output_differ_unless_the_output_projection_is_the_identity():
    attn, x, pk, pv = one_attention(4)
    read = {j: attn(x, gated=Prefix(pk, pv, gate=torch.tensor([0.5]), join=j)).out for j in ("context", "output")}
    assert (read["context"] - read["output"]).abs().max() > 1e-2
    attn.output.weight.copy_(torch.eye(24))
    read = {j: attn(x, gated=Prefix(pk, pv, gate=torch.tensor([0.5]), join=j)).out for j in ("context", "output")}
    torch.testing.assert_close(read["context"], read["output"], atol=FP32_ULPS, rtol=0)


# --- training opens the gate ----------------------------------------------------------------------

def test_at_g_0_only_the_gates_get_a_gradient_and_training_opens_them():
    model = tiny("gpt2")
    ids, mask = batch(model)
    method = GatedPrefix(model.config, P)
    model.attach(method)
    try:
        freeze_backbone(model)
        labels = ids.masked_fill(mask == 0, -100)
        model(ids, attention_mask=mask, labels=labels).loss.backward()
        assert not bool(method.rows.grad.any())  # multiplied by g = 0: exactly nothing
        assert bool((method.gates.grad != 0).all())  # d loss / d g = (softmax(q K_p) V_p) . d loss / d read
        opt = torch.optim.AdamW(method.parameters(), lr=5e-2, weight_decay=0.0)
        losses = []
        for _ in range(15):
            opt.zero_grad()
            loss = model(ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert bool((method.gates.abs() > 0.1).all()), method.gates  # opened, every layer
        assert bool(method.rows.grad.any())  # and the rows learn once the gate is open
        print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}, gates {[round(g, 3) for g in method.gates.tolist()]}")
        assert losses[-1] < 0.95 * losses[0], losses
    finally:
        model.detach_prompt()


# --- masks and layers -------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_a_masked_gated_prefix_adds_exactly_nothing_and_a_masked_entry_gets_weight_0(arch):
    model = tiny(arch)
    ids, mask = batch(model)
    method = GatedPrefix(model.config, P)
    with torch.no_grad():
        method.gates.fill_(0.8)
    plain = out_of(run(model, None, ids, mask))
    method.virtual_keep[1] = False
    out = run(model, method, ids, mask, output_attentions=True)
    assert all(not bool(a[..., 1].any()) and bool(a[..., 0].all()) for a in out.attentions)
    method.virtual_keep.fill_(False)
    assert torch.equal(out_of(run(model, method, ids, mask)), plain)


def test_only_the_top_adapter_layers_read_a_prefix():
    model = tiny("llama")  # L = 3
    ids, mask = batch(model)
    method = GatedPrefix(model.config, P, adapter_layers=1)
    with torch.no_grad():
        method.gates.fill_(0.9)
    assert method.rows.shape == (1, P, model.config.hidden_size) and method.num_trainable() == P * 40 + 1
    keep = ("layer0.out", "layer1.out", "layer2.out")
    with ShapeTrace(keep=keep) as plain:
        run(model, None, ids, mask, output_attentions=True)
    with ShapeTrace(keep=keep) as gated:
        out = run(model, method, ids, mask, output_attentions=True)
    for i in (0, 1):
        assert torch.equal(gated.tensors[f"layer{i}.out"], plain.tensors[f"layer{i}.out"])
    assert (gated.tensors["layer2.out"] - plain.tensors["layer2.out"]).abs().max() > 1e-3
    assert "layer2.attn.gated_k" in gated.names() and "layer1.attn.gated_k" not in gated.names()
    # every layer's probabilities have the same P+N keys: a layer without a prefix gives it weight 0
    assert [a.shape[-1] for a in out.attentions] == [P + N] * 3
    assert not out.attentions[0][..., :P].any() and out.attentions[2][..., :P].any()


# --- refusals, by name ------------------------------------------------------------------------------

def test_bad_arguments_are_refused_by_name():
    cfg = preset("gpt2-tiny")
    for bad in (0, 4, 1.5, True):
        with pytest.raises(InputError, match=r"adapter_layers must be an int in 1..L=3"):
            GatedPrefix(cfg, P, adapter_layers=bad)
    with pytest.raises(InputError, match="join must be one of"):
        GatedPrefix(cfg, P, join="after")
    with pytest.raises(InputError, match=r"kv_prefix\(B, layers=model.layers\)"):
        GatedPrefix(cfg, P).kv_prefix(2)


def test_the_layer_loop_refuses_prefixes_it_cannot_read_as_given():
    model = tiny("gpt2")
    ids = torch.randint(1, 100, (2, 5))

    class Handing(KVPrefix):  # hands the layers whatever the test puts in `self.hand`
        def kv_prefix(self, batch_size, layers=None):
            return self.hand(super().kv_prefix(batch_size))

    m = Handing(model.config, P)
    model.attach(m)
    try:
        cases = {
            "joined prefix to some layers but none to layer 1": lambda ps: [ps[0], None, ps[2]],
            r"gate of layer 0 has shape \[4\]": lambda ps: [p.replace(gate=torch.zeros(4)) for p in ps],
            "joins at 'after'": lambda ps: [p.replace(gate=torch.zeros(1), join="after") for p in ps],
            "joined .no gate. but sets keep": lambda ps: [p.replace(keep=torch.ones(P, dtype=torch.bool)) for p in ps],
            "one Prefix .or None. per layer, L=3; got 2 entries": lambda ps: ps[:2],
            "has 3 entries, but the method's P is 4": lambda ps: [Prefix(p.k[:, :, :3], p.v[:, :, :3]) for p in ps],
        }
        for message, hand in cases.items():
            m.hand = hand
            with pytest.raises(InputError, match=message):
                model(ids)
    finally:
        model.detach_prompt()


def test_a_gated_prefix_is_not_a_k_v_pair_but_a_joined_one_still_is():
    k, v = torch.zeros(1, 2, P, 3), torch.ones(1, 2, P, 3)
    pk, pv = Prefix(k, v)  # what a (K, V) pair did, a joined prefix does
    assert pk is k and pv is v and Prefix(k, v)[1] is v
    with pytest.raises(TypeError, match="not a .K, V. pair"):
        pk, pv = Prefix(k, v, gate=torch.zeros(1))


def test_mixed_prompts_refuse_a_gated_member_by_name():
    cfg = preset("gpt2-tiny")
    with pytest.raises(InputError, match=r"member 'g' \(GatedPrefix\) is a 'gated' prompt"):
        MixedPrompts(cfg, {"a": KVPrefix(cfg, P), "g": GatedPrefix(cfg, P)})


def test_a_method_may_hand_plain_k_v_pairs_as_joined_prefixes():
    """What a prefix was before it had a type: a (K, V) pair per layer is still read, as joined."""
    model = tiny("gpt2")
    ids, mask = batch(model)
    typed = KVPrefix(model.config, P, init_std=0.5)

    class Pairs(KVPrefix):
        def kv_prefix(self, batch_size, layers=None):
            return [(p.k, p.v) for p in super().kv_prefix(batch_size)]

    pairs = Pairs(model.config, P)
    pairs.load_state_dict(typed.state_dict())
    assert torch.equal(out_of(run(model, pairs, ids, mask)), out_of(run(model, typed, ids, mask)))
