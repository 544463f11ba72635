"""The KV cache: what a decoding step needs from the steps before it."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    """Per-layer (K, V) [B, H_kv, T, d], which of the T keys are real [B, T], and the position
    the next token of each row takes [B]. A K/V prefix is its first P entries: generation with
    P-Tuning v2 simply starts from the prefix as the initial cache."""
    layers: list
    key_mask: torch.Tensor  # [B, T]
    next_position: torch.Tensor  # [B]

    @property
    def length(self) -> int:  # T: prefix + tokens so far
        return self.key_mask.shape[1]
