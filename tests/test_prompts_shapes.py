"""Every intermediate shape along the path, for every prompt method, at seed 000's numbers.

B=16 sentences of N=128 tokens, P=20 virtual tokens, D=768, H=12 heads of d=64. A `ShapeTrace`
records each capture point and the tests assert the shapes by name: where the P extra rows or
keys appear, and where they are gone again.

To keep the suite fast the BERT-base-shaped models have 2 layers instead of 12 (a 12-layer
forward at this size takes 6-10 s per method on 2 CPU cores); D, H and d are unchanged and
every layer records the same shapes, so nothing a learner looks at is lost.
"""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2 import GPT2Decoder, BertEncoder, ShapeTrace, preset
from minigpt_ptv2.prompts import METHODS, SoftPrompt, make_method

B, N, P, D, H, d = 16, 128, 20, 768, 12, 64
LAYERS = 2
V_SMALL = 1000  # decoder vocabulary: only the LM head's width, never on a prompt's path
LETTERS = {"B": B, "N": N, "P": P, "P+N": P + N, "D": D, "H": H, "d": d}


@pytest.fixture(scope="module")
def encoder():
    cfg = preset("bert-base").replace(num_hidden_layers=LAYERS)
    return BertEncoder(cfg).eval()


@pytest.fixture(scope="module")
def decoder():
    cfg = preset("gpt2").replace(num_hidden_layers=LAYERS, vocab_size=V_SMALL)
    return GPT2Decoder(cfg).eval()


def _narrow(name: str) -> dict:
    """A narrow MLP / LSTM inside the reparameterised methods: their output is [P, D] (or
    [P, L*2*D]) whatever the width, and a 768-wide BiLSTM costs seconds just to initialise."""
    return {"hidden": 64} if name in ("ptuning-mlp", "ptuning-lstm", "deep-mlp", "prefix-mlp") else {}


def _trace(model, name):
    """Run one B x N batch with `name` attached and return the recorded shapes by name."""
    ids = torch.randint(0, model.config.vocab_size, (B, N))  # [B, N]
    model.attach(make_method(name, model.config, P, **_narrow(name)))
    try:
        with torch.no_grad(), ShapeTrace(dims=LETTERS) as tr:
            model(ids, output_attentions=True)
    finally:
        model.detach_prompt()
    return tr, tr.shapes()


def _expected_layer(kind: str, i: int) -> dict:
    """The per-layer shapes each kind of method must produce."""
    a = f"layer{i}.attn"
    if kind == "kv":  # queries stay N rows; keys and values grow to P+N
        return {f"{a}.q": (B, H, N, d), f"{a}.k": (B, H, N, d), f"{a}.v": (B, H, N, d),
                f"{a}.k_with_prefix": (B, H, P + N, d), f"{a}.v_with_prefix": (B, H, P + N, d),
                f"{a}.scores": (B, H, N, P + N), f"{a}.probs": (B, H, N, P + N),
                f"{a}.context": (B, H, N, d), f"{a}.out": (B, N, D)}
    if kind == "gated":  # the tokens' own attention as without a prompt; the prefix read apart, added
        return {f"{a}.q": (B, H, N, d), f"{a}.k": (B, H, N, d), f"{a}.v": (B, H, N, d),
                f"{a}.gated_k": (B, H, P, d), f"{a}.gated_v": (B, H, P, d),
                f"{a}.gated_probs": (B, H, N, P), f"{a}.gated_read": (B, H, N, d),
                f"{a}.scores": (B, H, N, N), f"{a}.probs": (B, H, N, N),
                f"{a}.context": (B, H, N, d), f"{a}.out": (B, N, D)}
    rows = {f"{a}.q": (B, H, P + N, d), f"{a}.k": (B, H, P + N, d), f"{a}.v": (B, H, P + N, d),
            f"{a}.scores": (B, H, P + N, P + N), f"{a}.probs": (B, H, P + N, P + N),
            f"{a}.context": (B, H, P + N, d), f"{a}.out": (B, P + N, D)}
    if kind == "hidden":  # inject, process, slice
        rows.update({f"layer{i}.inject": (B, P + N, D), f"layer{i}.slice": (B, N, D)})
    return rows


def _check(shapes: dict, kind: str, final: dict) -> None:
    want = {"embeddings.out": (B, P + N, D) if kind == "input" else (B, N, D), **final}
    for i in range(LAYERS):
        want.update(_expected_layer(kind, i))
    if kind == "input":
        want["shallow.slice"] = (B, N, D)
    got = {k: shapes.get(k) for k in want}
    assert got == want
    # and the capture points of the other styles are absent: no style leaks into another
    absent = {"kv": ("layer0.inject", "layer0.slice", "shallow.slice", "layer0.attn.gated_k"),
              "hidden": ("layer0.attn.k_with_prefix", "shallow.slice", "layer0.attn.gated_k"),
              "input": ("layer0.inject", "layer0.attn.k_with_prefix", "layer0.attn.gated_k"),
              "gated": ("layer0.inject", "layer0.attn.k_with_prefix", "shallow.slice")}[kind]
    assert not [k for k in absent if k in shapes]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_encoder_shapes_for_every_method(encoder, name):
    tr, shapes = _trace(encoder, name)
    kind = METHODS[name][0].kind
    _check(shapes, kind, {"final.last_hidden_state": (B, N, D), "final.pooler": (B, D)})
    if kind == "kv":  # seed 000's K/V table, in letters
        assert tr.letters(shapes["layer1.attn.k_with_prefix"]) == "[B, H, P+N, d]"
        assert tr.letters(shapes["layer0.attn.q"]) == "[B, H, N, d]"  # Q is never prefixed
    if kind == "hidden":
        assert tr.letters(shapes["layer1.inject"]) == "[B, P+N, D]"
        assert tr.letters(shapes["layer1.slice"]) == "[B, N, D]"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_decoder_shapes_for_every_method(decoder, name):
    _, shapes = _trace(decoder, name)
    _check(shapes, METHODS[name][0].kind, {"final.logits": (B, N, V_SMALL)})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_prompts_are_broadcast_views_not_copies(name):
    """Pitfall 5: prompts are computed once and `expand`ed over B (batch stride 0), never repeated."""
    model = BertEncoder(preset("bert-tiny"))
    method = make_method(name, model.config, P, **_narrow(name))
    with torch.no_grad():
        outs = [method.input_prompt(B)] + (method.hidden_prompts(B) or []) + \
            [t for p in (method.kv_prefix(B, layers=model.layers) or []) if p is not None for t in (p.k, p.v)]
    outs = [t for t in outs if t is not None]
    assert outs, f"{name} produced no prompt at all"
    for t in outs:
        assert t.shape[0] == B and t.stride(0) == 0, f"{name}: batch axis is not a broadcast view"


def test_seed_003_soft_prompt_init_ignores_n_tokens():
    """Seed 003's `initialize_soft_prompt` (GPT-2 soft prompt tuning) does, in plain torch:

        init_prompt_value = torch.FloatTensor(2, 10).uniform_(-random_range, random_range)
        self.soft_prompt = nn.Embedding(n_tokens, self.config.n_embd)
        self.soft_prompt.weight = nn.parameter.Parameter(init_prompt_value)

    The Embedding is sized [n_tokens, n_embd] and then its weight is replaced by a [2, 10]
    tensor, whatever n_tokens and n_embd are. Our SoftPrompt is [P, D] for every P.
    """
    n_embd, random_range = 768, 0.5
    for n_tokens in (1, 5, 20, 100):
        soft_prompt = torch.nn.Embedding(n_tokens, n_embd)
        init_prompt_value = torch.FloatTensor(2, 10).uniform_(-random_range, random_range)
        soft_prompt.weight = torch.nn.parameter.Parameter(init_prompt_value)
        assert tuple(soft_prompt.weight.shape) == (2, 10) != (n_tokens, n_embd)  # the bug

        ours = SoftPrompt(preset("gpt2"), n_tokens)
        assert tuple(ours.weight.shape) == (n_tokens, n_embd)
        assert tuple(ours.input_prompt(3).shape) == (3, n_tokens, n_embd)  # [B, P, D]
