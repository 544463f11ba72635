"""What every prompt method promises, as checks the METHODS-parametrised tests share.

They test the contract (core/prompt_method.py, core/prefix.py), not today's methods: a correct
new method passes them unchanged. Two things a method may legitimately do that older checks
took for bugs: start by reading nothing (a gated prefix at g = 0: exactly the frozen model, and
its rows get no gradient until g moves), and read its prefix under a softmax of its own (its P
weights then sum to g, not into the tokens' 1).
"""
from __future__ import annotations

import torch

from tolerances import PROB_SUM


def move_off_start(method, seed: int, scale: float = 0.1) -> None:
    """Add noise to every parameter: what some training steps would have done. A method whose
    start reads nothing (a gate at 0) then reads its prompt like any other."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def check_gradients_reach_only_the_method(model, method, loss_fn) -> None:
    """`method` attached to `model`, the backbone frozen: loss_fn() backpropagated gives no
    backbone parameter a gradient, reaches the method somewhere at its start, and reaches every
    one of its tensors once it has moved off its start (none is dead)."""
    for start in (True, False):
        if not start:
            move_off_start(method, seed=6)
        for p in model.parameters():
            p.grad = None
        loss_fn().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if n.startswith("prompt.")}
        assert all(g is None or bool(torch.isfinite(g).all()) for g in grads.values())
        if start:
            assert any(g is not None and g.abs().sum() > 0 for g in grads.values()), "no gradient reached the method"
        else:
            dead = [n for n, g in grads.items() if g is None or g.abs().sum() == 0]
            assert not dead, f"{dead} got no gradient off the method's start"
        backbone = [n for n, p in model.named_parameters() if not n.startswith("prompt.") and p.grad is not None]
        assert not backbone, f"backbone parameters {backbone[:3]} got a gradient"


def gates_read(model, method, B: int) -> list:
    """Per layer, the gate of the gated prefix that layer reads (core/prefix.py), or None where
    the prompt joins the keys (or there is none): asked through the hook the model asks."""
    prefixes = method.kv_prefix(B, layers=model.layers) or [None] * model.config.num_hidden_layers
    return [float(p.gate) if p is not None and p.gated else None for p in prefixes]


def check_attention(attentions, mask, P: int, gates: list, causal: bool) -> None:
    """Each layer's probabilities [B, H, Nq, P+N] (the P entries first; the last N query rows are
    the real tokens'): every real token reads every virtual entry (the method moved off its start)
    and no padding or later token; a softmax row sums to 1, and a gated prefix's P weights, read
    under their own softmax, sum to its gate. The explicit path's softmax runs in float32."""
    B, N = mask.shape
    real_q = mask.bool()[:, None, :]  # [B, 1, N]
    key_is_pad = torch.cat([torch.zeros(B, P, dtype=torch.bool), mask == 0], dim=1)  # [B, P+N]
    for i, probs in enumerate(attentions):
        H = probs.shape[1]
        assert probs.shape[0] == B and probs.shape[-1] == P + N, f"layer {i}: {list(probs.shape)}"
        probs = probs[:, :, -N:]  # [B, H, N, P+N]: the real tokens' rows
        real = real_q.expand(B, H, N)  # [B, H, N]
        ones = torch.ones_like(probs[..., 0])
        tol = dict(atol=PROB_SUM[torch.float32], rtol=0)
        if gates[i] is None:
            torch.testing.assert_close(probs.sum(-1), ones, **tol)
        else:
            torch.testing.assert_close(probs[..., P:].sum(-1), ones, **tol)
            torch.testing.assert_close(probs[..., :P].sum(-1), gates[i] * ones, **tol)
        assert bool((probs[..., :P][real] != 0).all()), f"layer {i}: a virtual entry got no weight"
        pad_mass = probs.masked_select(key_is_pad[:, None, None, :].expand_as(probs) & real[..., None])
        assert bool((pad_mass == 0).all()), f"layer {i}: padding got attention"
        if causal:  # (a padding query may see anything: with no key of its own it reads uniformly)
            later = torch.ones(N, N, dtype=torch.bool).triu(1)  # key j > query i
            future = probs[..., P:].masked_select(later & real[..., None])
            assert bool((future == 0).all()), f"layer {i}: a token saw the future"
