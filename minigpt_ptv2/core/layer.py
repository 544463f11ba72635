"""The layer contract: how the layer loop (stack.py) calls a layer of any architecture.

    layer(x [B, N, D], *, keep, prefix, gated, positions, need_weights, use_cache) -> LayerOutput

    keep       [B, 1, Nq, Nk] bool or None     who may attend to whom (masks.py)
    prefix     Prefix(K, V) or None            a joined prefix [B, H_kv, P, d] (core/prefix.py):
                                               a K/V prefix, or the keys cached so far; read
                                               under one softmax with the layer's own keys
    gated      Prefix(K, V, gate) or None      a gated prefix: read under its own softmax,
                                               scaled by its gate, added (LLaMA-Adapter)
    positions  [B or 1, N] or None             the rows' positions, for models that apply them
                                               inside attention (rotary); others ignore them
    need_weights                               return the attention probabilities (explicit path)
    use_cache                                  return this layer's joined K/V, Prefix(K, V) (what
                                               a KV cache keeps; a gated prefix is kept apart)

A layer passes prefix and gated to its attention as they are: it reads nothing in them.

    layer.sliding_window   None, or W: the layer's queries see only the last W key columns,
                           themselves included (Mistral; Qwen2's upper layers). The layer loop
                           builds `keep` with it (masks.build_keep); the layer does nothing more.

A layer also answers two questions about hidden rows h [1, P, D] that are not tokens:

    layer.kv_from_hidden(h, positions [1, P] or None) -> (K, V) [1, H_kv, P, d]

the keys and values this layer's attention makes of rows h *as if they were in the sequence*,
for the bridge between the two deep styles (prompts/bridge.py): for a post-LN block its
projection of h, for a pre-LN block its projection of LN(h), for a rotary block the keys turned
to the rows' positions. That is all a hidden-state prompt row ever gives the real tokens.

    layer.project_kv(h) -> (K, V) [1, H_kv, P, d]

its attention's bare projection of h: W_K h + b_K and W_V h + b_V, no norm before and no
rotation after, whatever the block does to its own rows. LLaMA-Adapter's adaption prompt (and
PEFT's) is read so (prompts/gated.py): rows that live in the projection's input space, not in
the residual stream, with keys that carry no position.

And it names its position-wise step, `feed_forward(x)` [B, N, D] -> [B, N, D], which treats
every token on its own (so a speed device may run it on blocks of rows: fast/row_blocks.py).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..errors import InputError
from .prefix import Prefix


class LayerOutput(NamedTuple):
    hidden: torch.Tensor  # [B, N, D]
    probs: torch.Tensor | None  # [B, H, N, Nk] with need_weights, else None
    present: Prefix | None  # Prefix(K, V) [B, H_kv, Nk, d] each with use_cache, else None


class Layer(nn.Module):
    """Base class of every architecture's block: the methods above, nothing else assumed."""

    sliding_window: int | None = None  # W (masks.py), or None: every earlier key column

    def forward(self, x: torch.Tensor, *, keep=None, prefix=None, gated=None, positions=None,
                need_weights: bool = False, use_cache: bool = False) -> LayerOutput:
        raise NotImplementedError

    def kv_from_hidden(self, h: torch.Tensor, positions=None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def project_kv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise InputError(f"{type(self).__name__} does not say what its attention makes of bare rows "
                         f"(Layer.project_kv), which a gated prefix needs")

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def kv_from_rows(layers, h: torch.Tensor, positions=None) -> torch.Tensor:
    """Every layer's keys and values of its own rows: h [L, P, D] (row set i for layer i) ->
    [L, 2, H_kv, P, d], each layer through its kv_from_hidden. What the bridge turns a deep
    prompt into, and what a prefix started from a real text holds (prompts/from_tokens.py)."""
    kvs = []
    for i, layer in enumerate(layers):
        k, v = layer.kv_from_hidden(h[i][None], positions)  # a batch of one: [1, H_kv, P, d] each
        kvs.append(torch.cat([k, v]))  # [1 + 1, H_kv, P, d]: K then V along the batch-of-one axis
    return torch.stack(kvs)  # [L, 2, H_kv, P, d]
