"""Rotary position embeddings (RoPE), in the rotate-half convention of transformers' Llama.

A rotary model adds no position vector to its embeddings. Instead, inside attention, each query
and key row is turned by an angle proportional to its position: the d features form d/2 pairs
(feature j with feature j + d/2), and pair j turns by `position * theta^(-2j/d)`. A score q . k
then depends only on the *distance* between the two positions, never on where they are.

    t [B, H, n, d], positions [B or 1, n]  ->  t * cos + rotate_half(t) * sin   [B, H, n, d]

What that means for prompts (lesson 15):
- a key is turned when it is made, and a KV cache keeps it turned: a cached key carries its
  position with it. A K/V prefix handed to the layers as given is therefore "position-free":
  its keys act as if already rotated (PEFT's convention), i.e. they score like keys at position 0.
  Turning them on purpose to positions 0..P-1 (KVPrefix(rotate_keys=True)) places them just
  before the text instead.
- hidden-state prompt rows are keys and queries like any other row: they are turned at whatever
  positions the model gives them (transformer.Transformer.prompt_positions).

The angles are computed in float32 whatever the compute dtype (as transformers does; float64 in a
float64 model), then the cos and sin are cast to it: positions in the thousands times a frequency
lose their fraction in bf16. The frequencies are not a buffer, so `model.to(torch.bfloat16)` cannot
round them.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError


def rotate_half(t: torch.Tensor) -> torch.Tensor:
    """[..., d] -> [..., d]: (x1, x2) -> (-x2, x1), where x1 and x2 are the two halves of d."""
    x1, x2 = t.chunk(2, dim=-1)  # [..., d/2] each
    return torch.cat([-x2, x1], dim=-1)  # [..., d]


class Rotary(nn.Module):
    """RoPE for heads of size d with base `theta` (10,000 in LLaMA 1/2, 500,000 in LLaMA 3).

    A module without parameters or buffers (nothing to load or save), so that a model's blocks can
    share one instance and a speed device can find it (fast/rotary_tables.py)."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise InputError(f"rotary positions pair the head's features: head_dim must be even, got {head_dim}")
        self.head_dim, self.theta = head_dim, theta

    def inv_freq(self, dtype: torch.dtype, device) -> torch.Tensor:
        """theta^(-2j/d) for the d/2 pairs [d/2], computed on the CPU (the same bits on every device)."""
        with torch.device("cpu"):  # also under a meta-device context: these are numbers, not weights
            j = torch.arange(0, self.head_dim, 2, dtype=dtype)  # [d/2]: 0, 2, 4, ...
            return (1.0 / (self.theta ** (j / self.head_dim))).to(device)  # [d/2]

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype):
        """positions [B or 1, n] -> cos, sin [B or 1, 1, n, d] in `dtype`, the angles in float32
        (float64 for a float64 model, so its outputs do not round through float32)."""
        acc = torch.promote_types(dtype, torch.float32)
        freqs = positions[..., None].to(acc) * self.inv_freq(acc, positions.device)  # [B or 1, n, d/2]
        angles = torch.cat([freqs, freqs], dim=-1)  # [B or 1, n, d]: pair j is features j and j + d/2
        return angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]  # [B or 1, 1, n, d]

    def forward(self, t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """t [B, H, n, d] (queries or keys) turned to `positions` [B or 1, n]."""
        if positions is None:
            raise InputError("rotary positions need the rows' positions: got None")
        if positions.shape[-1] != t.shape[-2]:
            raise InputError(f"positions {list(positions.shape)} do not match the {t.shape[-2]} rows of {list(t.shape)}")
        cos, sin = self.cos_sin(positions, t.dtype)  # [B or 1, 1, n, d]
        return t * cos + rotate_half(t) * sin  # [B, H, n, d]

    def extra_repr(self) -> str:
        return f"d={self.head_dim}, theta={self.theta:g}"
