# %% [markdown]
# # Lesson 08 — K/V prefixes and the reparameterisation MLP
#
# The other way to prompt every layer, and the one P-Tuning v2 and prefix tuning actually
# use: do not add rows to the hidden states at all. Give each layer P extra *keys and values*
# per head, `[B, H, P, d]`, concatenated in front of its own:
#
#     K = cat(prefix_K, x W_K)   [B, H, P+N, d]        Q = x W_Q   [B, H, N, d]   (no prefix!)
#     V = cat(prefix_V, x W_V)   [B, H, P+N, d]        scores      [B, H, N, P+N]
#
# The layer still has N queries, so it outputs N rows: nothing to slice. We look at where the
# numbers live, why Q must not be prefixed, what a zero prefix does, and how the optional MLP
# should be computed (once, then `expand`).

# %%
from __future__ import annotations

import math
import os
import time

import torch
from einops import rearrange

from minigpt_ptv2 import BertEncoder, MultiHeadAttention, ShapeTrace, preset
from minigpt_ptv2.prompts import KVPrefix
from minigpt_ptv2.viz import save_figure

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")

# %% [markdown]
# ## 1. One table, three views
#
# `KVPrefix` stores a table `[P, L*2*D]` (PEFT's `prompt_embeddings`, same layout). Reading
# its flat axis as (layer, K-or-V, head, d) gives `[L, 2, H, P, d]`; layer i's keys are
# `kv[i, 0]`, broadcast to `[B, H, P, d]`.

# %%
def three_views(P=20):
    cfg = preset("bert-base")
    prefix = KVPrefix(cfg, P)
    L, H, d = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.head_dim
    flat = prefix.embedding.weight  # [P, L*2*D]
    kv = prefix.layer_kv()  # [L, 2, H, P, d]
    keys_3 = prefix.kv_prefix(16)[3][0]  # [B, H, P, d]: layer 3's keys
    l, two, h, p, j = 3, 1, 5, 7, 11  # layer 3, values, head 5, prompt row 7, feature 11
    assert flat[p, ((l * 2 + two) * H + h) * d + j] == kv[l, two, h, p, j]
    assert torch.equal(keys_3[0], kv[3, 0]) and keys_3.stride(0) == 0  # a broadcast view
    print(f"table {list(flat.shape)} -> per layer {list(kv.shape)} -> layer 3 keys {list(keys_3.shape)} "
          f"(stride {keys_3.stride(0)} on B: no copy)")


# %% [markdown]
# ## 2. Q is never prefixed (pitfall 3)
#
# Seed 001 writes the attention as `softmax([X W_Q; P_Q][X W_K; P_K]^T / sqrt(d)) [X W_V; P_V]`:
# it prefixes the queries too. Seed 002 gets it right: `Q_i = Q_i^input`. What goes wrong?
#
# - With P extra queries, attention returns P+N rows. The residual `x + attn(x)` needs N rows:
#   it is a shape error.
# - If you then drop the P extra rows to make it fit, the N real rows are *exactly* what
#   prefixing K and V alone gives: a query row's output depends on its own query only. The P
#   prompt queries were pure waste: P/(P+N) more score rows, computed and thrown away.

# %%
def q_is_never_prefixed(B=2, N=16, P=4, D=64, H=4):
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, H).eval()
    d = D // H
    x = torch.randn(B, N, D)  # [B, N, D]
    pk, pv, pq = (torch.randn(B, H, P, d) for _ in range(3))  # [B, H, P, d] each
    right, _, _ = attn(x, prefix=(pk, pv))  # [B, N, D]: the package, K/V only

    q, k, v = attn.project(x)  # [B, H, N, d] each: the layer's own Q, K, V
    q = torch.cat([pq, q], dim=2)  # [B, H, P+N, d]: seed 001's Q
    k = torch.cat([pk, k], dim=2)  # [B, H, P+N, d]
    v = torch.cat([pv, v], dim=2)  # [B, H, P+N, d]
    ctx = (q @ k.transpose(-2, -1) / math.sqrt(d)).softmax(-1) @ v  # [B, H, P+N, d]
    wrong = attn.output(rearrange(ctx, "b h n d -> b n (h d)"))  # [B, P+N, D]
    try:
        x + wrong  # the residual connection
    except RuntimeError as e:
        print(f"Q prefixed too: attention returns {list(wrong.shape)}; residual x + attn(x) fails: "
              f"{str(e).splitlines()[0]}")
    gap = (wrong[:, P:] - right).abs().max().item()
    print(f"drop the P extra rows and you get K/V-only prefixing back: max |diff| = {gap:.1e}; "
          f"{P}/{P + N} of the score rows were wasted")
    assert gap < 1e-5


# %% [markdown]
# ## 3. A zero prefix is not a no-op; a masked prefix is (pitfall 4)
#
# Zero keys give scores of exactly 0, not minus infinity: each zero key still takes
# `exp(0)` worth of attention, diluting the real keys (its zero value adds nothing back). To
# switch prefix entries off, mask them: `virtual_keep[p] = False` removes them from softmax.

# %%
def zero_is_not_off(B=2, N=8, P=4):
    torch.manual_seed(0)
    cfg = preset("bert-tiny")
    model = BertEncoder(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    plain = model(ids).last_hidden_state  # [B, N, D]
    L, H, d = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.head_dim
    zero = KVPrefix.from_layer_kv(cfg, torch.zeros(L, 2, H, P, d))
    zeroed = model.attach(zero)(ids).last_hidden_state
    zero.virtual_keep.fill_(False)  # now mask every prefix entry
    masked = model(ids).last_hidden_state
    model.detach_prompt()
    print(f"zero prefix:   max |diff| from no prefix = {(zeroed - plain).abs().max():.3f}")
    print(f"masked prefix: max |diff| from no prefix = {(masked - plain).abs().max():.1e}")
    assert (zeroed - plain).abs().max() > 1e-2 and torch.allclose(masked, plain, atol=1e-6)


# %% [markdown]
# ## 4. The reparameterisation MLP, and its inference form
#
# Prefix tuning found that training the table directly can be unstable, so it trains a small
# `Embedding(P, D) -> Linear(D, 512) -> tanh -> Linear(512, L*2*D)` instead and produces the
# table from it. After training the MLP is useless: `for_inference()` runs it once and keeps
# only its output, a plain table of the same `[P, L*2*D]` shape.

# %%
def mlp_and_inference_form(P=20, B=2, N=8):
    torch.manual_seed(0)
    cfg = preset("bert-tiny")
    model = BertEncoder(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    mlp = KVPrefix(cfg, P, projection=True, hidden=64).eval()
    table = mlp.for_inference()
    a = model.attach(mlp)(ids).last_hidden_state
    b = model.attach(table)(ids).last_hidden_state
    model.detach_prompt()
    print(f"training form {mlp.num_trainable():,} numbers, inference form {table.num_trainable():,}; "
          f"outputs max |diff| = {(a - b).abs().max():.1e}")
    assert torch.allclose(a, b, atol=1e-6)


# %% [markdown]
# ## 5. Compute once, then `expand` (pitfall 5), measured
#
# The prefix does not depend on the input, so the MLP should run once per forward pass, on
# `[P, D]`, and the result be broadcast over the batch with `expand` (a view). Two common
# alternatives do more work:
#
# - **per row**: feed `[B, P]` prefix indices through embedding and MLP, as code written for
#   "one prompt per example" does: B times the MLP work and B copies of the output;
# - **repeat**: run the MLP once, then `.repeat(...)` the output B times (seed 002): no extra
#   MLP work, but B real copies of `[L, 2, H, P, d]`.
#
# We time the three on BERT-base sizes (L=12, D=768, P=20, MLP width 512) and count the bytes
# each result occupies. Timings are noisy on a shared machine: read how they grow with B,
# not the milliseconds. The last column checks that the per-row results are the same numbers;
# on some kernels a batched matmul rounds differently, so "the same" can drift in the last bits.

# %%
def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def once_vs_per_row(batches=(1, 8, 32), P=20, repeat=5):
    cfg = preset("bert-base")
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads
    prefix = KVPrefix(cfg, P, projection=True).eval()
    idx = torch.arange(P)
    to_kv = lambda flat: rearrange(flat, "... p (l two h d) -> ... l two h p d", l=L, two=2, h=H)  # noqa: E731

    def once(B):  # [L, 2, H, P, d] once, then a view per layer: [B, H, P, d]
        kv = to_kv(prefix.transform(prefix.embedding(idx)))
        return kv.unsqueeze(0).expand(B, *kv.shape)

    def per_row(B):  # the MLP on [B, P, D]: B times the work
        return to_kv(prefix.transform(prefix.embedding(idx.expand(B, P))))

    def repeat_copies(B):  # MLP once, then B copies
        kv = to_kv(prefix.transform(prefix.embedding(idx)))
        return kv.unsqueeze(0).repeat(B, 1, 1, 1, 1, 1)

    rows = []
    with torch.no_grad():
        for B in batches:
            a, b, c = once(B), per_row(B), repeat_copies(B)
            drift = (a - b).abs().max().item()
            assert torch.equal(a, c) and drift < 1e-5
            t = [best_time(lambda f=f: f(B), repeat) for f in (once, per_row, repeat_copies)]
            # bytes actually allocated for the result: a view allocates nothing beyond one copy
            mem = [x.untyped_storage().nbytes() for x in (a, b, c)]
            rows.append((B, t, mem, drift))
    print(f"{'B':>3}  {'time: once+expand':>18} {'per row':>9} {'repeat':>9}   "
          f"{'memory: once':>12} {'per row':>9} {'repeat':>9}   max |once - per row|")
    for B, t, mem, drift in rows:
        ms = [f"{x * 1e3:.1f}ms" for x in t]
        mib = [f"{x / 2**20:.1f}MiB" for x in mem]
        print(f"{B:>3}  {ms[0]:>18} {ms[1]:>9} {ms[2]:>9}   {mib[0]:>12} {mib[1]:>9} {mib[2]:>9}   {drift:.1e}")
    return rows


def plot_once_vs_per_row(rows):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    Bs = [r[0] for r in rows]
    for k, label in enumerate(("once + expand", "per row", "once + repeat")):
        ax.plot(Bs, [r[1][k] * 1e3 for r in rows], marker="o", label=label)
    ax.set(xlabel="batch size B", ylabel="ms per forward (prefix only)", xscale="log", yscale="log",
           title="computing the prefix MLP (BERT-base sizes, P=20)")
    ax.legend()
    save_figure(fig, "08_once_vs_per_row.png")


# %% [markdown]
# ## 6. The shapes, recorded
#
# BERT-base shapes with seed 000's numbers (two layers). Compare with lesson 07: no `inject`,
# no `slice`, Q stays `[B, H, N, d]`; only K and V grow, `[B, H, P, d] + [B, H, N, d] ->
# [B, H, P+N, d]`. With `projection=True` (the MLP) the rows are the same: the MLP is
# invisible downstream of `prefix.table`.

# %%
def trace_example(B=16, N=128, P=20, layers=2, projection=False) -> ShapeTrace:
    torch.manual_seed(0)
    cfg = preset("bert-base").replace(num_hidden_layers=layers)
    model = BertEncoder(cfg, prompt=KVPrefix(cfg, P, projection=projection)).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    with torch.no_grad(), ShapeTrace.for_model(model, B=B, N=N) as tr:
        model(ids, output_attentions=True)
    return tr


# %%
def main():
    three_views()
    print()
    with torch.no_grad():
        q_is_never_prefixed()
        print()
        zero_is_not_off()
        mlp_and_inference_form()
    print()
    rows = once_vs_per_row((1, 8) if QUICK else (1, 8, 32), repeat=2 if QUICK else 5)
    plot_once_vs_per_row(rows)
    print()
    B, N, P = (2, 16, 4) if QUICK else (16, 128, 20)
    tr = trace_example(B, N, P)
    print(tr.select("embeddings", "prefix", "mask", "layer0.").table())
    print(tr.walk(0))


# %% [markdown]
# ## What to remember
#
# - A K/V prefix is a table `[P, L*2*D]` = `[L, 2, H, P, d]`: per layer, P keys and P values
#   per head, concatenated in front of the layer's own: `[B, H, P+N, d]`.
# - Only K and V are prefixed. Queries come from the real tokens, so the output has N rows and
#   nothing needs slicing. Prefixing Q breaks the residual, or wastes P/(P+N) of the work.
# - Zero is not off: zero keys still take attention. Masking (`virtual_keep`) is off.
# - An MLP may produce the table during training; run it once per forward, `expand` over the
#   batch, and drop it after training (`for_inference`).
#
# ## Try this
#
# - `python -m minigpt_ptv2 trace --method prefix --B 16 --N 128 --P 20 --config bert-base --layers 0`
# - In `zero_is_not_off`, mask only half the prefix entries: how much does the output move?
# - Add B=128 to `once_vs_per_row`: how do the per-row time and memory grow?
# - Compare `python -m minigpt_ptv2 params` for `prefix` and `prefix-mlp`.

# %%
if __name__ == "__main__":
    main()
