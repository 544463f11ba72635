# %% [markdown]
# # Lesson 01 — Notation and shapes
#
# Almost every bug in prompt tuning is a shape bug that did not crash: a prompt glued onto the
# wrong axis, a mask that broadcast where it should have failed, a pooled vector taken from the
# wrong row. So before any model, we agree on a few letters and learn to read tensors with them.
#
# | letter | meaning                                        | BERT-base | MiniLM-L6 |
# |--------|------------------------------------------------|-----------|-----------|
# | B      | batch size                                     | 16        |           |
# | N      | real tokens in a sequence                      | 128       |           |
# | P      | prompt / prefix length                         | 20        |           |
# | D      | hidden size                                    | 768       | 384       |
# | L      | layers                                         | 12        | 6         |
# | H      | attention heads                                | 12        | 12        |
# | d      | head size, D / H                               | 64        | 32        |
# | H_kv   | key/value heads (= H here; fewer in lesson 15) | 12        | 12        |
#
# Two more letters belong to the model and appear in later tables: **V**, the vocabulary size
# (30,522 WordPiece tokens for BERT), and **D_ff**, the feed-forward width inside each layer
# (3072 = 4D for BERT-base). And one product of letters: **L\*2\*D**, the width of a P-Tuning v2
# prefix table (lesson 08). A trace knows all of them (section 4).
#
# The numbers B=16, N=128, P=20, D=768 are those of the P-Tuning v2 walkthrough this project
# started from ("seed 000", one of five tutorials listed in `lessons/README.md`); we keep them
# so you can compare our tables with it line by line.
#
# Run this file as a script (`python lessons/01_notation_and_shapes.py`) or open it as a
# notebook (it is in jupytext "percent" format).

# %%
from __future__ import annotations

import torch
from einops import rearrange

from minigpt_ptv2 import BertEncoder, ShapeTrace, preset



# %% [markdown]
# ## 1. The letters come from the config
#
# A config knows D, L, H, H_kv and d; B, N and P belong to the batch and the prompt, not to the
# model. Every preset satisfies D = H * d: the heads are D cut into H equal pieces.

# %%
def show_configs():
    for name in ("bert-base", "minilm", "bert-tiny"):
        cfg = preset(name)
        print(f"{name:<10} {cfg.dims()}  (D = H * d: {cfg.hidden_size} = "
              f"{cfg.num_attention_heads} * {cfg.head_dim})")
        assert cfg.hidden_size == cfg.num_attention_heads * cfg.head_dim


show_configs()


# %% [markdown]
# ## 2. One batch, step by step
#
# Token ids are `[B, N]` integers. The embedding table turns each id into a D-vector:
# `[B, N, D]`. Attention then splits D into H heads of size d: `[B, N, D] -> [B, H, N, d]`.
# `einops.rearrange` writes that move as a sentence, which is why the package uses it. Merging
# the heads back gives the same numbers bit for bit: a split is a reshaping, not a computation.

# %%
def one_batch(B=16, N=128, D=768, H=12):
    ids = torch.randint(0, 1000, (B, N))  # [B, N]
    table = torch.nn.Embedding(1000, D)
    x = table(ids)  # [B, N, D]
    heads = rearrange(x, "b n (h d) -> b h n d", h=H)  # [B, H, N, d]
    back = rearrange(heads, "b h n d -> b n (h d)")  # [B, N, D]
    print(f"ids {list(ids.shape)} -> embeddings {list(x.shape)} -> heads {list(heads.shape)}")
    assert torch.equal(back, x), "splitting and merging heads must be lossless"
    return x.detach()


torch.manual_seed(0)
B, N, P = 16, 128, 20
x = one_batch(B, N)  # [B, N, D], used by section 3


# %% [markdown]
# ## 3. A prompt is `[P, D]`; the batch needs `[B, P, D]`
#
# A trained prompt has no batch axis: every example gets the same P vectors. To glue it in
# front of the `[B, N, D]` hidden states we add a batch axis and *broadcast* it with `expand`.
# `expand` makes a view: stride 0 on the batch axis, the same memory as the prompt, no copy.
# `repeat` would copy it B times (B\*P\*D floats of 4 bytes: 983,040 bytes at B=16, P=20,
# D=768). Then `torch.cat(..., dim=1)` puts the P rows in front of the N rows: `[B, P+N, D]`.

# %%
def prompt_meets_batch(x, P=20):
    B, N, D = x.shape
    prompt = torch.randn(P, D)  # [P, D]
    broadcast = prompt.unsqueeze(0).expand(B, -1, -1)  # [B, P, D], a view
    joined = torch.cat([broadcast, x], dim=1)  # [B, P+N, D]
    shares = broadcast.data_ptr() == prompt.data_ptr()
    print(f"prompt {list(prompt.shape)} -> broadcast {list(broadcast.shape)} "
          f"(stride {broadcast.stride()}, shares memory: {shares})")
    print(f"cat(prompt, hidden) -> {list(joined.shape)}  = [B, P+N, D] with P+N = {P + N}")
    copied = prompt.unsqueeze(0).repeat(B, 1, 1)  # [B, P, D], B real copies
    copied_bytes = copied.numel() * copied.element_size()
    print(f"repeat instead of expand allocates {copied_bytes:,} bytes (B*P*D*4); expand allocates 0")
    assert broadcast.stride()[0] == 0 and shares and copied.data_ptr() != prompt.data_ptr()
    assert copied_bytes == B * P * D * 4
    assert joined.shape == (B, P + N, D) and torch.equal(joined[:, :P], broadcast) and torch.equal(joined[:, P:], x)
    return copied_bytes


joined = prompt_meets_batch(x, P)


# %% [markdown]
# ## 4. Letting the model tell us its shapes
#
# Reading shapes off the code is error-prone; the package can *record* them. Every module calls
# `record(scope, name, tensor)` at the places worth looking at. Inside a `ShapeTrace` block
# those calls write a row; outside, they hand the tensor straight back and keep nothing.
# `ShapeTrace.for_model` spells each shape with our letters. Weights do not change shapes, so a
# randomly initialised model is enough here (three layers instead of twelve: every layer looks
# the same).
#
# Read the table top to bottom: embeddings `[B, N, D]`; the padding mask `[B, N]`; in each
# layer, queries, keys and values `[B, H, N, d]`, the per-head context `[B, H, N, d]`, the
# attention output and the layer output back at `[B, N, D]`; finally the hidden states
# `[B, N, D]` and the pooled [CLS] vector `[B, D]`. Nothing here has P yet: that is lesson 06.
#
# Why three layers and not two? With L=2, L\*2\*D = 3072 = D_ff: two letters would share a size,
# and a table could not tell them apart. Here every letter has its own size (B=16, N=128, L=3,
# H=12, d=64, D=768, D_ff=3072, L\*2\*D=4608, V=30,522), so a shape that moves to a wrong axis
# shows up as a wrong letter.

# %%
def trace_example(B=16, N=128, layers=3) -> ShapeTrace:
    """A plain BERT-base-shaped encoder (random weights, `layers` layers) on a [B, N] batch."""
    torch.manual_seed(0)
    cfg = preset("bert-base").replace(num_hidden_layers=layers)
    model = BertEncoder(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    with torch.no_grad(), ShapeTrace.for_model(model, B=B, N=N) as tr:
        model(ids)
    return tr


def every_layer_alike(tr: ShapeTrace, layers: int):
    """Each layer records the same rows with the same shapes; no row has a P axis."""
    per_layer = [[(n.split(".", 1)[1], s) for n, s in tr.rows if n.startswith(f"layer{i}.")] for i in range(layers)]
    assert all(rows == per_layer[0] for rows in per_layer) and per_layer[0]
    assert not any("P" in tr.letters(s, n) for n, s in tr.rows)
    print(f"all {layers} layers record the same {len(per_layer[0])} rows; no row has a P axis")


trace = trace_example(B, N)
print(trace.table(collapse_repeats=True))
every_layer_alike(trace, 3)


# %% [markdown]
# ## What to remember
#
# - B, N, P come from the batch and the prompt; D, L, H, H_kv, d from the config, with D = H * d.
#   V and D_ff are the vocabulary and the feed-forward width.
# - A prompt is `[P, D]`; it reaches the batch as `[B, P, D]` through `expand` (a view, stride 0,
#   no bytes), and meets the hidden states through `cat` along the sequence axis: `[B, P+N, D]`.
# - Heads are a reshaping of D: `[B, N, D] <-> [B, H, N, d]`, lossless both ways.
# - `ShapeTrace` shows every named shape of a real forward pass, in these letters; choose sizes
#   where no two letters coincide, or the letters cannot tell the axes apart.
#
# ## Check your understanding
#
# 1. BERT-base, B=16, N=128: what are the shapes of one layer's keys and of its attention
#    probabilities (one weight per query and key)?
#
#    <details><summary>Answer</summary>
#
#    Keys `[B, H, N, d]` = `[16, 12, 128, 64]`; probabilities `[B, H, N, N]` = `[16, 12, 128, 128]`:
#    every one of the N queries of every head weighs all N keys.
#
#    </details>
#
# 2. A prompt `[20, 768]` is broadcast to `[16, 20, 768]` with `expand`. How many new bytes does
#    that take, what is its stride, and what would `repeat` cost?
#
#    <details><summary>Answer</summary>
#
#    No new bytes: `expand` returns a view of the prompt's memory with stride `(0, 768, 1)`, so
#    all 16 batch rows read the same numbers. `repeat` makes 16 real copies: 16 * 20 * 768 floats
#    of 4 bytes = 983,040 bytes.
#
#    </details>
#
# 3. MiniLM has D=384 and H=12. What is d, and what shape comes out of `cat` when a prompt of
#    P=20 rows is put in front of hidden states `[8, 128, 384]`?
#
#    <details><summary>Answer</summary>
#
#    d = D / H = 32. `cat` along the sequence axis gives `[B, P+N, D]` = `[8, 148, 384]`; the
#    batch axis and D are unchanged.
#
#    </details>
#
# 4. Why would B=12 be a bad choice for a BERT-base trace test, even though everything still runs?
#
#    <details><summary>Answer</summary>
#
#    Then B = H = 12 and a keys tensor `[12, 12, 128, 64]` reads the same with the batch and head
#    axes swapped: a bug that transposes them keeps every shape, and the letters cannot say which
#    axis is which. With sizes that all differ, a moved axis is a wrong letter in the table.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/01_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. Run `trace_example(B=4, N=32)` and `trace_example(B=4, N=48)` and compare the two tables
#    row by row: which rows change and which do not? [`try_1`]
# 2. Print `trace_example(B=4, N=32).letters((4, 12, 32, 64))`, then spell shapes of your own:
#    `(4, 768)`, `(4, 32, 3072)` and `(7,)`. What does a size no letter has print as? [`try_2`]
# 3. Run `python -m minigpt_ptv2 trace --method none --config minilm --B 4 --N 24`. Which letters
#    have other sizes than in section 4, and which rows appear that section 4's table does not
#    have? (Hint: the command's `--fused` option.) [`try_3`]
# 4. Replace `expand` by `repeat(B, 1, 1)` in section 3 and compare `broadcast.stride()` and
#    whether it shares the prompt's memory. [`try_4`]
