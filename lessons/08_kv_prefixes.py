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
# ![A K/V prefix (right) beside lesson 07's inject, process, slice](../../figures/deep_styles.png)
#
# (**B** batch size, **N** real tokens, **P** prefix length, **D** hidden size, **L** layers,
# **H** attention heads of size **d** = D/H.)
#
# The layer still has N queries, so it outputs N rows: nothing to slice. We look at where the
# numbers live, why Q must not be prefixed, what a zero prefix does, and how the optional MLP
# should be computed (once, then `expand`).

# %%
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch.utils.flop_counter import FlopCounterMode

from minigpt_ptv2 import BertEncoder, MultiHeadAttention, ShapeTrace, preset
from minigpt_ptv2.prompts import KVPrefix

from _course import best_time, plot_cost, print_cost_table  # timing, a table, a figure: plumbing



# %% [markdown]
# ## 1. One table, three views
#
# `KVPrefix` stores a table `[P, L*2*D]` (PEFT's `prompt_embeddings`, same layout). Reading
# its flat axis as (layer, K-or-V, head, d) gives `[L, 2, H, P, d]`; layer i's keys are
# `kv[i, 0]`, broadcast to `[B, H, P, d]` as a view (stride 0 on B: no copy). BERT-base:
# L=12, D=768, H=12, d=64, so with P=20 the table is `[20, 18432]`.

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


three_views()


# %% [markdown]
# ## 2. Q is never prefixed (pitfall 3)
#
# Seed 001 writes the attention as `softmax([X W_Q; P_Q][X W_K; P_K]^T / sqrt(d)) [X W_V; P_V]`:
# it prefixes the queries too. Seed 002 gets it right: `Q_i = Q_i^input`. What goes wrong?
#
# - With P extra queries, attention returns P+N rows. The residual `x + attn(x)` needs N rows:
#   it is a shape error.
# - If you then drop the P extra rows to make it fit, the N real rows are *exactly* what
#   prefixing K and V alone gives (to rounding): a query row's output depends on its own query
#   only. The P prompt queries were pure waste: P of the P+N score rows, computed and thrown away.

# %%
def q_is_never_prefixed(B=2, N=16, P=4, D=64, H=4):
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, H).eval()
    d = D // H
    x = torch.randn(B, N, D)  # [B, N, D]
    pk, pv, pq = (torch.randn(B, H, P, d) for _ in range(3))  # [B, H, P, d] each
    with torch.no_grad():
        right, _, _ = attn(x, prefix=(pk, pv))  # [B, N, D]: the package, K/V only
        q, k, v = attn.project(x)  # [B, H, N, d] each: the layer's own Q, K, V
        q = torch.cat([pq, q], dim=2)  # [B, H, P+N, d]: seed 001's Q
        k = torch.cat([pk, k], dim=2)  # [B, H, P+N, d]
        v = torch.cat([pv, v], dim=2)  # [B, H, P+N, d]
        ctx = (q @ k.transpose(-2, -1) / math.sqrt(d)).softmax(-1) @ v  # [B, H, P+N, d]
        wrong = attn.output(rearrange(ctx, "b h n d -> b n (h d)"))  # [B, P+N, D]
    try:
        x + wrong  # the residual connection
        raise AssertionError("the residual should not fit")
    except RuntimeError as e:
        print(f"Q prefixed too: attention returns {list(wrong.shape)}; residual x + attn(x) fails: "
              f"{str(e).splitlines()[0]}")
    gap = (wrong[:, P:] - right).abs().max().item()
    wasted = wrong.shape[1] - N
    print(f"drop the P extra rows and you get K/V-only prefixing back: max |diff| = {gap:.1e}; "
          f"{wasted}/{wrong.shape[1]} of the score rows were wasted")
    assert gap < 1e-5 and wasted == P


q_is_never_prefixed()


# %% [markdown]
# ## 3. A zero prefix is not a no-op; a masked prefix is (pitfall 4)
#
# Zero keys give scores of exactly 0, not minus infinity: each zero key still takes
# `exp(0)` worth of attention, diluting the real keys (its zero value adds nothing back). To
# switch prefix entries off, mask them: `virtual_keep[p] = False` removes them from softmax.
# On the tiny BERT (D=24, L=3, H=4) with P=4 zero entries per layer, the output moves by
# about 0.4; masked, not at all.

# %%
def zero_is_not_off(B=2, N=8, P=4) -> dict:
    torch.manual_seed(0)
    cfg = preset("bert-tiny")
    model = BertEncoder(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    L, H, d = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.head_dim
    zero = KVPrefix.from_layer_kv(cfg, torch.zeros(L, 2, H, P, d))
    with torch.no_grad():
        plain = model(ids).last_hidden_state  # [B, N, D]
        zeroed = model.attach(zero)(ids).last_hidden_state
        zero.virtual_keep.fill_(False)  # now mask every prefix entry
        masked = model(ids).last_hidden_state
    model.detach_prompt()
    moved = {"zero": (zeroed - plain).abs().max().item(), "masked": (masked - plain).abs().max().item()}
    print(f"zero prefix:   max |diff| from no prefix = {moved['zero']:.3f}")
    print(f"masked prefix: max |diff| from no prefix = {moved['masked']:.1e}")
    assert moved["zero"] > 1e-1 and torch.allclose(masked, plain, atol=1e-6)
    return moved


gaps = zero_is_not_off()


# %% [markdown]
# ## 4. The reparameterisation MLP, and its inference form
#
# Prefix tuning found that training the table directly can be unstable, so it trains a small
# `Embedding(P, D) -> Linear(D, 512) -> tanh -> Linear(512, L*2*D)` instead and produces the
# table from it. After training the MLP is useless: `for_inference()` runs it once and keeps
# only its output, a plain table of the same `[P, L*2*D]` shape (here on the tiny BERT, with an
# MLP 64 wide).

# %%
def mlp_and_inference_form(P=20, B=2, N=8):
    torch.manual_seed(0)
    cfg = preset("bert-tiny")
    model = BertEncoder(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    mlp = KVPrefix(cfg, P, projection=True, hidden=64).eval()
    table = mlp.for_inference()
    with torch.no_grad():
        a = model.attach(mlp)(ids).last_hidden_state
        b = model.attach(table)(ids).last_hidden_state
    model.detach_prompt()
    print(f"training form {mlp.num_trainable():,} numbers, inference form {table.num_trainable():,} "
          f"= P*L*2*D; outputs max |diff| = {(a - b).abs().max():.1e}")
    assert table.num_trainable() == P * cfg.prefix_width and torch.allclose(a, b, atol=1e-6)


mlp_and_inference_form()


# %% [markdown]
# ## 5. Compute once, then `expand` (pitfall 5), measured
#
# The prefix does not depend on the input, so the MLP should run once per forward pass, on
# `[P, D]`, and the result be broadcast over the batch with `expand` (a view, no copy: shown in
# [lesson 01 §3](01_notation_and_shapes.ipynb#3.-A-prompt-is-%5BP,-D%5D;-the-batch-needs-%5BB,-P,-D%5D)). Two common
# alternatives:
#
# - **per row**: feed `[B, P]` prefix indices through embedding and MLP (the indices repeated B
#   times), as code written for "one prompt per example" does: B times the MLP work and B copies
#   of the output;
# - **repeat**: run the MLP once, then `.repeat(...)` the output B times (seed 002): no extra MLP
#   work, but B real copies of `[L, 2, H, P, d]` in memory, written out on every forward pass.
#
# None of them changes the numbers: the values are the same (on this run bit for bit, a max
# |difference| of 0.0; BLAS does not promise that across batch sizes, so the check allows
# 1e-5), and so are the gradients that reach the MLP (`repeat` and `expand` both sum over the
# batch in backward; per row, to rounding). What differs is the cost. On BERT-base sizes (L=12,
# D=768, P=20, MLP width 512) we count the FLOPs each one spends (torch's `FlopCounterMode`)
# and the bytes its result occupies, both exact, and time them. Timings on a shared machine are
# noisy: they are printed for this run, not asserted.

# %%
def prefix_variants(prefix: KVPrefix) -> dict:
    """The three ways to get a batch of prefixes [B, L, 2, H, P, d] from the MLP."""
    c = prefix.config
    P = prefix.num_virtual
    idx = torch.arange(P)
    to_kv = lambda flat: rearrange(flat, "... p (l two h d) -> ... l two h p d",  # noqa: E731
                                   l=c.num_hidden_layers, two=2, h=c.num_attention_heads)

    def once(B):  # [L, 2, H, P, d] once, then a view over the batch
        kv = to_kv(prefix.transform(prefix.embedding(idx)))
        return kv.unsqueeze(0).expand(B, *kv.shape)

    def per_row(B):  # the MLP on [B, P, D]: B times the work
        return to_kv(prefix.transform(prefix.embedding(idx.expand(B, P))))

    def repeat(B):  # MLP once, then B copies
        kv = to_kv(prefix.transform(prefix.embedding(idx)))
        return kv.unsqueeze(0).repeat(B, 1, 1, 1, 1, 1)

    return {"once + expand": once, "per row": per_row, "repeat": repeat}


# %% [markdown]
# For each B, each way's FLOPs (counted), the bytes its result holds, and its best time; the
# table and the figure are drawn by `print_cost_table` and `plot_cost` (`lessons/_course.py`).

# %%
def once_vs_per_row(batches=(1, 8, 32), P=20, repeat=5) -> list:
    torch.manual_seed(0)
    prefix = KVPrefix(preset("bert-base"), P, projection=True).eval()
    ways = prefix_variants(prefix)
    rows = []
    with torch.no_grad():
        for B in batches:
            out, flops = {}, {}
            for name, f in ways.items():
                with FlopCounterMode(display=False) as counter:
                    out[name] = f(B)  # [B, L, 2, H, P, d]
                flops[name] = counter.get_total_flops()
            drift = (out["once + expand"] - out["per row"]).abs().max().item()
            assert torch.equal(out["once + expand"], out["repeat"]) and drift < 1e-5
            mem = {name: x.untyped_storage().nbytes() for name, x in out.items()}  # bytes allocated
            assert flops["per row"] == B * flops["once + expand"] and flops["repeat"] == flops["once + expand"]
            assert mem["per row"] == mem["repeat"] == B * mem["once + expand"]
            del out
            t = {name: best_time(lambda f=f: f(B), repeat) for name, f in ways.items()}
            rows.append((B, flops, mem, t, drift))
    print_cost_table(rows, ways)
    return rows


rows = once_vs_per_row((1, 8, 32), repeat=5)
plot_cost(rows, ("once + expand", "per row", "repeat"),
          "Computing the prefix MLP once + expand, per row, or once + repeat (BERT-base sizes, P=20)",
          "08_once_vs_per_row.png")


# %%
def same_gradients(B=8, P=20) -> dict:
    """Backpropagate one loss through each variant: the MLP's gradients agree."""
    torch.manual_seed(0)
    prefix = KVPrefix(preset("bert-base"), P, projection=True).eval()
    ways = prefix_variants(prefix)
    w = torch.randn(ways["once + expand"](B).shape)  # [B, L, 2, H, P, d]: a loss that weighs every entry
    grads = {}
    for name, f in ways.items():
        prefix.zero_grad()
        (f(B) * w).sum().backward()
        grads[name] = [p.grad.clone() for p in prefix.parameters()]
    gaps = {name: max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(grads["once + expand"], g))
            for name, g in grads.items() if name != "once + expand"}
    print(f"B={B}: MLP gradients vs once + expand, max relative difference: "
          + ", ".join(f"{name} {gap:.1e}" for name, gap in gaps.items()))
    assert gaps["repeat"] == 0 and gaps["per row"] < 1e-5
    return gaps


same_gradients(B=8)


# %% [markdown]
# ## 6. The shapes, recorded
#
# BERT-base shapes with seed 000's numbers B=16, N=128, P=20, three layers (so that the table's
# width `L*2*D` = 4,608 is no other letter's size; with two layers it would equal the feed-forward
# width D_ff = 3,072), layer 0 shown. Compare with lesson 07: no `inject`, no `slice`, Q stays
# `[B, H, N, d]`; only K and V grow, `[B, H, P, d] + [B, H, N, d] -> [B, H, P+N, d]`. With
# `projection=True` (the MLP) the rows are the same: the MLP is invisible downstream of
# `prefix.table`.

# %%
def trace_example(B=16, N=128, P=20, layers=3, projection=False) -> ShapeTrace:
    torch.manual_seed(0)
    cfg = preset("bert-base").replace(num_hidden_layers=layers)
    model = BertEncoder(cfg, prompt=KVPrefix(cfg, P, projection=projection)).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    with torch.no_grad(), ShapeTrace.for_model(model, B=B, N=N, layers=(0,)) as tr:
        model(ids, output_attentions=True)
    return tr


tr = trace_example(16, 128, 20)
print(tr.table())
print(tr.walk(0))


# %% [markdown]
# ## What to remember
#
# - A K/V prefix is a table `[P, L*2*D]` = `[L, 2, H, P, d]`: per layer, P keys and P values
#   per head, concatenated in front of the layer's own: `[B, H, P+N, d]`.
# - Only K and V are prefixed. Queries come from the real tokens, so the output has N rows and
#   nothing needs slicing. Prefixing Q breaks the residual, or wastes P of the P+N query rows.
# - Zero is not off: zero keys still take attention. Masking (`virtual_keep`) is off.
# - An MLP may produce the table during training; run it once per forward, `expand` over the
#   batch, and drop it after training (`for_inference`). Per row costs B times the MLP FLOPs and
#   the memory, `repeat` B times the memory; the values and gradients are the same either way.
#
# ## Check your understanding
#
# 1. BERT-base (L=12, D=768, H=12, d=64) with P=20: what is the shape of the prefix table, and of
#    layer 3's prefix keys at B=16? How much memory does the batch axis add?
#
#    <details><summary>Answer</summary>
#
#    The table is `[20, 18432]` (`[P, L*2*D]`, `12*2*768` = 18,432). Layer 3's keys are
#    `[16, 12, 20, 64]` (`[B, H, P, d]`), an `expand`ed view with stride 0 on B: no memory at all.
#
#    </details>
#
# 2. One attention layer gets a zero prefix of P keys. For one query whose real scores are s_j,
#    what happens to its attention output, as a formula?
#
#    <details><summary>Answer</summary>
#
#    Each zero key scores 0, so it gets weight exp(0) = 1 before normalising, and its value is 0.
#    With S = sum_j exp(s_j) over the real keys, the output becomes (S / (S + P)) times the
#    unprefixed output: shrunk towards zero, not left alone. Masked entries get weight 0 instead.
#
#    </details>
#
# 3. Seed 001 prefixes Q too. With B=2, N=16, P=4 and D=64, what shape does attention return, and
#    which of its rows agree with K/V-only prefixing?
#
#    <details><summary>Answer</summary>
#
#    `[2, 20, 64]` (`[B, P+N, D]`), which `x + attn(x)` with x `[2, 16, 64]` cannot add. The last
#    N = 16 rows equal K/V-only prefixing (each query row's output depends on its own query
#    only); the first P = 4 are waste.
#
#    </details>
#
# 4. At B=32 on BERT-base sizes, how do "per row" and "repeat" compare with "once + expand" in
#    MLP FLOPs and in memory?
#
#    <details><summary>Answer</summary>
#
#    Per row: 32 times the FLOPs (about 12.6 GFLOP instead of 0.39) and 32 times the memory
#    (45 MiB instead of 1.4 MiB). Repeat: the same FLOPs as once (the MLP runs once), but
#    32 times the memory, rewritten every forward pass. All three give the same values and
#    gradients.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/08_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. `python -m minigpt_ptv2 trace --method prefix --B 16 --N 128 --P 20 --config bert-base --num-layers 3 --layers 0`:
#    which rows are P+N long, which stay N long, and which of lesson 07's deep-prompt rows
#    (section 1) are missing? [`try_1`]
# 2. In `zero_is_not_off`, mask only half the prefix entries (`zero.virtual_keep[: P // 2] = False`
#    instead of all): how much does the output move? [`try_2`]
# 3. Add B=128 to `once_vs_per_row`: how do the per-row FLOPs, memory and time grow? [`try_3`]
# 4. Compare `python -m minigpt_ptv2 params --methods prefix prefix-mlp`: how many numbers does
#    the MLP add during training, and how many are left after `for_inference()`? [`try_4`]
