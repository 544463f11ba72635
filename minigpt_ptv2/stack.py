"""The layer loop shared by the encoder and the decoder: where the two deep styles meet.

    hidden-state prompts:  inject [B,P,D] + [B,N,D] -> [B,P+N,D] -> layer -> slice [:, P:] -> [B,N,D]
    K/V prefix:            layer(x [B,N,D], prefix=(K, V) [B,H,P,d])            -> [B,N,D]

Both happen in `run_layers`, a few lines apart, so they can be read side by side.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .masks import build_keep, prepend
from .trace import record


@dataclass
class StackOutput:
    hidden: torch.Tensor  # [B, N, D]
    attentions: list  # per layer: [B, H, Nq, Nk] when asked, else None
    presents: list | None  # per layer (K, V) [B, H, Nk, d]: what a KV cache keeps (if asked)
    key_mask: torch.Tensor  # [B, Nk]: which of those keys are real (or kept virtual) entries


def run_layers(layers, x, key_mask, method=None, causal=False, past=None, need_weights=False,
               use_cache=False):
    """Run every layer over x [B, N, D].

    key_mask: [B, N] (True = real token), or [B, T+N] when `past` holds T cached keys per layer.
    method:   the attached PromptMethod or None.
    past:     per-layer (K, V) [B, H, T, d] from earlier decoding steps (it already contains any
              prompt, so prompts are added only when `past` is None).
    use_cache: keep every layer's (K, V) in `presents`. Off (and without autograd, which keeps
              them for the backward pass), each layer's K and V are freed as soon as its
              attention is done, so the feed-forward block and the next layers reuse the memory.
    """
    B, N, _ = x.shape
    hidden = kv = None
    if past is None and method is not None:
        hidden = method.hidden_prompts(B)  # L x [B, P, D] or None
        kv = method.kv_prefix(B)  # L x (K, V) [B, H, P, d] or None
    if hidden is not None:  # once for all layers, not per layer
        method.check_finite(hidden, lambda i: f"hidden prompt of layer {i}")
    if kv is not None:
        method.check_finite([t for pair in kv for t in pair], lambda i: f"prefix {'KV'[i % 2]} of layer {i // 2}")
    if hidden is not None or kv is not None:
        P = method.num_virtual
        key_mask = prepend(key_mask, method.virtual_keep, P)  # [B, P+N]
    n_query = key_mask.shape[1] if hidden is not None else N
    keep = build_keep(key_mask, n_query, causal)  # [B, 1, Nq, Nk] or None
    record("mask", "keys", key_mask)  # [B, P+N]
    if keep is not None:
        record("mask", "keep", keep)  # [B, 1, Nq, Nk]
        if n_query == 1 and bool(keep.all()):  # a decoding step that may see every key:
            keep = None  # no mask to build per layer, and the fused kernel runs unmasked

    attentions, presents = [], ([] if use_cache else None)
    for i, layer in enumerate(layers):
        if hidden is not None:  # inject, process, slice
            method.check_tensor(hidden[i], x, f"hidden prompt of layer {i}")
            prompt = record(f"layer{i}", "prompt", hidden[i])  # [B, P, D]
            x = record(f"layer{i}", "inject", torch.cat([prompt, x], dim=1))  # [B, P+N, D]
            x, probs, present = layer(x, keep, None, need_weights, use_cache)  # [B, P+N, D]
            record(f"layer{i}", "out", x)
            x = record(f"layer{i}", "slice", x[:, P:])  # [B, N, D]
        else:  # K/V prefix (or cached keys), or no prompt at all
            prefix = kv[i] if kv is not None else (past[i] if past is not None else None)
            x, probs, present = layer(x, keep, prefix, need_weights, use_cache)  # [B, N, D]
            record(f"layer{i}", "out", x)
        attentions.append(probs)
        if use_cache:
            presents.append(present)
    return StackOutput(x, attentions, presents, key_mask)
