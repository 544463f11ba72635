"""Every tolerance the tests compare numbers with, named once, with its reason.

"obs" is the largest difference the whole suite meets for that name on a CPU with AVX-512 and
with the instruction set capped at AVX2, the kernels a CPU without AVX-512 runs:

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 pytest

(ATen picks its vectorised kernels by the first variable, oneDNN by the second; the third
changed nothing measurable). Each bound sits three to ten times above the worst observation (fp64:
a hundred, a solve's error grows with the matrix's condition), so that another CPU, thread count
or library build still passes, and far below what a real bug moves outputs by (1e-3 or more).
Where two code paths really run the same kernels in the same order the tests say so and compare
exactly, with torch.equal or EXACT.
"""
from __future__ import annotations

import torch

# Same kernels on the same inputs in the same order: bit-identical on any CPU. obs 0 / 0.
EXACT = 0.0

# fp32, one short computation two ways on O(1) values (a fused product vs its slices, addmm vs
# matmul + add, SDPA vs the explicit softmax on one small module): a few ulps. obs 3.0e-7 / 3.0e-7.
FP32_ULPS = 1e-6

# fp32, a whole model computed by other kernels or in another order (ours vs transformers / PEFT,
# cache vs recomputation, the bridge, FFN row blocks, DDP's all-reduce), through L layers on
# activations up to ~10. obs 8.8e-6 / 4.8e-6 (9.8e-6 on ATen's unvectorised kernels).
FP32_KERNELS = 3e-5

# fp32, relative: one quantity computed two ways (a gradient norm, a clipped gradient, a sum of
# terms larger than itself, a [D, 3D] product vs its slices). obs 1.8e-6 / 1.8e-6 relative;
# paired with an atol, at most 35% / 35% of the bound.
FP32_REL = 1e-5

# An fp32 output recorded once, on one CPU, vs the same computation live on another: AVX-512 and
# AVX2 kernels accumulate in another order. obs 0 (recorded here) / 3.7e-6 (1.0e-5 unvectorised).
RECORDED = 3e-5

# fp64: the same math in another order, or a linear solve (error ~ cond(W) * 1e-16).
# obs 1.0e-12 / 1.0e-12.
FP64 = 1e-10

# Hypothesis-drawn small configs, jittered weights, fp32 (any output scale, so relative as well):
# ours vs transformers, cache vs recomputation, the bridge. obs 1.5e-5 / 1.8e-5 (19% / 16% of it).
PROPERTY = dict(rtol=1e-4, atol=FP32_KERNELS)

# A probability row summed to 1, each probability rounded to the dtype first (bf16 keeps 8
# significant bits, fp16 11). obs fp32 2.4e-7 / 2.4e-7, fp16 3.1e-4 / 3.1e-4, bf16 2.9e-3 / 2.9e-3.
PROB_SUM = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 1e-2}

# The first loss under bf16 autocast vs fp32, relative: the matrix products round to bf16.
# obs 9.5e-4 / 1.1e-3.
AUTOCAST_LOSS_REL = 0.01

# Each epoch's mean loss of a short run (3 epochs of 4 AdamW steps, bert-tiny) trained under bf16
# or fp16 autocast vs the same run in fp32, relative: the rounding compounds a little over the
# steps. obs bf16 9.1e-4 / 9.1e-4, fp16 3.3e-4 / 4.0e-4.
AUTOCAST_TRAINED_REL = 0.01

# fp32 on a CUDA GPU vs the CPU: other kernels entirely. Not measured here (no GPU); the tests
# that use it skip without one.
CPU_VS_CUDA = 1e-4
