"""Position-wise application: a function of each token alone, run a block of rows at a time.

The feed-forward block of a transformer layer treats every token on its own, so its input
[B, N, D] is really B*N independent rows. Running them through in blocks gives the same
numbers, but the widest activation of the layer, [B*N, D_ff], never exists whole.

Why bother: on CPU, a tensor of tens of MB is handed back to the operating system when it is
freed and faulted in again, page by page, when the next layer asks for it. Blocks of a few MB
are reused from the allocator's free lists instead. benchmarks/README.md measures the effect
on the encoder forward (page faults per pass, and time).

While autograd records a graph, every block's activations are saved for the backward pass
anyway, so blocks would not lower the peak and would only add a concatenation to both passes:
then all rows go through at once.
"""
from __future__ import annotations

from typing import Callable

import torch


def position_wise(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """fn applied to the rows of x [..., D] -> [..., D_out], at most `chunk_rows` rows at a time
    (0 = all rows at once). fn must treat rows independently, as a feed-forward block does."""
    rows = x.reshape(-1, x.shape[-1])  # [B*N, D]
    recording = torch.is_grad_enabled() and x.requires_grad  # a graph keeps every block anyway
    if chunk_rows <= 0 or rows.shape[0] <= chunk_rows or recording:
        return fn(x)
    out = torch.cat([fn(block) for block in rows.split(chunk_rows)])  # [B*N, D_out]
    return out.view(*x.shape[:-1], out.shape[-1])  # [..., D_out]
