"""Input checks with errors that name the argument and its shape.

A wrong shape should fail here, at the door, with a message a learner can act on, rather than
deep inside a matmul (or worse, not at all, thanks to broadcasting).
"""
from __future__ import annotations

import torch

from .errors import InputError, InputTypeError


def check_ids(input_ids: torch.Tensor, vocab_size: int, name: str = "input_ids") -> tuple[int, int]:
    """input_ids must be an integer tensor [B, N] with every id in [0, V). Returns (B, N)."""
    if not isinstance(input_ids, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise InputError(f"{name} must be [B, N] (rank 2), got shape {list(input_ids.shape)}; "
                         f"for one sequence use {name}.unsqueeze(0)")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise InputTypeError(f"{name} must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.shape[1] == 0:
        raise InputError(f"{name} has no tokens: shape {list(input_ids.shape)}")
    if input_ids.numel():
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise InputError(f"{name} contains token id {bad}, outside the vocabulary [0, {vocab_size})")
    return input_ids.shape[0], input_ids.shape[1]


def check_mask(mask: torch.Tensor | None, input_ids: torch.Tensor, name: str = "attention_mask"):
    """A padding mask must have exactly the ids' shape [B, N]; returns it as bool (True = real)."""
    if mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    if not isinstance(mask, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.shape != input_ids.shape:
        raise InputError(f"{name} shape {list(mask.shape)} does not match input_ids shape "
                         f"{list(input_ids.shape)} (both must be [B, N])")
    if mask.device != input_ids.device:
        raise InputError(f"{name} is on {mask.device} but input_ids is on {input_ids.device}")
    if mask.dtype != torch.bool:
        if mask.dtype.is_floating_point:
            bad = (mask != 0) & (mask != 1)
            if bool(bad.any()):
                raise InputError(f"{name} must hold 0/1 (1 = real token); got values like "
                                 f"{mask[bad][0].item()} (an additive mask is built internally)")
        mask = mask != 0
    return mask


def check_positions(last_position: int, max_positions: int, detail: str) -> None:
    """Refuse positions past the learned position table instead of indexing out of range."""
    if last_position >= max_positions:
        raise InputError(f"sequence needs position {last_position} but the position table has "
                         f"{max_positions} rows (0..{max_positions - 1}); {detail}")


def check_device(tensor: torch.Tensor, module: torch.nn.Module, name: str) -> None:
    param = next(module.parameters(), None)
    if param is not None and tensor.device != param.device:
        raise InputError(f"{name} is on {tensor.device} but the model is on {param.device}; "
                         f"move one with .to(device)")
