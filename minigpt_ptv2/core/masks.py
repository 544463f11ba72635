"""Who may attend to whom: boolean keep-masks built once per forward pass (one per window in use).

A keep-mask is `[B, 1, Nq, Nk]` with True where a query may look at a key. Keys are laid out
as `[prefix or cache | new tokens]`, queries are the new tokens. `attention.additive_mask`
turns it into the additive form in the compute dtype.

A sliding window W (Mistral, Qwen2) keeps key column k for the query in column q when
q - W < k <= q. Columns, as transformers counts them: prefix entries and left pads count too, and
a KV cache keeps every column (masked out once out of reach, where transformers drops them).
"""
from __future__ import annotations

import torch

from ..errors import InputError


def build_keep(key_mask: torch.Tensor, n_query: int, causal: bool = False,
               window: int | None = None) -> torch.Tensor | None:
    """key_mask [B, Nk] -> keep [B, 1, Nq, Nk] (or [B, 1, 1, Nk] when not causal).

    Causal: the Nq queries are the *last* Nq keys, so query i sees every earlier key (prefix,
    cache) and new keys up to itself; with a `window` W, only the last W of those columns.
    Returns None when nothing is masked, so the fused path can skip the mask entirely.
    """
    B, Nk = key_mask.shape
    if window is not None and not causal:
        raise InputError(f"a sliding window (W={window}) is a causal mask: it needs causal=True")
    if not causal:
        if bool(key_mask.all()):
            return None
        return key_mask[:, None, None, :]  # [B, 1, 1, Nk]
    first = Nk - n_query  # keys before the first query: prefix + cache
    q_pos = torch.arange(n_query, device=key_mask.device)[:, None] + first  # [Nq, 1]
    k_pos = torch.arange(Nk, device=key_mask.device)[None, :]  # [1, Nk]
    causal_keep = k_pos <= q_pos  # [Nq, Nk]
    if window is not None:
        causal_keep = causal_keep & (k_pos > q_pos - window)  # [Nq, Nk]: the last W columns, itself included
    return key_mask[:, None, None, :] & causal_keep  # [B, 1, Nq, Nk]
