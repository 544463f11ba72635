"""Input checks with errors that name the argument and its shape, dtype or value.

A wrong input should fail here, at the door, with a message a learner can act on, rather than
deep inside a matmul or an embedding lookup (or worse, not at all, thanks to broadcasting). Every
entry point (Encoder.forward, Decoder.forward, generate, the task heads, evaluation and
prediction) runs the same checks, so an input refused at one door is refused at all of them.

The checks cost one pass over the small [B, N] integer tensors per forward (min / max, and
whether a mask holds only 0/1), never per layer.
"""
from __future__ import annotations

import torch

from ..errors import InputError, InputTypeError

INDEX_DTYPES = (torch.int64, torch.int32)  # what nn.Embedding and cross_entropy index with


def _check_index_tensor(t, name: str, what: str) -> None:
    """A tensor of indices: torch.Tensor, int64/int32 (not uint8, bool or float), with values."""
    if not isinstance(t, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor of {what}, got {type(t).__name__}")
    if t.dtype not in INDEX_DTYPES:
        raise InputTypeError(f"{name} must hold integer {what} (torch.int64 or torch.int32), got dtype "
                             f"{t.dtype}; convert with {name}.long()")
    if t.device.type == "meta":
        raise InputError(f"{name} is on the meta device: it has a shape {list(t.shape)} but no values")


def check_ids(input_ids: torch.Tensor, vocab_size: int, name: str = "input_ids") -> tuple[int, int]:
    """input_ids must be an int64/int32 tensor [B, N], B and N > 0, every id in [0, V). Returns (B, N)."""
    if not isinstance(input_ids, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise InputError(f"{name} must be [B, N] (rank 2), got shape {list(input_ids.shape)}; "
                         f"for one sequence use {name}.unsqueeze(0)")
    _check_index_tensor(input_ids, name, "token ids")
    if input_ids.shape[0] == 0:
        raise InputError(f"{name} has an empty batch: shape {list(input_ids.shape)} (B = 0)")
    if input_ids.shape[1] == 0:
        raise InputError(f"{name} has no tokens: shape {list(input_ids.shape)}")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise InputError(f"{name} contains token id {bad}, outside the vocabulary [0, {vocab_size})")
    return input_ids.shape[0], input_ids.shape[1]


def check_mask(mask: torch.Tensor | None, input_ids: torch.Tensor, name: str = "attention_mask"):
    """A padding mask [B, N] (bool, or integers / floats holding only 0 and 1) on the ids' device;
    returns it as bool (True = real token). Any other value is refused, whatever the dtype: 2 or
    -10000 (an additive mask) would otherwise read as "real" and 0.5 as anything."""
    if mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    if not isinstance(mask, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.shape != input_ids.shape:
        raise InputError(f"{name} shape {list(mask.shape)} does not match input_ids shape "
                         f"{list(input_ids.shape)} (both must be [B, N])")
    if mask.device != input_ids.device:
        raise InputError(f"{name} is on {mask.device} but input_ids is on {input_ids.device}")
    if mask.dtype == torch.bool:
        return mask
    if mask.dtype.is_complex:
        raise InputTypeError(f"{name} must hold 0/1 as bool, integers or floats, got dtype {mask.dtype}")
    bad = (mask != 0) & (mask != 1)  # [B, N]
    if bool(bad.any()):
        raise InputError(f"{name} must hold 0/1 (1 = real token); got values like "
                         f"{mask[bad][0].item()} (an additive mask is built internally)")
    return mask != 0


def check_positions(last_position: int, max_positions: int, detail: str) -> None:
    """Refuse positions past the learned position table instead of indexing out of range."""
    if last_position >= max_positions:
        raise InputError(f"sequence needs position {last_position} but the position table has "
                         f"{max_positions} rows (0..{max_positions - 1}); {detail}")


def check_position_ids(position_ids, input_ids: torch.Tensor, max_positions: int) -> None:
    """Explicit position_ids: integer [B, N] or [1, N] (shared by the batch), in [0, max_positions)."""
    _check_index_tensor(position_ids, "position_ids", "positions")
    B, N = input_ids.shape
    if tuple(position_ids.shape) not in ((B, N), (1, N)):
        raise InputError(f"position_ids shape {list(position_ids.shape)} must be [B={B}, N={N}] or "
                         f"[1, N={N}] to match input_ids {list(input_ids.shape)}")
    if position_ids.device != input_ids.device:
        raise InputError(f"position_ids is on {position_ids.device} but input_ids is on {input_ids.device}")
    lo, hi = int(position_ids.min()), int(position_ids.max())
    if lo < 0 or hi >= max_positions:
        raise InputError(f"position_ids contains position {lo if lo < 0 else hi}, outside the position "
                         f"table [0, {max_positions}) (rows 0..{max_positions - 1})")


def check_labels(labels, like_shape, num_classes: int, device, like: str = "the logits",
                 ignore_index: int = -100) -> torch.Tensor:
    """Class labels of shape `like_shape`, integer, each in [0, C) or `ignore_index`; returns them
    as int64 (what cross_entropy indexes with). Out-of-range labels are a crash on CPU and a
    device-side assert on CUDA: refused here with the value and the range instead."""
    _check_index_tensor(labels, "labels", "class ids")
    if tuple(labels.shape) != tuple(like_shape):
        raise InputError(f"labels shape {list(labels.shape)} does not match {like} {list(like_shape)}")
    if labels.device != device:
        raise InputError(f"labels is on {labels.device} but {like} is on {device}")
    if labels.numel():
        real = labels[labels != ignore_index]
        if real.numel():
            lo, hi = int(real.min()), int(real.max())
            if lo < 0 or hi >= num_classes:
                raise InputError(f"labels contains {lo if lo < 0 else hi}, outside [0, {num_classes}) "
                                 f"({ignore_index} marks a position to ignore)")
    return labels.long()


def check_max_length(max_length, model=None, name: str = "max_length") -> int:
    """The token limit rule every command applies (train, eval, predict, and the API): room for
    [CLS], [SEP] and at least one token, and no more positions than the model's table holds
    (less the prompt's P under positions='shifted'). `name` is what the message calls it."""
    if isinstance(max_length, bool) or not isinstance(max_length, int):
        raise InputTypeError(f"{name} must be an int, got {max_length!r}")
    if max_length < 3:
        raise InputError(f"{name} must leave room for [CLS], [SEP] and a token, got {max_length}")
    if model is not None:
        table = model.config.max_position_embeddings
        shift = model.prompt.position_offset() if model.prompt is not None else 0
        if max_length + shift > table:
            taken = f", {shift} of them taken by the prompt under positions='shifted'" if shift else ""
            raise InputError(f"{name} {max_length} is more than the model can read: its position table has "
                             f"{table} rows{taken}; use {name} {table - shift} or less")
    return max_length


def check_batch_size(batch_size, name: str = "batch_size") -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise InputError(f"{name} must be positive, got {batch_size!r}")
    return batch_size


def check_device(tensor: torch.Tensor, module: torch.nn.Module, name: str) -> None:
    param = next(module.parameters(), None)
    if param is not None and tensor.device != param.device:
        raise InputError(f"{name} is on {tensor.device} but the model is on {param.device}; "
                         f"move one with .to(device)")
