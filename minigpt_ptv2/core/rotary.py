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

Rescaled RoPE (`scaling`), for a context longer than the one the model was trained for: the
frequencies theta^(-2j/d) are divided by `factor` ("linear": positions count `factor` times
slower), or, LLaMA 3.1's "llama3", divided for the slow pairs only (wavelengths beyond
original_max_position_embeddings / low_freq_factor), kept for the fast ones (below
original_max_position_embeddings / high_freq_factor), and blended in between. Both are fixed
numbers, computed once as transformers computes them. Schemes whose frequencies change with the
sequence length while running (dynamic, longrope) or that also scale attention (yarn) are not
implemented: they are refused by name.

The angles are computed in float32 whatever the compute dtype (as transformers does; float64 in a
float64 model), then the cos and sin are cast to it: positions in the thousands times a frequency
lose their fraction in bf16. The frequencies are not a buffer, so `model.to(torch.bfloat16)` cannot
round them.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError


def rotate_half(t: torch.Tensor) -> torch.Tensor:
    """[..., d] -> [..., d]: (x1, x2) -> (-x2, x1), where x1 and x2 are the two halves of d."""
    x1, x2 = t.chunk(2, dim=-1)  # [..., d/2] each
    return torch.cat([-x2, x1], dim=-1)  # [..., d]


# rope_type -> the fields its `scaling` holds besides rope_type (None: plain RoPE, no scaling)
SCALINGS = {"linear": ("factor",),
            "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}


def check_scaling(scaling: dict | None, source: str = "rope scaling") -> dict | None:
    """None, or {"rope_type": one of SCALINGS, and exactly its fields}, each a finite number > 0
    (original_max_position_embeddings a positive int; llama3's high_freq_factor above low_freq_factor)."""
    if scaling is None:
        return None
    kind = scaling.get("rope_type") if isinstance(scaling, dict) else None
    if kind not in SCALINGS:
        raise InputError(f"{source}: rope_type {kind!r} is not implemented: minigpt_ptv2 has the plain RoPE and "
                         f"{', '.join(repr(k) for k in SCALINGS)} (dynamic and longrope change with the sequence "
                         f"length while running, yarn also scales attention)")
    fields, wanted = set(scaling) - {"rope_type"}, set(SCALINGS[kind])
    if fields != wanted:
        wrong = [f"{what} {sorted(names)}" for what, names in (("missing", wanted - fields), ("unknown", fields - wanted))
                 if names]
        raise InputError(f"{source}: rope_type {kind!r} takes {', '.join(SCALINGS[kind])}; {', '.join(wrong)}")
    for name in SCALINGS[kind]:
        value = scaling[name]
        whole = name == "original_max_position_embeddings"
        ok = (isinstance(value, int) if whole else isinstance(value, (int, float))) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value <= 0:
            raise InputError(f"{source}: {name} must be {'a positive int' if whole else 'a finite number > 0'}, "
                             f"got {value!r}")
    if kind == "llama3" and not scaling["high_freq_factor"] > scaling["low_freq_factor"]:
        raise InputError(f"{source}: high_freq_factor ({scaling['high_freq_factor']}) must be above low_freq_factor "
                         f"({scaling['low_freq_factor']}): the frequencies between them are blended")
    return scaling


def scaled(inv_freq: torch.Tensor, scaling: dict | None) -> torch.Tensor:
    """The frequencies [d/2] rescaled (module docstring), with transformers' operations in its order."""
    if scaling is None:
        return inv_freq
    factor = scaling["factor"]
    if scaling["rope_type"] == "linear":
        return inv_freq / factor
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]  # llama3
    context = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq  # [d/2]: positions per full turn of each pair
    slow = torch.where(wavelen > context / low, inv_freq / factor, inv_freq)  # slow pairs: divided
    smooth = (context / wavelen - low) / (high - low)  # [d/2]: 0 at the slow end, 1 at the fast end
    blended = (1 - smooth) * slow / factor + smooth * slow
    medium = ~(wavelen < context / high) * ~(wavelen > context / low)
    return torch.where(medium, blended, slow)  # [d/2]


class Rotary(nn.Module):
    """RoPE for heads of size d with base `theta` (10,000 in LLaMA 1/2, 500,000 in LLaMA 3), and an
    optional `scaling` (module docstring; check_scaling says what it holds).

    A module without parameters or buffers (nothing to load or save), so that a model's blocks can
    share one instance and a speed device can find it (fast/rotary_tables.py)."""

    def __init__(self, head_dim: int, theta: float = 10000.0, scaling: dict | None = None):
        super().__init__()
        if head_dim % 2:
            raise InputError(f"rotary positions pair the head's features: head_dim must be even, got {head_dim}")
        self.head_dim, self.theta, self.scaling = head_dim, theta, check_scaling(scaling)

    def inv_freq(self, dtype: torch.dtype, device) -> torch.Tensor:
        """theta^(-2j/d) for the d/2 pairs [d/2], rescaled if asked, computed on the CPU (the same
        bits on every device)."""
        with torch.device("cpu"):  # also under a meta-device context: these are numbers, not weights
            j = torch.arange(0, self.head_dim, 2, dtype=dtype)  # [d/2]: 0, 2, 4, ...
            return scaled(1.0 / (self.theta ** (j / self.head_dim)), self.scaling).to(device)  # [d/2]

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
        return f"d={self.head_dim}, theta={self.theta:g}" + (f", {self.scaling}" if self.scaling else "")
