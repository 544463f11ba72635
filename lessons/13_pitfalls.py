# %% [markdown]
# # Lesson 13 — The pitfalls, one index
#
# Prompt tuning is a few lines of code, and most of the mistakes people make are in those few
# lines. This project started from five popular tutorials on P-Tuning v2 and prompt tuning,
# which the lessons call *seeds* and number 000 to 004 (`lessons/README.md` lists them; lesson
# 14 goes through them one by one). The same ten mistakes turn up in them and in library
# conventions. Each is named and run where it first comes up; this lesson is the list to come
# back to when your numbers do not match someone else's, with a link to where each one runs.
#
# Letters: B batch size, N real tokens, P prompt or prefix length, D hidden size, L layers,
# H attention heads, d = D / H the head size, H_kv key/value heads.
#
# | # | pitfall | what goes wrong | shown and run in |
# |---|---|---|---|
# | 1 | positions under a prefix | HF and PEFT number the real tokens P..P+N-1 behind a prefix: other outputs, and the longest input shrinks to the position table's length minus P | [lesson 06 §1](06_shallow_prompt_tuning.ipynb#1.-Where-the-prompt-goes,-and-where-the-real-tokens-sit-(pitfall-1)); seed 001's version in [lesson 14 §4](14_seed_by_seed.ipynb#4.-Seed-001:-its-model-is-a-shallow-prompt) |
# | 2 | pooling a virtual token | after a prompt is prepended, row 0 is a prompt row; [CLS] sits at row P until the P rows are sliced off | [lesson 06 §2](06_shallow_prompt_tuning.ipynb#2.-Pool-after-slicing-(pitfall-2)) |
# | 3 | prefixing the queries | P+N output rows for a residual of N; the N that fit are what K/V-only attention gives | [lesson 08 §2](08_kv_prefixes.ipynb#2.-Q-is-never-prefixed-(pitfall-3)) |
# | 4 | a zero prefix is not "no prefix" | zero keys score 0, not minus infinity, and take attention from the real keys; only a masked prefix is off | [lesson 08 §3](08_kv_prefixes.ipynb#3.-A-zero-prefix-is-not-a-no-op;-a-masked-prefix-is-(pitfall-4)); as attention in [lesson 11](11_attention_on_prefixes.ipynb); from the inside in [§1 below](#1.-Zero-vs-masked,-from-the-inside-(pitfall-4)) |
# | 5 | `repeat` (or an MLP run per row) where `expand` does | B copies of the prefix, or B times the MLP's work, for the same values and gradients | [lesson 08 §5](08_kv_prefixes.ipynb#5.-Compute-once,-then-expand-(pitfall-5),-measured) |
# | 6 | a hard-coded `[2, 10]` prompt initialisation | the weight is replaced by a `2 x 10` matrix without an error; the first forward fails far from the cause | [lesson 06 §3](06_shallow_prompt_tuning.ipynb#3.-Seed-003's-initialisation-bug-(pitfall-6)) |
# | 7 | a 2-D mask handed to a layer; "every layer" in the text, the input layer in the code | it crashes, or at B = 1 only divides the pads' weight by e; a shallow prompt joins the input once | [lesson 07 §4](07_deep_prompts.ipynb#4.-Seed-000's-mask-mistake:-a-2-D-mask-where-the-layer-needs-4-D-(pitfall-7)) and [§5](07_deep_prompts.ipynb#5.-Seed-001's-mistake:-every-layer-in-the-text,-one-layer-in-the-code-(pitfall-7)) |
# | 8 | small differences that break equivalence with a reference | the GELU flavour, LayerNorm eps, the weight layout's transpose, token-type row 0, dropout, the mask constant: each fails a comparison at 1e-5 | mask constant: [lesson 02 §3](02_attention_from_scratch.ipynb#3.-The-mask:-why-%22most-negative-float%22,-not-minus-infinity-(pitfall-8)); token-type row 0: [lesson 03 §2](03_bert_encoder.ipynb#2.-Embeddings:-three-tables,-one-LayerNorm); GELU: [lesson 03 §3](03_bert_encoder.ipynb#3.-One-layer,-post-LayerNorm); dropout: [lesson 03 §5](03_bert_encoder.ipynb#5.-Dropout-is-off-in-eval-mode); weight layout: [lesson 04 §2](04_loading_pretrained_bert.ipynb#2.-The-table-of-names,-and-loading-by-hand); eps, a forgotten transpose and the mask constant in fp16: [§2 below](#2.-Three-breakers-no-other-lesson-runs-(pitfall-8)) |
# | 9 | positions under rotary embeddings | a K/V prefix key carries no rotation unless you give it one; a hidden-state prompt's rows turn at whatever positions they get | [lesson 15 §3](15_modern_decoder_rope_and_gqa.ipynb#3.-What-position-does-a-prefix-key-have?-(pitfall-9)) |
# | 10 | "starts equal to the frozen model" under one softmax | any prefix joined to the keys takes attention; only a gate on a separately normalised prefix makes the start exact | [lesson 15 §7](15_modern_decoder_rope_and_gqa.ipynb#7.-A-gated-prefix:-zero-is-not-off,-a-gate-at-0-is-(pitfall-10)) |
#
# Two things run here: pitfall 4 seen in the trace, and the three equivalence breakers no other
# lesson runs.

# %%
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minigpt_ptv2 import BertEncoder, ShapeTrace, preset
from minigpt_ptv2.core.attention import additive_mask
from minigpt_ptv2.prompts import KVPrefix
from minigpt_ptv2.trace import dims_for, side_by_side



def tiny_encoder(seed: int = 0, **changes) -> BertEncoder:
    torch.manual_seed(seed)
    return BertEncoder(preset("bert-tiny").replace(**changes)).eval()  # D=24, H=4, 64 positions


# %% [markdown]
# ## 1. Zero vs masked, from the inside (pitfall 4)
#
# Tiny BERT (`bert-tiny`: D=24, H=4, d=6, L=3, vocabulary 120, feed-forward width 40), layer 0
# shown, B=8, N=7, P=5 (every letter a different size), no padding, a prefix of zeros. With a
# zero prefix nothing is masked, so no keep-mask is built at all (the fused attention runs
# without one): the zeros are scored like any key. Masking the prefix adds one row,
# `mask.keep [B, 1, 1, P+N]`, and that row is the whole difference between "off" and "zero".

# %%
def trace_example(B=8, N=7, P=5, layers=3):
    cfg = preset("bert-tiny").replace(num_hidden_layers=layers)
    model = tiny_encoder(num_hidden_layers=layers)
    prefix = KVPrefix(cfg, P)
    nn.init.zeros_(prefix.embedding.weight)
    model.attach(prefix)
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    traces = []
    with torch.no_grad():
        for masked in (False, True):
            prefix.virtual_keep[:] = not masked
            with ShapeTrace(dims=dims_for(cfg, B=B, N=N, P=P), layers=(0,)) as tr:
                model(ids)
            traces.append(tr)
    return traces[0], traces[1]


zero, masked = trace_example()
print(side_by_side(zero, masked, ("zero prefix", "masked prefix")))


# %% [markdown]
# ## 2. Three breakers no other lesson runs (pitfall 8)
#
# When your model and a reference (transformers, PEFT) disagree in the third decimal, it is
# usually one of pitfall 8's small differences, and every one of them fails a comparison at
# 1e-5. Lessons 02-04 run most of them (the table above); three are left:
#
# - **LayerNorm eps**: 1e-12 in BERT, 1e-5 in GPT-2; about 1e-5 apart at unit scale, far more
#   when a row's variance is small.
# - **Weight layout**: GPT-2's Conv1D (and this package's `Linear`) stores weights `[in, out]`,
#   `nn.Linear` (and so BERT's checkpoints) `[out, in]`. Square matrices (D x D) load without
#   any shape error when the transpose is forgotten.
# - **The mask constant in half precision**: fp32's most negative number overflows to -inf in
#   fp16 (and -inf turns a fully masked row into NaN, lesson 02 §3), so the constant must come
#   from the compute dtype.

# %%
def layer_norm_eps_gap(scales=(1.0, 1e-3)) -> list:
    """max |LN(h, eps=1e-12) - LN(h, eps=1e-5)| for rows of each std: BERT's eps against GPT-2's."""
    torch.manual_seed(0)
    gaps = []
    for scale in scales:
        h = torch.randn(4, 24) * scale  # [4, D]: rows with std `scale`
        gaps.append(float((F.layer_norm(h, (24,), eps=1e-12) - F.layer_norm(h, (24,), eps=1e-5)).abs().max()))
        print(f"LayerNorm eps 1e-12 vs 1e-5, rows with std {scale:g}: max |diff| {gaps[-1]:.1e}")
    assert 1e-5 < gaps[0] < 1e-4 and gaps[1] > 0.1
    return gaps


eps_gaps = layer_norm_eps_gap()


# %%
def forgotten_transpose(D=24) -> float:
    """A BERT (nn.Linear) weight [out, in] loaded into a layer that computes v W + b, untransposed."""
    torch.manual_seed(0)
    w, b, v = torch.randn(D, D), torch.randn(D), torch.randn(3, D)  # w [out, in], b [D], v [3, D]
    bert = F.linear(v, w, b)  # [3, D]: what BERT computes, v w^T + b
    forgot = v @ w + b  # [3, D]: loaded as is, no error
    gap = float((bert - forgot).abs().max())
    print(f"nn.Linear [out, in] loaded without transpose: max |diff| {gap:.2f}; "
          f"with w.T: {(bert - (v @ w.T + b)).abs().max():.1e}")
    assert gap > 1e-3 and torch.allclose(bert, v @ w.T + b, atol=1e-5)
    return gap


forgotten_transpose()


# %%
def mask_constant_in_fp16():
    """fp32's most negative float, cast to fp16, is -inf; the mask built in fp16 stays finite."""
    half = torch.tensor(torch.finfo(torch.float32).min).to(torch.float16)
    nothing_kept = torch.zeros(1, 4, dtype=torch.bool)  # [1, Nk]: a fully masked row
    in_dtype = additive_mask(nothing_kept, torch.float16)[0, 0]
    print(f"fp32's min cast to fp16: {half.item()}; additive_mask builds the mask in the compute dtype: "
          f"{in_dtype.item()}")
    assert torch.isinf(half) and torch.isfinite(in_dtype)


mask_constant_in_fp16()


# %% [markdown]
# ## What to remember
#
# 1. Decide where real tokens sit under a prefix (0..N-1, or P..P+N-1 like PEFT) and say so;
#    the shifted convention costs P positions of length.
# 2. After a shallow prompt, slice the virtual rows off before pooling: row 0 must be [CLS].
# 3. Only K and V get a prefix. A prefixed Q is wasted work at best, a shape error at worst.
# 4. Zero is not off. Masked is off.
# 5. Compute the prefix once and `expand` it: `repeat` makes B copies, an MLP per row does B
#    times the work as well, and neither changes a value or a gradient.
# 6. Build tensors at the size you were asked for and check them when they are given to you.
# 7. Layers take additive (or boolean keep) 4-D masks; a 2-D 0/1 mask crashes, or at B = 1 only
#    down-weights the pads by e. "Every layer" should be visible in a trace.
# 8. When comparing with a reference: GELU flavour, LayerNorm eps, the weight layout's transpose,
#    token-type row 0, eval mode, and a finite mask constant in the compute dtype.
# 9. Under RoPE, say whether a prefix key is turned, and to which position.
# 10. "Starts equal to the frozen model" needs a gate at 0 on a separately normalised prefix.
#
# ## Check your understanding
#
# 1. A BERT layer gets scores `[B, H, P+N, P+N]` with P=4, N=6, and seed 000's 0/1 mask
#    `[B, P+N]`. For which batch sizes does `scores + mask` run, and what does it do then?
#
#    <details><summary>Answer</summary>
#
#    Broadcasting aligns `[B, 10]` with the last two axes `[10, 10]`, so it runs only for B = 1
#    and B = P+N = 10. At B = 1 every kept key gets +1 and every pad +0: the pads are
#    down-weighted by e relative to each kept key, not removed. At B = 10, row i of the mask
#    lands on query i of every example: the wrong example's padding, on one query each.
#
#    </details>
#
# 2. At B = 1, a query gives its two pad keys 21.8% of its attention with no mask. Roughly how
#    much do they get under the 2-D 0/1 mask, and under the keep-mask?
#
#    <details><summary>Answer</summary>
#
#    The pads' weights are divided by e while the kept keys' are not, then everything is
#    normalised: 0.218 / (0.218 + e * 0.782) = 0.093, about 9% (lesson 07 §4 measures 9.8%, an
#    average over queries with different shares). Under the keep-mask: exactly 0.
#
#    </details>
#
# 3. A prefix MLP at BERT-base sizes costs 0.39 GFLOP for P=20. What does it cost at B=32 with
#    `expand`, with `repeat`, and run per row? Which of the three has different gradients?
#
#    <details><summary>Answer</summary>
#
#    0.39, 0.39 and 12.6 GFLOP: `expand` and `repeat` run the MLP once, per row runs it 32 times.
#    None: all three compute the same function of the same parameters, so the gradients agree
#    (up to float rounding in the order of the sums). `repeat` and per row cost 32 copies of
#    the output in memory.
#
#    </details>
#
# 4. Why is a forgotten transpose easy to miss for W_Q in BERT-base but not for the
#    feed-forward weights?
#
#    <details><summary>Answer</summary>
#
#    W_Q is 768 x 768: `[out, in]` and `[in, out]` have the same shape, so it loads and runs, and
#    only the numbers are wrong. The feed-forward weights are 768 x 3072: loading them without
#    the transpose is a shape error.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/13_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. Pitfall 1 with a K/V prefix on the shipped MiniLM (`BertEncoder.from_pretrained(default_model_dir())`,
#    with `from minigpt_ptv2.pretrained import default_model_dir`) and P=20: what is the longest
#    N each policy accepts? [`try_1`]
# 2. With `layer_norm_eps_gap`'s rows, find the row scale at which the two LayerNorm eps values
#    start to differ by more than 1e-5. [`try_2`]
# 3. `python -m minigpt_ptv2 trace --method soft --config bert-tiny --B 2 --N 5 --P 3` and
#    `--method deep`: count the `inject` rows (pitfall 7). [`try_3`]
# 4. Run lesson 07's `two_d_mask_mistake` with P=4, N=6 for every B from 1 to 12: which ones
#    run? [`try_4`]
