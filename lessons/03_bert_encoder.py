# %% [markdown]
# # Lesson 03 — The BERT encoder
#
# The encoder is the frozen backbone most of this project prompts. It is short:
#
#     input_ids [B, N] -> Embeddings -> L x BertLayer -> last_hidden_state [B, N, D]
#                                                        -> pooler(h[:, 0])    [B, D]
#
# We take it apart piece by piece, rebuild one layer by hand, and check the claims that matter
# later: padding never leaks into real tokens, and dropout is off in eval mode.

# %%
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from minigpt_ptv2 import BertEncoder, ShapeTrace, preset

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")

# %% [markdown]
# ## 1. Where the parameters are
#
# Building on PyTorch's `meta` device allocates nothing, so we can count BERT-base's 110M
# parameters instantly. The word-embedding table alone is a fifth of the model.

# %%
def where_the_parameters_are(name="bert-base"):
    with torch.device("meta"):
        model = BertEncoder(preset(name))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    total = count(model)
    parts = [("embeddings", model.embeddings), ("one layer", model.layers[0]), ("pooler", model.pooler)]
    for label, module in parts:
        print(f"{name} {label:<11} {count(module):>12,}  ({100 * count(module) / total:4.1f}%)")
    print(f"{name} {'total':<11} {total:>12,}  (L = {len(model.layers)} layers)")


# %% [markdown]
# ## 2. Embeddings: three tables, one LayerNorm
#
# Each token's vector is word + token type + position, then LayerNorm (and dropout). With a
# single segment every token has token type 0, and that row is *still added*: forgetting it is
# a classic reason a re-implementation disagrees with the checkpoint.

# %%
def embeddings_by_hand(model: BertEncoder, ids: torch.Tensor):
    e = model.embeddings
    B, N = ids.shape
    pos = torch.arange(N).expand(B, N)  # [B, N]
    x = e.word_embeddings(ids) + e.token_type_embeddings.weight[0] + e.position_embeddings(pos)  # [B, N, D]
    mine = e.LayerNorm(x)  # [B, N, D]
    theirs = e(ids, torch.zeros_like(ids), pos)  # [B, N, D]
    print(f"embeddings by hand vs module: max |diff| = {(mine - theirs).abs().max():.1e}")
    assert torch.allclose(mine, theirs, atol=1e-6)
    return theirs


# %% [markdown]
# ## 3. One layer, post-LayerNorm
#
# BERT normalises *after* each residual addition (GPT-2, lesson 05, normalises before):
#
#     x = LN(x + Attn(x))
#     x = LN(x + FFN(x)),   FFN(x) = gelu(x W_in + b_in) W_out + b_out,   [B, N, D] -> [B, N, D_ff] -> [B, N, D]
#
# BERT's GELU is the exact one, with erf. GPT-2 uses the tanh approximation. They differ by
# up to about 5e-4 per activation: small, but enough to fail an equivalence test at 1e-5.
#
# The FFN is *position-wise*: each of the B*N token rows goes through it on its own. A speed
# device uses that (`fast/row_blocks.py`, on for a loaded model, off with `fast=False`): on CPU
# without autograd it runs 1024 rows at a time, so the widest activation, [B*N, D_ff], never
# exists whole. The numbers agree up to float rounding. The code you read is `feed_forward`.

# %%
def layer_by_hand(model: BertEncoder, x: torch.Tensor):
    layer = model.layers[0]
    a, _, _ = layer.attn(x)  # [B, N, D]
    h = layer.attn_norm(x + a)  # [B, N, D]
    f = layer.ffn_out(F.gelu(layer.ffn_in(h)))  # [B, N, D_ff] -> [B, N, D]
    mine = layer.ffn_norm(h + f)  # [B, N, D]
    theirs, _, _ = layer(x)
    print(f"layer 0 by hand vs module:     max |diff| = {(mine - theirs).abs().max():.1e}")
    assert torch.allclose(mine, theirs, atol=1e-6)
    t = torch.linspace(-4, 4, 801)
    gap = (F.gelu(t) - F.gelu(t, approximate="tanh")).abs().max()
    print(f"erf GELU vs tanh GELU on [-4, 4]: max |diff| = {gap:.1e}")


# %% [markdown]
# ## 4. Padding never reaches the real tokens
#
# A padded batch carries `attention_mask` 0 on its pad positions. The model turns it into a
# keep-mask `[B, 1, 1, N]`, and every query gives those keys weight zero. The proof: change
# what sits in the pad positions, and the real tokens' outputs do not move.

# %%
def padding_is_invisible(model: BertEncoder, ids: torch.Tensor, pad: int):
    B, N = ids.shape
    mask = torch.ones(B, N, dtype=torch.long)  # [B, N]
    mask[-1, N - pad:] = 0
    other = ids.clone()
    other[-1, N - pad:] = (ids[-1, N - pad:] + 7) % model.config.vocab_size  # different pad content
    a = model(ids, attention_mask=mask).last_hidden_state  # [B, N, D]
    b = model(other, attention_mask=mask).last_hidden_state  # [B, N, D]
    real = mask.bool()
    print(f"real tokens after changing the pads: max |diff| = {(a - b)[real].abs().max():.1e}")
    assert torch.allclose(a[real], b[real], atol=1e-6)


# %% [markdown]
# ## 5. Dropout is off in eval mode
#
# BERT's config has dropout 0.1. In `train()` mode two identical forward passes differ; after
# `eval()` they agree exactly. Equivalence tests, inference and traces all run in eval mode.

# %%
def dropout_only_in_training(model: BertEncoder, ids: torch.Tensor):
    model.train()
    t1, t2 = model(ids).last_hidden_state, model(ids).last_hidden_state
    model.eval()
    e1, e2 = model(ids).last_hidden_state, model(ids).last_hidden_state
    print(f"train mode, two passes: max |diff| = {(t1 - t2).abs().max():.2f};  "
          f"eval mode: {(e1 - e2).abs().max():.1f}")
    assert not torch.equal(t1, t2) and torch.equal(e1, e2)


# %% [markdown]
# ## 6. The shapes, recorded
#
# The tiny preset (D=24, H=4, d=6, L=3) has every size distinct, so a wrong axis cannot hide.
# The last row is padded, so the trace shows the keep-mask `[B, 1, 1, N]`; asking for the
# attentions takes the explicit path, which records scores and probabilities.

# %%
def trace_example(B=2, N=5, pad=2) -> ShapeTrace:
    torch.manual_seed(0)
    cfg = preset("bert-tiny")
    model = BertEncoder(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)  # [B, N]
    mask[-1, N - pad:] = 0
    with torch.no_grad(), ShapeTrace.for_model(model, B=B, N=N) as tr:
        model(ids, attention_mask=mask, output_attentions=True)
    return tr


# %%
def main():
    torch.manual_seed(0)
    where_the_parameters_are()
    print()
    cfg = preset("bert-tiny") if QUICK else preset("minilm")  # random weights, real shapes
    model = BertEncoder(cfg).eval()
    B, N = (2, 8) if QUICK else (8, 64)
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    with torch.no_grad():
        x = embeddings_by_hand(model, ids)
        layer_by_hand(model, x)
        padding_is_invisible(model, ids, pad=N // 4)
        dropout_only_in_training(model, ids)
    print()
    print(trace_example().table())


# %% [markdown]
# ## What to remember
#
# - Embeddings = word + token type (row 0 even for one segment) + position, then LayerNorm.
# - A BERT layer is post-LN with the erf GELU: `LN(x + Attn(x))`, then `LN(x + FFN(x))`.
# - Padding is excluded through the keep-mask: pad content cannot change real tokens.
# - The pooler reads row 0, the [CLS] token: remember this when lesson 06 puts a prompt there.
# - Dropout must be off (`eval()`) whenever outputs are compared.
#
# ## Try this
#
# - Swap `F.gelu(...)` for the tanh version in `layer_by_hand` and see the assertion fail.
# - Remove the token-type row from `embeddings_by_hand` and measure the difference.
# - Run `python -m minigpt_ptv2 trace --method none --config bert-tiny --B 2 --N 5 --pad 2`.

# %%
if __name__ == "__main__":
    main()
