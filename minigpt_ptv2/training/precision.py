"""Mixed precision for training: what `TrainConfig.precision` ("fp32" | "bf16" | "fp16") turns on.

    fp32   everything in float32 (the default, and the reference the others are tested against)
    bf16   the forward pass under torch.autocast(bfloat16): matrix products in bf16, which keeps
           fp32's range (8 exponent bits) with 8 significant bits; no loss scaling needed
    fp16   the forward pass under torch.autocast(float16): 11 significant bits but a range that
           ends at 65504, so small gradients underflow to 0 unless the loss is scaled up first:
           a GradScaler multiplies the loss by S (65536 to start), divides the gradients by S
           again before clipping, and skips a step whose gradients hold inf/NaN, halving S

The trainable parameters stay float32 in all three (autocast never touches parameters: see
core/prompt_method.py), so AdamW updates float32 weights; the loss is computed in float32
(heads.task_loss). Autocast runs on the device the run trains on: bf16 and fp16 both work on a
CPU, where fp16 has few fast kernels and is mainly there to check a run before it goes to a GPU.
"""
from __future__ import annotations

import contextlib

import torch

from ..catalog import PRECISIONS  # ("fp32", "bf16", "fp16"): the names, torch-free for --help
from ..errors import InputError, NonFiniteError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast's dtype for each
# fp16 steps skipped in a row, before any update, after which a run stops: the loss scale has then
# gone from 2^16 down to 2^-16, so the gradients overflow float16 even scaled down 65536-fold
FP16_GIVE_UP = 32
FP16_ADVICE = "train with --precision bf16 (float32's range, no loss scaling) or fp32"


def check_precision(precision: str) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return DTYPES[precision]


def device_type(device) -> str:
    """The type of a device given as a string or a torch.device: "cuda:1" -> "cuda", "cpu" -> "cpu"."""
    return torch.device(device).type


def autocast(precision: str, device):
    """The forward pass's context: torch.autocast in bf16/fp16 on `device`'s type, or nothing."""
    dtype = check_precision(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type(device), dtype=dtype)


def fp16_overflow(where: str, skipped: int, scale: float) -> NonFiniteError:
    """The error for a fp16 run whose loss scaler skipped every step so far (trainer.fit)."""
    return NonFiniteError(f"at {where}: under --precision fp16 the gradients of each of the first {skipped} steps "
                          f"overflowed float16's range (inf/NaN), even with the loss scaled down to {scale:g}: no "
                          f"update has been applied, so the learning rate is not the cause; {FP16_ADVICE}")


def grad_scaler(precision: str, device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (None otherwise: fp32 and bf16 have the range they need)."""
    check_precision(precision)
    return torch.amp.GradScaler(device_type(device)) if precision == "fp16" else None
