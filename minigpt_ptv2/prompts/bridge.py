"""The bridge: a hidden-state prompt is a K/V prefix whose K and V are tied through one h.

Injecting h [P, D] before layer i and slicing the prompt rows off afterwards gives the real
tokens exactly what the prefix K = f(h) W_K + b_K, V = f(h) W_V + b_V gives, where f is the
identity for the post-LN encoder and the block's first LayerNorm for the pre-LN decoder: the
real tokens only ever read the prompt rows' keys and values. The converse fails: a free K/V
prefix need not come from any h, so K/V prefixes are strictly more expressive.
"""
from __future__ import annotations

import torch

from .deep import DeepPrompt
from .prefix import KVPrefix


@torch.no_grad()
def hidden_to_kv(model, deep: DeepPrompt) -> KVPrefix:
    """Turn a DeepPrompt into the equivalent KVPrefix for `model` (same positions policy)."""
    deep.check_compatible(model.config)
    h = deep.layer_prompts()  # [L, P, D]
    kvs = []
    for i, layer in enumerate(model.layers):
        x = layer.ln_1(h[i]) if hasattr(layer, "ln_1") else h[i]  # f(h): [P, D]
        _, k, v = layer.attn.project(x[None])  # a batch of one: [1, H, P, d] each; Q is unused
        kvs.append(torch.cat([k, v]))  # [1 + 1, H, P, d]: K then V along the batch-of-one axis
    prefix = KVPrefix.from_layer_kv(model.config, torch.stack(kvs), positions=deep.positions)  # [L, 2, H, P, d]
    prefix.virtual_keep.copy_(deep.virtual_keep)
    return prefix
