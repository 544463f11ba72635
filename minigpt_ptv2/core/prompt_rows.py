"""P rows in front, sliced off after: the one idea behind shallow and deep hidden-state prompts.

A shallow prompt puts its P rows in front of the embeddings once and drops them after the last
layer; a deep hidden-state prompt puts fresh rows in front before every layer and drops them
after it. Both go through these functions, so the rule (rows, their keys in the mask, their
positions, and the slice) is written once:

    in_front(rows [B, P, D], x [B, N, D])                 -> [B, P+N, D]
    keys_in_front(key_mask [B, N], virtual_keep [P], [B, P] or P) -> [B, P+N]
    positions_in_front(rows_pos [1, P], pos [B or 1, N])  -> [B or 1, P+N]
    drop_front(x [B, P+N, D], P)                          -> [B, N, D]
"""
from __future__ import annotations

import torch


def in_front(rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """rows [B, P, D] before x [B, N, D] -> [B, P+N, D]."""
    return torch.cat([rows, x], dim=1)  # [B, P+N, D]


def keys_in_front(key_mask: torch.Tensor, virtual_keep: torch.Tensor | int) -> torch.Tensor:
    """[B, N] key mask -> [B, P+N]: the P virtual entries first, kept where `virtual_keep` is True:
    [P] the same for every row, [B, P] per row (prompts/mixed.py), an int P: all P kept."""
    if isinstance(virtual_keep, int):
        virtual_keep = torch.ones(virtual_keep, dtype=torch.bool)
    B, P = key_mask.shape[0], virtual_keep.shape[-1]
    front = virtual_keep.to(key_mask.device).bool().expand(B, P)  # [B, P]
    return torch.cat([front, key_mask], dim=1)  # [B, P+N]


def positions_in_front(rows_pos: torch.Tensor | None, pos: torch.Tensor | None) -> torch.Tensor | None:
    """The positions of the P rows [1, P] before those of the N rows [B or 1, N] -> [B or 1, P+N];
    None when the model applies no positions inside its layers (learned absolute positions are
    added once, to the embeddings)."""
    if rows_pos is None or pos is None:
        return None
    B = max(rows_pos.shape[0], pos.shape[0])
    return torch.cat([rows_pos.expand(B, -1), pos.expand(B, -1)], dim=1)  # [B or 1, P+N]


def drop_front(x: torch.Tensor, P: int) -> torch.Tensor:
    """[B, P+N, D] -> [B, N, D]: the prompt rows' own outputs are never used, only what the real
    rows read from them through attention."""
    return x[:, P:]  # [B, N, D]
