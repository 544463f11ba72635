"""Deep K/V prefixes: P-Tuning v2 and prefix tuning.

A prefix encoder produces, for every layer, P keys and P values per key/value head. They are
computed once per forward pass as a compact [L, 2, H_kv, P, d] tensor and broadcast over the batch
with `expand` (a view), and handed to each layer as a joined Prefix(K, V) (core/prefix.py), which
`attention.concat_prefix` concatenates onto the layer's own K and V.

    Embedding(P, L*2*D)                                  (P-Tuning v2 default, no MLP)
    Embedding(P, D) -> Linear(D, h) -> Tanh -> Linear(h, L*2*D)   (prefix tuning's reparameterisation)

The flat L*2*D axis is laid out as (layer, K-or-V, head, d): the same order PEFT uses, so its
`prompt_embeddings` tensor is exactly our `embedding.weight`. Under grouped-query attention
(LLaMA-style, H_kv < H) a layer has only H_kv key/value heads, so the axis is L*2*H_kv*d wide
(`config.prefix_width`), again as in PEFT.

Under rotary positions a prefix key has a choice to make (core/rotary.py): `rotate_keys=False`
(default, PEFT's convention) hands the keys to the layers as given, as if already rotated (they
score like keys at position 0); `rotate_keys=True` turns them to the prompt rows' positions,
0..P-1 just before the text (shifted) or -P..-1 (real), which is the same to RoPE.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..errors import InputError, InputTypeError
from ..core.capture import record
from ..core.layer import kv_from_rows
from ..core.prefix import Prefix
from ..core.prompt_method import PromptMethod
from .from_tokens import check_rows, layer_inputs


class KVPrefix(PromptMethod):
    kind = "kv"

    def __init__(self, config, num_virtual: int, projection: bool = False, hidden: int = 512,
                 dropout: float = 0.0, init_std: float | None = None, positions: str = "real",
                 rotate_keys: bool = False):
        super().__init__(config, num_virtual, positions)
        if not isinstance(rotate_keys, bool):
            raise InputError(f"rotate_keys must be True or False, got {rotate_keys!r}")
        P, D, W = num_virtual, config.hidden_size, config.prefix_width  # W = L*2*H_kv*d (L*2*D when H_kv*d = D)
        self.projection = projection
        self.rotate_prefix_keys = rotate_keys
        if projection:
            self.embedding = nn.Embedding(P, D)
            self.transform = nn.Sequential(nn.Linear(D, hidden), nn.Tanh(), nn.Linear(hidden, W))
        else:
            self.embedding = nn.Embedding(P, W)  # [P, L*2*D]
        if init_std is not None:
            nn.init.normal_(self.embedding.weight, std=init_std)
        self.dropout = nn.Dropout(dropout)

    @torch.no_grad()
    def start_from_text(self, model, text_ids: torch.Tensor, rows: slice) -> None:
        """Every layer's prefix = the keys and values that layer computes for a real text's rows
        (from_tokens.py): K, V = layer.kv_from_hidden(h_i), the bridge's own map (core/layer.py)."""
        if self.projection:
            super().start_from_text(model, text_ids, rows)  # an MLP's output cannot be set directly
        check_rows(self, text_ids, rows)
        h = layer_inputs(model, text_ids, rows)  # [L, P, D]
        # Keys the model turns itself (rotate_keys=True) are kept unturned; otherwise turned as the bridge does.
        positions = None if self.rotate_prefix_keys else model.prompt_positions(self.num_virtual, self.positions,
                                                                                h.device)  # [1, P] or None
        kv = kv_from_rows(model.layers, h, positions)  # [L, 2, H_kv, P, d]
        self.embedding.weight.copy_(rearrange(kv, "l two h p d -> p (l two h d)"))  # [P, L*2*H_kv*d]

    def flat(self) -> torch.Tensor:
        """The prefix table [P, L*2*D] (L*2*H_kv*d), through the MLP when there is one."""
        e = self.embedding.weight  # [P, D] or [P, L*2*D]
        # Under autocast the MLP runs in bf16/fp16: hand the table over in the method's own dtype,
        # as every method does; attention.concat_prefix casts it where it meets the keys.
        table = self.transform(e).to(e.dtype) if self.projection else e  # [P, L*2*D]
        return record("prefix", "table", table)

    def layer_kv(self) -> torch.Tensor:
        """All layers' keys and values at once: [L, 2, H_kv, P, d]."""
        c = self.config
        kv = rearrange(self.flat(), "p (l two h d) -> l two h p d", l=c.num_hidden_layers, two=2,
                       h=c.num_key_value_heads)  # [L, 2, H_kv, P, d]
        return self.dropout(kv)  # one dropout mask shared by the batch

    def kv_prefix(self, batch_size: int, layers=None) -> list[Prefix]:
        """Every layer's joined Prefix(K, V), [B, H_kv, P, d] each (views); `layers` is not needed."""
        kv = record("prefix", "kv", self.layer_kv())  # [L, 2, H_kv, P, d]
        B = batch_size
        return [Prefix(kv[i, 0].expand(B, -1, -1, -1), kv[i, 1].expand(B, -1, -1, -1))  # [B, H_kv, P, d] each
                for i in range(kv.shape[0])]

    def to_peft(self, model=None) -> dict:
        """PREFIX_TUNING: the table [P, L*2*H_kv*d] PEFT reads, laid out from what kv_prefix hands
        the layers (so a subclass that changes the keys exports its own keys, or is refused)."""
        name = type(self).__name__
        if self.rotate_prefix_keys:
            raise InputError(f"{name}(rotate_keys=True) turns its keys to the prompt rows' positions, but "
                             f"PEFT's prefix tuning uses prefix keys as given: it would compute something else")
        layers = model.layers if model is not None else None
        self.only_answers("kv_prefix", layers)
        prefixes = self.kv_prefix(1, layers=layers)
        for i, p in enumerate(prefixes):
            if p is None or type(p) is not Prefix or not p.plain:
                raise InputError(f"{name} hands layer {i} {'no prefix' if p is None else 'more than a Prefix(K, V)'}: "
                                 f"PEFT's prefix tuning holds one plain K/V prefix per layer, nothing else")
        kv = torch.stack([torch.stack([p.k[0], p.v[0]]) for p in prefixes])  # [L, 2, H_kv, P, d]
        return {"peft_type": "PREFIX_TUNING", "prompt_embeddings": rearrange(kv, "l two h p d -> p (l two h d)")}

    @torch.no_grad()
    def for_inference(self) -> "KVPrefix":
        """The inference form: only the final per-layer K/V are kept (no MLP), as a plain table."""
        if type(self) is not KVPrefix:  # a plain KVPrefix would drop what a subclass adds
            raise InputTypeError(f"{type(self).__name__} is a subclass of KVPrefix: override for_inference")
        w = self.embedding.weight
        out = KVPrefix(self.config, self.num_virtual, projection=False, positions=self.positions,
                       rotate_keys=self.rotate_prefix_keys)
        out = out.to(device=w.device, dtype=w.dtype)
        out.embedding.weight.copy_(self.flat())  # after .to: no rounding through float32 on the way
        out.virtual_keep.copy_(self.virtual_keep)
        return out

    @classmethod
    def from_layer_kv(cls, config, kv: torch.Tensor, positions: str = "real", rotate_keys: bool = False) -> "KVPrefix":
        """Build a prefix holding given keys and values kv [L, 2, H_kv, P, d] (no MLP)."""
        c = config
        if kv.dim() != 5 or kv.shape[:3] != (c.num_hidden_layers, 2, c.num_key_value_heads) \
                or kv.shape[4] != c.head_dim:
            heads = "H" if c.num_key_value_heads == c.num_attention_heads else "H_kv"  # H_kv only when it differs
            raise InputError(f"kv shape {list(kv.shape)} does not fit this config: expected "
                             f"[L={c.num_hidden_layers}, 2, {heads}={c.num_key_value_heads}, P, d={c.head_dim}]")
        P = kv.shape[3]
        dtype = torch.promote_types(kv.dtype, torch.float32)  # bf16 keys still train in float32
        out = cls(config, P, positions=positions, rotate_keys=rotate_keys).to(device=kv.device, dtype=dtype)
        with torch.no_grad():
            out.embedding.weight.copy_(rearrange(kv, "l two h p d -> p (l two h d)"))  # [P, L*2*H_kv*d]
        return out
