"""The bridge: a hidden-state prompt is a K/V prefix whose K and V are tied through one h.

Injecting h [P, D] before layer i and slicing the prompt rows off afterwards gives the real
tokens exactly what the prefix K = f(h) W_K + b_K, V = f(h) W_V + b_V gives, where f is what
the layer does to its input before attention: nothing in a post-LN block (BERT), its first
LayerNorm in a pre-LN block (GPT-2), its RMSNorm in a LLaMA block, whose keys are then also
turned by RoPE to the prompt rows' positions. Each layer says it itself (`kv_from_hidden`,
core/layer.py): the real tokens only ever read the prompt rows' keys and values. The converse
fails: a free K/V prefix need not come from any h, so K/V prefixes are strictly more expressive.

The prefix comes back in the model's dtype and on its device, computed there: a bf16 model
gets a bf16 prefix (a float32 one would be refused by its forward), a float64 model a float64
prefix (no rounding through float32). h itself is first moved to that dtype, as the model
would do to run it.
"""
from __future__ import annotations

import torch

from ..core.layer import kv_from_rows
from ..core.prompt_method import PromptMethod
from ..errors import InputError
from .prefix import KVPrefix


@torch.no_grad()
def hidden_to_kv(model, deep: PromptMethod) -> KVPrefix:
    """Turn a hidden-state prompt method (DeepPrompt, or any method answering `hidden_prompts`)
    into the equivalent KVPrefix for `model` (same positions policy)."""
    deep.check_compatible(model.config)
    prompts = deep.hidden_prompts(1)  # L x [1, P, D]: asked through the hook, as the model asks
    if prompts is None:
        raise InputError(f"{type(deep).__name__} gives no hidden-state prompts (its kind is {deep.kind!r}): "
                         f"the bridge turns hidden-state prompts into K/V prefixes")
    weight = model.input_embeddings().weight  # the model's dtype and device
    h = torch.cat(prompts).to(device=weight.device, dtype=weight.dtype)  # [L, P, D]
    positions = model.prompt_positions(deep.num_virtual, deep.positions, weight.device)  # [1, P] or None
    kv = kv_from_rows(model.layers, h, positions)  # [L, 2, H_kv, P, d]
    prefix = KVPrefix.from_layer_kv(model.config, kv, positions=deep.positions)
    prefix.to(device=weight.device, dtype=weight.dtype)  # from_layer_kv widens bf16 to float32: undo, exactly
    prefix.virtual_keep.copy_(deep.virtual_keep)
    return prefix
