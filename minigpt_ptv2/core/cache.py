"""The KV cache: what a decoding step needs from the steps before it."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    """Per layer a joined Prefix(K, V) [B, H_kv, T, d] (core/prefix.py), which of the T keys are
    real [B, T], the position the next token of each row takes [B], and, apart, the gated
    prefixes the first pass read (L x Prefix(K, V, gate) or None; None: no gated prefix).

    A K/V prefix is the first P entries of the joined keys: generation with P-Tuning v2 simply
    starts from the prefix as the initial cache. A gated prefix is never among them: it is read
    under its own softmax, so it is kept as it was and handed to every later step again."""
    layers: list
    key_mask: torch.Tensor  # [B, T]
    next_position: torch.Tensor  # [B]
    gated: list | None = None

    @property
    def length(self) -> int:  # T: joined prefix + tokens so far
        return self.key_mask.shape[1]
