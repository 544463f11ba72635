"""The backbone's linear layer, written the way the papers write it: y = x W + b.

W is stored [D_in, D_out] (the layout of "Attention Is All You Need" and of GPT-2's Conv1D
checkpoints), not `nn.Linear`'s [D_out, D_in]. Besides reading like the formula, this matters
for decoding: a batch-1 step multiplies one row by every weight matrix, and BLAS's
vector-matrix product over a [D_in, D_out] matrix is measurably faster on CPU than the
transposed product `nn.Linear` asks for (see benchmarks/README.md). For the large matrix
products of a full forward pass the two layouts cost the same.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class Linear(nn.Module):
    """x [..., D_in] -> x W + b [..., D_out], with W [D_in, D_out] and b [D_out] (no b when
    bias=False: LLaMA-style models have none)."""

    def __init__(self, d_in: int, d_out: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_in, d_out))  # [D_in, D_out]
        self.bias = nn.Parameter(torch.empty(d_out)) if bias else None  # [D_out]
        bound = 1 / math.sqrt(d_in)  # nn.Linear's default initialisation
        nn.init.uniform_(self.weight, -bound, bound)
        if bias:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])  # [rows, D_in]
        if self.bias is None:
            y = rows @ self.weight  # [rows, D_out]: x W
        else:
            y = torch.addmm(self.bias, rows, self.weight)  # [rows, D_out]: x W + b, one BLAS call
        return y.view(*x.shape[:-1], y.shape[-1])  # [..., D_out]

    def extra_repr(self) -> str:
        return f"d_in={self.weight.shape[0]}, d_out={self.weight.shape[1]}, bias={self.bias is not None}"
