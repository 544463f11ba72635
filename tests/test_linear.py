"""The backbone's Linear: y = x W + b with W stored [D_in, D_out]. It computes what nn.Linear
computes with the transposed matrix, forward and backward, for any number of leading axes.
Run: `pytest tests/test_linear.py`."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minigpt_ptv2.core.linear import Linear
from tolerances import EXACT, FP32_REL, FP32_ULPS


def test_weight_is_in_by_out_and_initialised_like_nn_linear():
    torch.manual_seed(0)
    lin = Linear(64, 24)
    assert lin.weight.shape == (64, 24) and lin.bias.shape == (24,)
    bound = 1 / math.sqrt(64)
    for t in (lin.weight, lin.bias):
        assert t.abs().max().item() <= bound
        assert t.abs().max().item() > 0.9 * bound  # spread over the whole range, not zeros


def test_same_function_as_f_linear_with_the_transpose_for_any_leading_axes():
    torch.manual_seed(1)
    lin = Linear(6, 5)
    W, b = lin.weight, lin.bias
    for shape in [(6,), (3, 6), (2, 3, 6), (2, 2, 3, 6)]:
        x = torch.randn(shape)
        y = lin(x)
        assert y.shape == shape[:-1] + (5,)
        # addmm (product and bias fused) vs matmul then add; F.linear reads W transposed
        torch.testing.assert_close(y, x @ W + b, atol=FP32_ULPS, rtol=0)
        torch.testing.assert_close(y, F.linear(x, W.t(), b), atol=FP32_ULPS, rtol=0)


def test_non_contiguous_input():
    torch.manual_seed(2)
    lin = Linear(6, 5)
    x = torch.randn(4, 9, 6)[:, 2:]  # a slice along N, as after inject-process-slice
    assert not x.is_contiguous()
    torch.testing.assert_close(lin(x), lin(x.contiguous()), atol=EXACT, rtol=0)  # reshape copies, then one addmm


def test_gradients_match_nn_linear():
    torch.manual_seed(3)
    lin = Linear(6, 5)
    ref = torch.nn.Linear(6, 5)
    with torch.no_grad():
        ref.weight.copy_(lin.weight.t())
        ref.bias.copy_(lin.bias)
    x = torch.randn(2, 3, 6, requires_grad=True)
    lin(x).square().sum().backward()
    gx, x.grad = x.grad.clone(), None
    ref(x).square().sum().backward()
    # products with W or W^T in other layouts; a weight gradient sums terms larger than itself
    # (up to ~7, where one fp32 ulp is 4.8e-7), so the bound is relative as well
    torch.testing.assert_close(gx, x.grad, atol=FP32_ULPS, rtol=FP32_REL)
    torch.testing.assert_close(lin.weight.grad, ref.weight.grad.t(), atol=FP32_ULPS, rtol=FP32_REL)
    torch.testing.assert_close(lin.bias.grad, ref.bias.grad, atol=FP32_ULPS, rtol=FP32_REL)
