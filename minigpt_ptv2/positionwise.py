"""Position-wise application: a function of each token alone, run a block of rows at a time.

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
"""
from __future__ import annotations

import math
from typing import Callable

import torch


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
