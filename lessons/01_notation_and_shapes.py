# %% [markdown]
# # Lesson 01 — Notation and shapes
#
# Almost every bug in prompt tuning is a shape bug that did not crash: a prompt glued onto the
# wrong axis, a mask that broadcast where it should have failed, a pooled vector taken from the
# wrong row. So before any model, we agree on seven letters and learn to read tensors with them.
#
# | letter | meaning                       | BERT-base | MiniLM-L6 |
# |--------|-------------------------------|-----------|-----------|
# | B      | batch size                    | 16        |           |
# | N      | real tokens in a sequence     | 128       |           |
# | P      | prompt / prefix length        | 20        |           |
# | D      | hidden size                   | 768       | 384       |
# | L      | layers                        | 12        | 6         |
# | H      | attention heads               | 12        | 12        |
# | d      | head size, D / H              | 64        | 32        |
#
# The numbers B=16, N=128, P=20, D=768 are those of the P-Tuning v2 walkthrough this project
# started from ("seed 000", one of five tutorials listed in `lessons/README.md`); we keep them
# so you can compare our tables with it line by line.
#
# Run this file as a script (`python lessons/01_notation_and_shapes.py`) or open it as a
# notebook (it is in jupytext "percent" format). Set `MINIGPT_PTV2_QUICK=1` for smaller sizes.

# %%
from __future__ import annotations

import os

import torch
from einops import rearrange

from minigpt_ptv2 import BertEncoder, ShapeTrace, preset

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")

# %% [markdown]
# ## 1. The letters come from the config
#
# A config knows D, L, H and d; B, N and P belong to the batch and the prompt, not the model.

# %%
def show_configs():
    for name in ("bert-base", "minilm", "bert-tiny"):
        cfg = preset(name)
        print(f"{name:<10} {cfg.dims()}  (D = H * d: {cfg.hidden_size} = "
              f"{cfg.num_attention_heads} * {cfg.head_dim})")


# %% [markdown]
# ## 2. One batch, step by step
#
# Token ids are `[B, N]` integers. The embedding table turns each id into a D-vector:
# `[B, N, D]`. Attention then splits D into H heads of size d: `[B, N, D] -> [B, H, N, d]`.
# `einops.rearrange` writes that move as a sentence, which is why the package uses it.

# %%
def one_batch(B=16, N=128, D=768, H=12):
    ids = torch.randint(0, 1000, (B, N))  # [B, N]
    table = torch.nn.Embedding(1000, D)
    x = table(ids)  # [B, N, D]
    heads = rearrange(x, "b n (h d) -> b h n d", h=H)  # [B, H, N, d]
    back = rearrange(heads, "b h n d -> b n (h d)")  # [B, N, D]
    print(f"ids {list(ids.shape)} -> embeddings {list(x.shape)} -> heads {list(heads.shape)}")
    assert torch.equal(back, x), "splitting and merging heads must be lossless"
    return x


# %% [markdown]
# ## 3. A prompt is `[P, D]`; the batch needs `[B, P, D]`
#
# A trained prompt has no batch axis: every example gets the same P vectors. To glue it in
# front of the `[B, N, D]` hidden states we add a batch axis and *broadcast* it with `expand`.
# `expand` makes a view (stride 0 on the batch axis): no copy, B times nothing. `repeat` would
# copy it B times. Then `torch.cat(..., dim=1)` puts the P rows in front of the N rows.

# %%
def prompt_meets_batch(x, P=20):
    B, N, D = x.shape
    prompt = torch.randn(P, D)  # [P, D]
    broadcast = prompt.unsqueeze(0).expand(B, -1, -1)  # [B, P, D], a view
    joined = torch.cat([broadcast, x], dim=1)  # [B, P+N, D]
    print(f"prompt {list(prompt.shape)} -> broadcast {list(broadcast.shape)} "
          f"(stride {broadcast.stride()}, shares memory: {broadcast.data_ptr() == prompt.data_ptr()})")
    print(f"cat(prompt, hidden) -> {list(joined.shape)}  = [B, P+N, D] with P+N = {P + N}")
    copied = prompt.unsqueeze(0).repeat(B, 1, 1)  # [B, P, D], B real copies
    print(f"repeat instead of expand would allocate {copied.numel() * 4:,} bytes instead of 0")
    assert torch.equal(joined[:, :P], broadcast) and torch.equal(joined[:, P:], x)


# %% [markdown]
# ## 4. Letting the model tell us its shapes
#
# Reading shapes off the code is error-prone; the package can *record* them. Every module calls
# `record(scope, name, tensor)` at the places worth looking at. Inside a `ShapeTrace` block
# those calls write a row; outside, they do nothing at all. `ShapeTrace.for_model` spells each
# shape with our letters. Weights do not change shapes, so a randomly initialised model is
# enough here (two layers instead of twelve: every layer looks the same).

# %%
def trace_example(B=16, N=128, layers=2) -> ShapeTrace:
    """A plain BERT-base-shaped encoder (random weights, `layers` layers) on a [B, N] batch."""
    torch.manual_seed(0)
    cfg = preset("bert-base").replace(num_hidden_layers=layers)
    model = BertEncoder(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    with torch.no_grad(), ShapeTrace.for_model(model, B=B, N=N) as tr:
        model(ids)
    return tr


# %% [markdown]
# Read the table top to bottom: embeddings `[B, N, D]`; the padding mask `[B, N]`; in each
# layer, queries, keys and values `[B, H, N, d]`, the per-head context `[B, H, N, d]`, the
# attention output and the layer output back at `[B, N, D]`; finally the hidden states
# `[B, N, D]` and the pooled [CLS] vector `[B, D]`. Nothing here has P yet: that is lesson 06.

# %%
def main():
    torch.manual_seed(0)
    B, N, P = (2, 16, 4) if QUICK else (16, 128, 20)
    show_configs()
    print()
    x = one_batch(B, N)
    prompt_meets_batch(x, P)
    print()
    print(trace_example(B, N).table())


# %% [markdown]
# ## What to remember
#
# - B, N, P come from the batch and the prompt; D, L, H, d from the config, with D = H * d.
# - A prompt is `[P, D]`; it reaches the batch as `[B, P, D]` through `expand` (a view), and
#   meets the hidden states through `cat` along the sequence axis: `[B, P+N, D]`.
# - Heads are a reshaping of D: `[B, N, D] <-> [B, H, N, d]`, lossless both ways.
# - `ShapeTrace` shows every named shape of a real forward pass, in these letters.
#
# ## Try this
#
# - Change `N` in `trace_example` and check which rows change and which do not.
# - Print `trace_example().letters((16, 12, 128, 64))` and then a shape of your own.
# - Run `python -m minigpt_ptv2 trace --method none --config minilm --B 4 --N 32`.
# - Replace `expand` by `repeat` in section 3 and compare `broadcast.stride()`.

# %%
if __name__ == "__main__":
    main()
