# %% [markdown]
# # Lesson 02 — Attention from scratch (and explicit vs fused)
#
# Every prompt method in this project ends up inside one function: multi-head attention. Deep
# prompts give it more rows to attend to; K/V prefixes give it more keys and values. So we
# build it by hand once, check it against the package's `MultiHeadAttention`, and learn what
# the mask really does.
#
# For one head, with **Nq** query rows and **Nk** key rows: queries Q `[Nq, d]`, keys K `[Nk, d]`,
# values V `[Nk, d]` and an additive mask M `[Nq, Nk]` (0 = may look, very negative = may not):
#
#     attention(Q, K, V) = softmax(Q K^T / sqrt(d) + M) V          -> [Nq, d]
#
# With H heads this runs H times side by side on `[B, H, N, d]` tensors (B batch rows, N tokens,
# d = D / H features per head, D the hidden size: lesson 01's letters). In this lesson
# Nq = Nk = N; lessons 08-09 put P prefix keys in front of the N real ones, Nk = P + N.

# %%
from __future__ import annotations

import math

import torch
from einops import rearrange

from minigpt_ptv2 import MultiHeadAttention, ShapeTrace
from minigpt_ptv2.core.attention import additive_mask
from minigpt_ptv2.trace import side_by_side
from minigpt_ptv2.viz import save_figure



# %% [markdown]
# ## 1. By hand, with the module's own weights
#
# `MultiHeadAttention` holds two linear layers, both written y = x W + b with W stored
# `[D_in, D_out]` (input width by output width) as in the paper: `qkv` (D -> 3D), whose weight
# is W_Q, W_K and W_V side by side, and `output` (D -> D). One product with the `[D, 3D]` matrix
# gives Q, K and V at once, which is what the module does; here we cut the matrix into its three
# blocks to show they are ordinary per-role projections. We reuse the module's weights, so any
# difference is in the computation: it comes out at about 1e-7, float rounding.
#
# The last batch row is padded: its second half of keys is masked out, and the check shows those
# keys get exactly zero weight from every query.

# %%
def by_hand(attn: MultiHeadAttention, x: torch.Tensor, keep: torch.Tensor | None = None,
            scale: float | None = None):
    """x [B, N, D], keep [B, 1, 1, N] boolean or None -> (out [B, N, D], probs [B, H, N, N]).
    scale multiplies the scores; None means the usual 1 / sqrt(d)."""
    H, D = attn.num_heads, x.shape[-1]
    W_q, W_k, W_v = attn.qkv.weight.split(D, dim=1)  # [D, D] each
    b_q, b_k, b_v = attn.qkv.bias.split(D)  # [D] each
    q = rearrange(x @ W_q + b_q, "b n (h d) -> b h n d", h=H)  # [B, H, N, d]
    k = rearrange(x @ W_k + b_k, "b n (h d) -> b h n d", h=H)  # [B, H, N, d]
    v = rearrange(x @ W_v + b_v, "b n (h d) -> b h n d", h=H)  # [B, H, N, d]
    if scale is None:
        scale = 1 / math.sqrt(q.shape[-1])
    scores = q @ k.transpose(-2, -1) * scale  # [B, H, N, N]
    if keep is not None:
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)  # [B, H, N, N]
    probs = scores.softmax(dim=-1)  # [B, H, N, N]: each row sums to 1
    ctx = probs @ v  # [B, H, N, d]
    out = rearrange(ctx, "b h n d -> b n (h d)") @ attn.output.weight + attn.output.bias  # [B, N, D]
    return out, probs


# %% [markdown]
# Now random weights and inputs at BERT-base sizes, and `by_hand` against the module.

# %%
def make_inputs(B=16, N=128, D=768, H=12):
    """A module with random weights, x [B, N, D], and keep [B, 1, 1, N] with the last row half padded."""
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, H).eval()
    x = torch.randn(B, N, D)  # [B, N, D]
    keep = torch.ones(B, 1, 1, N, dtype=torch.bool)  # [B, 1, 1, N]
    keep[-1, ..., N // 2:] = False  # the last row's second half is padding
    return attn, x, keep


def compare_with_module(attn: MultiHeadAttention, x: torch.Tensor, keep: torch.Tensor):
    N = x.shape[1]
    with torch.no_grad():
        mine, _ = by_hand(attn, x, keep)
        explicit, probs, _ = attn(x, keep=keep, need_weights=True)  # the textbook path
    gap = (mine - explicit).abs().max().item()
    print(f"by hand vs module (explicit path): max |diff| = {gap:.2e}")
    assert gap < 1e-6, "the same weights, the same formula: float rounding only (about 1e-7)"
    assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5), "softmax rows sum to 1"
    assert probs[-1, :, :, N // 2:].abs().max() == 0, "padding columns get exactly zero weight"
    print(f"each probability row sums to 1; the padded row gives its {N - N // 2} pad keys weight exactly 0")
    return probs


B, N = 16, 128
attn, x, keep = make_inputs(B, N)  # used by every section below
probs = compare_with_module(attn, x, keep)


# %% [markdown]
# ## 2. Two paths, one function
#
# The fused kernel (`F.scaled_dot_product_attention`) computes the same function without ever
# materialising the `[B, H, N, N]` probabilities: at B=16, H=12, N=128 that is 3.1 million
# floats, 12.6 MB, per layer, that it never writes. The module uses it unless you ask for the
# probabilities (`need_weights=True`, or `output_attentions=True` on a model). The two agree to
# float rounding, about 1e-7 here, but not bit for bit: they add in a different order.

# %%
def explicit_vs_fused(attn: MultiHeadAttention, x: torch.Tensor, keep: torch.Tensor):
    with torch.no_grad():
        explicit, probs, _ = attn(x, keep=keep, need_weights=True)
        fused, none, _ = attn(x, keep=keep)  # F.scaled_dot_product_attention
    gap = (explicit - fused).abs().max().item()
    print(f"explicit vs fused path: max |diff| = {gap:.2e}  (fused returns probs={none})")
    print(f"probabilities the explicit path builds: {list(probs.shape)} = {probs.numel():,} floats, "
          f"{probs.numel() * probs.element_size() / 1e6:.1f} MB")
    assert none is None and 0 < gap < 1e-6, "equal to float rounding (about 1e-7), not bit for bit"
    assert probs.numel() == x.shape[0] * attn.num_heads * x.shape[1] ** 2  # B * H * N * N
    return gap


gap = explicit_vs_fused(attn, x, keep)


# %% [markdown]
# ## 3. The mask: why "most negative float", not minus infinity (pitfall 8)
#
# A boolean keep-mask `[B, 1, Nq, Nk]` says who may look at whom; `additive_mask` turns it into
# 0 / very-negative numbers added to the scores. If a whole row is masked (it happens: a fully
# padded sequence, or the first pad of a left-padded row under a causal mask), `-inf` everywhere
# makes softmax compute 0/0 = NaN. The most negative finite float gives a harmless uniform row
# instead.
#
# And a NaN does not stay in its row. The next layer computes that token's key and value from
# it; the other queries give it weight 0, but 0 * NaN is still NaN, so every query that reads
# those values, masked or not, turns NaN too.

# %%
def fully_masked_row():
    scores = torch.zeros(1, 4)  # one query, four keys, all masked
    with_inf = (scores + torch.tensor(float("-inf"))).softmax(-1)
    keep = torch.zeros(1, 4, dtype=torch.bool)
    with_min = (scores + additive_mask(keep, scores.dtype)).softmax(-1)
    print(f"all keys masked, -inf      -> {with_inf.tolist()}")
    print(f"all keys masked, finfo.min -> {with_min.tolist()}")
    assert torch.isnan(with_inf).all() and not torch.isnan(with_min).any()
    weights = torch.tensor([[1.0, 0.0]])  # a real query: all weight on key 0, none on key 1
    values = torch.tensor([[2.0], [float("nan")]])  # key 1's value came from the NaN row
    read = weights @ values  # [1, 1]
    print(f"weight 0 on a NaN value: {weights.tolist()} @ {values.flatten().tolist()} = {read.item()}")
    assert torch.isnan(read).all()


fully_masked_row()


# %% [markdown]
# ## 4. Looking at one attention pattern
#
# Each row of `probs[b, h]` is a probability distribution of one query over the keys. With
# random weights and random inputs the scores are small, so no query picks a favourite: the
# largest weight in a row is on average about twice the uniform 1/N, and the picture is an even,
# speckled square. The padded row shows the mask at work: its right half (the pad keys) is
# exactly zero for every query, and its left half carries all the weight, so those cells are
# about twice as bright. In a notebook the figure shows inline; as a script it is saved when
# `MINIGPT_PTV2_FIGURES` names a folder.

# %%
def plot_pattern(probs: torch.Tensor):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    N = probs.shape[-1]
    vmax = float(probs[[0, -1], 0].max())
    for ax, b, title in ((axes[0], 0, "batch row 0: no padding"),
                         (axes[1], -1, f"last batch row: keys {N // 2}..{N - 1} are padding")):
        image = ax.imshow(probs[b, 0], cmap="viridis", vmin=0, vmax=vmax)  # [N, N]
        ax.set(title=title, xlabel="key (token position)", ylabel="query (token position)")
    fig.colorbar(image, ax=axes, label="attention probability")
    fig.suptitle("attention probabilities of head 0 (random weights): each row sums to 1")
    save_figure(fig, "02_attention_pattern.png")
    top = float(probs[0].max(-1).values.mean())  # the largest weight of a row, averaged over rows
    padded = probs[-1, 0]  # [N, N]
    print(f"unpadded row: largest weight per query {top:.4f} on average, uniform 1/N = {1 / N:.4f}")
    print(f"padded row, head 0: weight on the pad keys {padded[:, N // 2:].sum():.1f}, "
          f"mean weight of a real key {padded[:, :N // 2].mean():.4f} (1/{N // 2} = {1 / (N // 2):.4f})")
    assert 1 / N < top < 3 / N and padded[:, N // 2:].sum() == 0


plot_pattern(probs)


# %% [markdown]
# ## 5. The shapes, recorded
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


print(side_by_side(trace_example(B, N), trace_example(B, N, fused=True), ("explicit path", "fused path")))


# %% [markdown]
# ## What to remember
#
# - Attention is `softmax(Q K^T / sqrt(d) + M) V`, per head, on `[B, H, N, d]` tensors; the
#   output is merged back to `[B, N, D]` and projected once more.
# - The explicit and fused paths compute the same function (to float rounding, not bit for
#   bit); only the explicit one hands you the `[B, H, Nq, Nk]` probabilities, and builds them.
# - Masks are additive: 0 where a query may look, the most negative float where it may not.
#   `-inf` turns a fully masked row into NaN, and weight 0 does not stop a NaN from spreading.
# - Queries decide how many rows come out; keys and values decide what there is to look at.
#   That asymmetry is the whole trick of K/V prefixes (lesson 08).
#
# ## Check your understanding
#
# 1. Why divide the scores by sqrt(d)? Think of q and k with d = 64 independent entries of
#    variance 1.
#
#    <details><summary>Answer</summary>
#
#    q . k is a sum of 64 products of variance 1, so its standard deviation is sqrt(64) = 8.
#    Scores that large make softmax put almost all weight on one key and its gradients vanish.
#    Dividing by sqrt(d) brings the scores back to variance 1, whatever the head size.
#
#    </details>
#
# 2. One sequence of the batch is entirely padding. What does its attention row become with a
#    `-inf` mask, and with the most negative float?
#
#    <details><summary>Answer</summary>
#
#    With `-inf`, every score is -inf, softmax computes exp(-inf) / sum = 0 / 0 = NaN, and the NaN
#    spreads through the next layers (0 * NaN is NaN). With `finfo.min` all scores are equal, so
#    the row is uniform, 1/Nk per key: a harmless, finite output nobody reads.
#
#    </details>
#
# 3. A layer gets P = 20 prefix keys and values in front of its own N = 128. With B = 16 and
#    BERT-base's heads, what are the shapes of the scores and of the attention output?
#
#    <details><summary>Answer</summary>
#
#    Scores `[B, H, Nq, Nk]` = `[16, 12, 128, 148]`: the queries still come from the 128 real
#    tokens only. The output is `[B, N, D]` = `[16, 128, 768]`: one row per query, whatever the
#    number of keys.
#
#    </details>
#
# 4. `attn(x)` returns `probs=None`. Why, and how do you get the probabilities?
#
#    <details><summary>Answer</summary>
#
#    Without a request for them the module takes the fused path, which never builds the
#    `[B, H, Nq, Nk]` tensor (that is what makes it lighter). Ask with `need_weights=True` on the
#    module, or `output_attentions=True` on a model: the explicit path then returns them.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/02_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. Drop the division by sqrt(d): call `by_hand(attn, x, keep, scale=1.0)` and compare the
#    largest probability of each row with the default scale. Do the probabilities get peakier?
#    [`try_1`]
# 2. Mask a whole row of `keep` (`keep[0] = False`: batch row 0 becomes all padding) and compare
#    the module's output for that row with and without the mask. Is it finite, and what is it?
#    [`try_2`]
# 3. Time `attn(x, keep=keep)` against `attn(x, keep=keep, need_weights=True)` for N = 512, and
#    count the bytes of the probabilities the second call returns. [`try_3`]
# 4. Give the module a prefix: `attn(x, prefix=(pk, pv), need_weights=True)` with `pk` and `pv`
#    of shape `[B, H, 5, d]`. What shapes do the output and the probabilities have? [`try_4`]
