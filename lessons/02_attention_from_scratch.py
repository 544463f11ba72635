# %% [markdown]
# # Lesson 02 — Attention from scratch (and explicit vs fused)
#
# Every prompt method in this project ends up inside one function: multi-head attention. Deep
# prompts give it more rows to attend to; K/V prefixes give it more keys and values. So we
# build it by hand once, check it against the package's `MultiHeadAttention`, and learn what
# the mask really does.
#
# For one head, with queries Q `[N, d]`, keys K `[Nk, d]`, values V `[Nk, d]` and an additive
# mask M `[N, Nk]` (0 = may look, very negative = may not):
#
#     attention(Q, K, V) = softmax(Q K^T / sqrt(d) + M) V          -> [N, d]
#
# With H heads this runs H times side by side on `[B, H, N, d]` tensors.

# %%
from __future__ import annotations

import math
import os

import torch
from einops import rearrange

from minigpt_ptv2 import MultiHeadAttention, ShapeTrace
from minigpt_ptv2.core.attention import additive_mask
from minigpt_ptv2.trace import side_by_side
from minigpt_ptv2.viz import save_figure

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")

# %% [markdown]
# ## 1. By hand, with the module's own weights
#
# `MultiHeadAttention` holds two linear layers, both written y = x W + b with W stored
# [D_in, D_out] as in the paper: `qkv` (D -> 3D), whose weight is W_Q, W_K and W_V side by side,
# and `output` (D -> D). One product with the [D, 3D] matrix gives Q, K and V at once, which is
# what the module does; here we cut the matrix into its three blocks to show they are ordinary
# per-role projections. We reuse the module's weights, so any difference is in the computation.

# %%
def by_hand(attn: MultiHeadAttention, x: torch.Tensor, keep: torch.Tensor | None = None):
    """x [B, N, D], keep [B, 1, 1, N] boolean or None -> (out [B, N, D], probs [B, H, N, N])."""
    H, D = attn.num_heads, x.shape[-1]
    W_q, W_k, W_v = attn.qkv.weight.split(D, dim=1)  # [D, D] each
    b_q, b_k, b_v = attn.qkv.bias.split(D)  # [D] each
    q = rearrange(x @ W_q + b_q, "b n (h d) -> b h n d", h=H)  # [B, H, N, d]
    k = rearrange(x @ W_k + b_k, "b n (h d) -> b h n d", h=H)  # [B, H, N, d]
    v = rearrange(x @ W_v + b_v, "b n (h d) -> b h n d", h=H)  # [B, H, N, d]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, H, N, N]
    if keep is not None:
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)  # [B, H, N, N]
    probs = scores.softmax(dim=-1)  # [B, H, N, N]: each row sums to 1
    ctx = probs @ v  # [B, H, N, d]
    out = rearrange(ctx, "b h n d -> b n (h d)") @ attn.output.weight + attn.output.bias  # [B, N, D]
    return out, probs


def compare_with_module(B=16, N=128, D=768, H=12):
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, H).eval()
    x = torch.randn(B, N, D)  # [B, N, D]
    keep = torch.ones(B, 1, 1, N, dtype=torch.bool)  # [B, 1, 1, N]
    keep[-1, ..., N // 2:] = False  # the last row's second half is padding
    with torch.no_grad():
        mine, my_probs = by_hand(attn, x, keep)
        explicit, probs, _ = attn(x, keep=keep, need_weights=True)  # the textbook path
        fused, none, _ = attn(x, keep=keep)  # F.scaled_dot_product_attention
    d1 = (mine - explicit).abs().max().item()
    d2 = (explicit - fused).abs().max().item()
    print(f"by hand vs module (explicit path): max |diff| = {d1:.2e}")
    print(f"explicit vs fused path:           max |diff| = {d2:.2e}  (fused returns probs={none})")
    assert d1 < 1e-5 and d2 < 1e-5
    assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5), "softmax rows sum to 1"
    assert probs[-1, :, :, N // 2:].abs().max() == 0, "padding columns get exactly zero weight"
    return probs


# %% [markdown]
# The fused kernel (`F.scaled_dot_product_attention`) computes the same function without ever
# materialising the `[B, H, N, N]` probabilities, which is faster and lighter. The module uses
# it unless you ask for the probabilities (`need_weights=True`, or `output_attentions=True` on
# a model). The two agree to float rounding, not bit for bit: they add in a different order.

# %% [markdown]
# ## 2. The mask: why "most negative float", not minus infinity
#
# A boolean keep-mask `[B, 1, Nq, Nk]` says who may look at whom; `additive_mask` turns it into
# 0 / very-negative numbers added to the scores. If a whole row is masked (it happens: a fully
# padded sequence), `-inf` everywhere makes softmax compute 0/0 = NaN, and the NaN spreads to
# every later layer. The most negative finite float gives a harmless uniform row instead.

# %%
def fully_masked_row():
    scores = torch.zeros(1, 4)  # one query, four keys, all masked
    with_inf = (scores + torch.tensor(float("-inf"))).softmax(-1)
    keep = torch.zeros(1, 4, dtype=torch.bool)
    with_min = (scores + additive_mask(keep, scores.dtype)).softmax(-1)
    print(f"all keys masked, -inf      -> {with_inf.tolist()}")
    print(f"all keys masked, finfo.min -> {with_min.tolist()}")
    assert torch.isnan(with_inf).all() and not torch.isnan(with_min).any()


# %% [markdown]
# ## 3. Looking at one attention pattern
#
# Each row of `probs[b, h]` is a probability distribution over keys. In a notebook the figure
# shows inline; as a script it is saved when `MINIGPT_PTV2_FIGURES` names a folder.

# %%
def plot_pattern(probs: torch.Tensor):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(8, 3.6))
    axes = fig.subplots(1, 2)
    for ax, b, title in ((axes[0], 0, "row 0: no padding"), (axes[1], -1, "last row: padded half")):
        ax.imshow(probs[b, 0], cmap="viridis")  # [N, N]
        ax.set(title=title, xlabel="key", ylabel="query")
    fig.suptitle("attention probabilities, head 0 (random weights)", y=1.02)
    save_figure(fig, "02_attention_pattern.png")


# %% [markdown]
# ## 4. The shapes, recorded
#
# The same module, traced. The explicit path records `scores` and `probs` `[B, H, N, N]`; the
# fused path never builds them, so they are missing from its trace. Keep an eye on the last
# axis of `scores`: lessons 08-09 make the keys longer than the queries, `[B, H, N, P+N]`.

# %%
def trace_example(B=16, N=128, D=768, H=12, fused=False) -> ShapeTrace:
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, H, scope="attn").eval()
    x = torch.randn(B, N, D)  # [B, N, D]
    with torch.no_grad(), ShapeTrace(dims=dict(B=B, N=N, D=D, H=H, d=D // H)) as tr:
        attn(x, need_weights=not fused)
    return tr


# %%
def main():
    B, N = (2, 24) if QUICK else (16, 128)
    probs = compare_with_module(B, N)
    print()
    fully_masked_row()
    plot_pattern(probs)
    print()
    print(side_by_side(trace_example(B, N), trace_example(B, N, fused=True), ("explicit path", "fused path")))


# %% [markdown]
# ## What to remember
#
# - Attention is `softmax(Q K^T / sqrt(d) + M) V`, per head, on `[B, H, N, d]` tensors; the
#   output is merged back to `[B, N, D]` and projected once more.
# - The explicit and fused paths compute the same function (to float rounding); only the
#   explicit one can hand you the `[B, H, N, Nk]` probabilities.
# - Masks are additive: 0 where a query may look, the most negative float where it may not.
#   `-inf` turns a fully masked row into NaN.
# - Queries decide how many rows come out; keys and values decide what there is to look at.
#   That asymmetry is the whole trick of K/V prefixes (lesson 08).
#
# ## Try this
#
# - Drop the `/ math.sqrt(d)` in `by_hand` and watch the probabilities get peakier.
# - Mask a whole row of `keep` and compare the module's output with and without it.
# - Time `attn(x, keep=keep)` against `attn(x, keep=keep, need_weights=True)` for N = 512.

# %%
if __name__ == "__main__":
    main()
