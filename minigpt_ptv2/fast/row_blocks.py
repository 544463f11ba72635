"""Speed device: the feed-forward block run a block of token rows at a time.

The feed-forward block of a transformer layer treats every token on its own, so its input
[B, N, D] is really B*N independent rows. Running them through in blocks gives the same
numbers up to float rounding, but the widest activation of the layer, [B*N, D_ff], never
exists whole.

Why bother: on CPU, a tensor of tens of MB is handed back to the operating system when it is
freed and faulted in again, page by page, when the next layer asks for it. Blocks of a few MB
are reused from the allocator's free lists instead. benchmarks/README.md measures the effect
on the encoder forward (page faults per pass, and time).

Blocks are used only where that reasoning holds: on CPU (a CUDA caching allocator already
reuses memory, and smaller products only add kernel launches) and with autograd off (with it
on, every block's activations are saved for the backward pass anyway, so blocks would not
lower the peak and would only add work).

How it is fitted: every architecture's block has a plain `feed_forward(x)` method (what the
lessons read). `enable(model, rows)` puts a wrapper in front of it on each block instance,
`disable(model)` takes it away; the class, its parameters and its state dict are untouched.
"""
from __future__ import annotations

import math
from functools import partial
from types import MethodType
from typing import Callable

import torch

from ..core.layer import Layer


def position_wise(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """fn applied to the rows of x [..., D] -> [..., D_out], at most `chunk_rows` rows at a time
    (0 = all rows at once). fn must treat rows independently, as a feed-forward block does."""
    R = math.prod(x.shape[:-1])  # B*N rows
    asked = chunk_rows > 0
    fits = R <= chunk_rows
    helps = x.device.type == "cpu" and not torch.is_grad_enabled()
    if not asked or fits or not helps:
        return fn(x)
    rows = x.reshape(R, x.shape[-1])  # [B*N, D]
    out = None
    for start in range(0, R, chunk_rows):
        y = fn(rows[start:start + chunk_rows])  # [rows, D_out]
        if out is None:
            out = y.new_empty(R, y.shape[-1])  # [B*N, D_out]
        out[start:start + y.shape[0]] = y
    return out.view(*x.shape[:-1], out.shape[-1])  # [..., D_out]


def _blocked_feed_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """The layer's own (class) feed_forward, on blocks of `layer.row_block` rows. Bound to the
    layer instance, so a copy of the model (deepcopy, pickle) brings its own, not the original's."""
    return position_wise(partial(type(layer).feed_forward, layer), x, layer.row_block)


def enable(model: torch.nn.Module, rows: int = 1024) -> int:
    """Run every block's feed_forward in blocks of `rows` token rows; returns how many blocks."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows <= 0:
        from ..errors import InputError
        raise InputError(f"rows must be a positive int, got {rows!r}")
    disable(model)
    n = 0
    for module in model.modules():
        if isinstance(module, Layer):  # the layer contract names its position-wise step
            module.row_block = rows
            module.feed_forward = MethodType(_blocked_feed_forward, module)
            n += 1
    return n


def disable(model: torch.nn.Module) -> None:
    """Back to the plain feed_forward of every block."""
    for module in model.modules():
        if "feed_forward" in module.__dict__:
            del module.feed_forward, module.row_block
