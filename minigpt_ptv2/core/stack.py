"""The layer loop shared by every architecture: where the two deep styles meet.

    hidden-state prompts:  inject [B,P,D] + [B,N,D] -> [B,P+N,D] -> layer -> slice [:, P:] -> [B,N,D]
    K/V prefix:            layer(x [B,N,D], prefix=Prefix(K, V) [B,H_kv,P,d])    -> [B,N,D]
    gated prefix:          layer(x [B,N,D], gated=Prefix(K, V, gate))            -> [B,N,D]

Both happen in `run_layers`, a few lines apart, so they can be read side by side. The prompts
come in ready (transformer.py asks the method for them once per forward and checks them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .capture import record
from .masks import build_keep
from .prompt_rows import drop_front, in_front, positions_in_front


@dataclass
class StackOutput:
    hidden: torch.Tensor  # [B, N, D]
    attentions: list  # per layer: [B, H, Nq, Nk] when asked, else None
    presents: list | None  # per layer Prefix(K, V) [B, H_kv, Nk, d]: what a KV cache keeps (if asked)
    key_mask: torch.Tensor  # [B, Nk]: which of those keys are real (or kept virtual) entries


def run_layers(layers, x, key_mask, *, deep=None, prefix=None, gated=None, causal=False, positions=None,
               deep_positions=None, need_weights=False, use_cache=False) -> StackOutput:
    """Run every layer over x [B, N, D] (the layer contract is in layer.py).

    key_mask:  [B, Nk] (True = a real key): the P virtual entries first when there is a prompt,
               or the T cached keys first when decoding. Each layer's keep-mask is built from it
               and the layer's `sliding_window` (masks.py; None for most layers).
    deep:      L x [B, P, D] hidden-state prompts, or None.
    prefix:    L x Prefix(K, V) [B, H_kv, P, d]: a K/V prefix, or the keys cached so far; or None.
    gated:     L x (Prefix(K, V, gate) or None): a gated prefix, read apart (None: not in that
               layer); or None. With need_weights, a layer without one gets P_g zero-weight
               columns in front, so every layer's probabilities have the same keys.
    positions: [B or 1, N] the real rows' positions (deep_positions [1, P]: the prompt rows'),
               for architectures that apply positions inside attention.
    use_cache: keep every layer's (K, V) in `presents`. Off (and without autograd, which keeps
               them for the backward pass), each layer's K and V are freed as soon as its
               attention is done, so the feed-forward block and the next layers reuse the memory.
    """
    B, N, _ = x.shape
    n_query = key_mask.shape[1] if deep is not None else N  # deep: the P prompt rows query too
    keep = build_keep(key_mask, n_query, causal)  # [B, 1, Nq, Nk] or None
    record("mask", "keys", key_mask)  # [B, P+N]
    if keep is not None:
        record("mask", "keep", keep)  # [B, 1, Nq, Nk]

    def unmasked_step(keep):  # a decoding step that may see every key: the fused kernel runs unmasked
        return None if keep is not None and n_query == 1 and bool(keep.all()) else keep
    keeps = {None: unmasked_step(keep)}  # sliding window -> keep-mask, built once for the layers using it

    def keep_for(window):
        if window not in keeps:
            keeps[window] = unmasked_step(build_keep(key_mask, n_query, causal, window))  # [B, 1, Nq, Nk]
        return keeps[window]
    rows_positions = positions_in_front(deep_positions, positions) if deep is not None else positions

    attentions, presents = [], ([] if use_cache else None)
    for i, layer in enumerate(layers):
        g = gated[i] if gated is not None else None  # Prefix(K, V, gate) or None
        if deep is not None:  # inject, process, slice
            P = deep[i].shape[1]
            prompt = record(f"layer{i}", "prompt", deep[i])  # [B, P, D]
            x = record(f"layer{i}", "inject", in_front(prompt, x))  # [B, P+N, D]
            out = layer(x, keep=keep_for(layer.sliding_window), gated=g, positions=rows_positions,
                        need_weights=need_weights, use_cache=use_cache)  # [B, P+N, D]
            record(f"layer{i}", "out", out.hidden)
            x = record(f"layer{i}", "slice", drop_front(out.hidden, P))  # [B, N, D]
        else:  # K/V prefix (or cached keys), gated prefix, or no prompt at all
            out = layer(x, keep=keep_for(layer.sliding_window), prefix=prefix[i] if prefix is not None else None,
                        gated=g, positions=positions, need_weights=need_weights, use_cache=use_cache)  # [B, N, D]
            x = record(f"layer{i}", "out", out.hidden)
        probs = out.probs
        if probs is not None and gated is not None and g is None:  # no gated prefix here: it gets weight 0
            P_g = next(p for p in gated if p is not None).length
            probs = F.pad(probs, (P_g, 0))  # [B, H, Nq, P_g+Nk]
        attentions.append(probs)
        if use_cache:
            presents.append(out.present)
    return StackOutput(x, attentions, presents, key_mask)
