# %% [markdown]
# # Lesson 03 — The BERT encoder
#
# The encoder is the frozen backbone most of this project prompts. It is short:
#
#     input_ids [B, N] -> Embeddings -> L x BertLayer -> last_hidden_state [B, N, D]
#                                                        -> pooler(h[:, 0])    [B, D]
#
# (B batch rows, N tokens, D hidden size, L layers, H attention heads of d = D / H features:
# lesson 01's letters.) We take it apart piece by piece, rebuild the embeddings and one layer
# by hand, and check the claims that matter later: padding never leaks into real tokens, and
# dropout is off in eval mode.

# %%
from __future__ import annotations

import torch
import torch.nn.functional as F

from minigpt_ptv2 import BertEncoder, ShapeTrace, preset
from minigpt_ptv2.fast import row_blocks



# %% [markdown]
# ## 1. Where the parameters are
#
# Building on PyTorch's `meta` device allocates nothing, so we can count BERT-base's 110M
# parameters instantly. The word-embedding table alone, V x D = 30,522 x 768 (V is the
# vocabulary size), is more than a fifth of the model: 21.4%. One layer is 6.5%.

# %%
def where_the_parameters_are(name="bert-base") -> dict:
    with torch.device("meta"):
        model = BertEncoder(preset(name))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    total = count(model)
    parts = {"word table": count(model.embeddings.word_embeddings), "embeddings": count(model.embeddings),
             "one layer": count(model.layers[0]), "pooler": count(model.pooler)}
    for label, n in parts.items():
        print(f"{name} {label:<11} {n:>12,}  ({100 * n / total:4.1f}%)")
    print(f"{name} {'total':<11} {total:>12,}  (L = {len(model.layers)} layers)")
    return {label: n / total for label, n in parts.items()} | {"total": total}


shares = where_the_parameters_are()
assert 109e6 < shares["total"] < 110e6 and 0.2 < shares["word table"] < 0.22
assert 0.064 < shares["one layer"] < 0.066


# %% [markdown]
# ## 2. Embeddings: three tables, one LayerNorm
#
# Each token's vector is word + token type + position, then LayerNorm (and dropout). With a
# single segment every token has token type 0, and that row is *still added*: forgetting it is
# a classic reason a re-implementation disagrees with the checkpoint (pitfall 8, lesson 13's
# index). Rebuilt by hand with the
# same additions in the same order, the embeddings equal the module's bit for bit.
#
# From here on the lesson uses a model with random weights and MiniLM's shapes (D=384, L=6,
# H=12 heads), on a batch of random ids.

# %%
def embeddings_by_hand(model: BertEncoder, ids: torch.Tensor, with_token_type: bool = True):
    """word + (token type row 0) + position, then the embedding LayerNorm: [B, N] -> [B, N, D]."""
    e = model.embeddings
    B, N = ids.shape
    pos = torch.arange(N).expand(B, N)  # [B, N]
    x = e.word_embeddings(ids)  # [B, N, D]
    if with_token_type:
        x = x + e.token_type_embeddings.weight[0]  # [B, N, D] + [D]: segment 0, for every token
    mine = e.LayerNorm(x + e.position_embeddings(pos))  # [B, N, D]
    theirs = e(ids, torch.zeros_like(ids), pos)  # [B, N, D]
    gap = (mine - theirs).abs().max().item()
    print(f"embeddings by hand{'' if with_token_type else ' without the token-type row'} vs module: "
          f"max |diff| = {gap:.1e}")
    return theirs, gap


torch.manual_seed(0)
cfg = preset("minilm")  # random weights, real shapes
model = BertEncoder(cfg).eval()
B, N = 8, 64
ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]; model and ids are used by every section below
with torch.no_grad():
    x, gap = embeddings_by_hand(model, ids)  # x [B, N, D]
assert gap == 0, "the same additions in the same order: bit for bit"


# %% [markdown]
# ## 3. One layer, post-LayerNorm
#
# BERT normalises *after* each residual addition (GPT-2, lesson 05, normalises before):
#
#     x = LN(x + Attn(x))
#     x = LN(x + FFN(x)),   FFN(x) = gelu(x W_in + b_in) W_out + b_out,   [B, N, D] -> [B, N, D_ff] -> [B, N, D]
#
# D_ff is the feed-forward width: 4D in BERT (3072 in BERT-base, 1536 in MiniLM). BERT's GELU
# is the exact one, with erf; GPT-2 uses the tanh approximation. On [-4, 4] they differ by up
# to 4.7e-4 per activation: small, but about fifty times the 1e-5 an equivalence test allows
# (pitfall 8).
#
# The FFN is *position-wise*: each of the `B*N` token rows goes through it on its own. A speed
# device uses that (`fast/row_blocks.py`, on for a loaded model, off with `fast=False`): on CPU
# without autograd it runs 1024 rows at a time, so the widest activation, `[B*N, D_ff]`, never
# exists whole. Our batch has fewer rows than that, so below we turn it on with blocks of a
# fifth of the rows: the output agrees with the plain model to float rounding (under 1e-5).
# The code you read is `feed_forward`.

# %%
def layer_by_hand(model: BertEncoder, x: torch.Tensor, approximate: str = "none") -> float:
    """Layer 0 rebuilt from its parts; approximate="tanh" swaps in GPT-2's GELU."""
    layer = model.layers[0]
    a, _, _ = layer.attn(x)  # [B, N, D]
    h = layer.attn_norm(x + a)  # [B, N, D]
    f = layer.ffn_out(F.gelu(layer.ffn_in(h), approximate=approximate))  # [B, N, D_ff] -> [B, N, D]
    mine = layer.ffn_norm(h + f)  # [B, N, D]
    theirs, _, _ = layer(x)
    gap = (mine - theirs).abs().max().item()
    print(f"layer 0 by hand ({'erf' if approximate == 'none' else approximate} GELU) vs module: "
          f"max |diff| = {gap:.1e}")
    assert gap < 1e-6, f"layer 0 by hand with the {approximate!r} GELU is {gap:.1e} from the module"
    return gap


def gelu_gap() -> float:
    t = torch.linspace(-4, 4, 801)
    gap = (F.gelu(t) - F.gelu(t, approximate="tanh")).abs().max().item()
    print(f"erf GELU vs tanh GELU on [-4, 4]: max |diff| = {gap:.1e}")
    assert 4e-4 < gap < 5e-4 and gap > 10 * 1e-5
    return gap


with torch.no_grad():
    layer_by_hand(model, x)
    gelu_gap()


# %% [markdown]
# The feed-forward block in blocks of rows, against all rows at once:

# %%
def row_blocks_agree(model: BertEncoder, ids: torch.Tensor) -> float:
    rows = ids.numel() // 5  # B*N // 5 rows per block: five blocks and a remainder
    plain = model(ids).last_hidden_state  # [B, N, D]
    row_blocks.enable(model, rows=rows)
    try:
        blocked = model(ids).last_hidden_state  # [B, N, D]
    finally:
        row_blocks.disable(model)
    gap = (plain - blocked).abs().max().item()
    print(f"FFN in blocks of {rows} of the {ids.numel()} rows vs all at once: max |diff| = {gap:.1e}")
    assert gap < 1e-5
    return gap


with torch.no_grad():
    row_blocks_agree(model, ids)


# %% [markdown]
# ## 4. Padding never reaches the real tokens
#
# A padded batch carries `attention_mask` 0 on its pad positions. The model turns it into a
# keep-mask `[B, 1, 1, N]`, and every query gives those keys weight exactly zero. The proof:
# change what sits in the pad positions, and the real tokens' outputs do not move, not even by
# rounding (0 * a value is 0, whatever the value).

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
    print(f"real tokens after changing the {pad} pads: max |diff| = {(a - b)[real].abs().max():.1e}; "
          f"the pad rows themselves moved by {(a - b)[~real].abs().max():.2f}")
    assert torch.equal(a[real], b[real]) and not torch.equal(a[~real], b[~real])


with torch.no_grad():
    padding_is_invisible(model, ids, pad=N // 4)


# %% [markdown]
# ## 5. Dropout is off in eval mode
#
# BERT's config has dropout 0.1. In `train()` mode two identical forward passes differ; after
# `eval()` they agree exactly. Equivalence tests, inference and traces all run in eval mode
# (pitfall 8).

# %%
def dropout_only_in_training(model: BertEncoder, ids: torch.Tensor):
    model.train()
    t1, t2 = model(ids).last_hidden_state, model(ids).last_hidden_state
    model.eval()
    e1, e2 = model(ids).last_hidden_state, model(ids).last_hidden_state
    print(f"dropout p = {model.config.hidden_dropout_prob}; train mode, two passes: max |diff| = "
          f"{(t1 - t2).abs().max():.2f};  eval mode: {(e1 - e2).abs().max():.1f}")
    assert not torch.equal(t1, t2) and torch.equal(e1, e2)


with torch.no_grad():
    dropout_only_in_training(model, ids)


# %% [markdown]
# ## 6. The shapes, recorded
#
# The tiny preset (D=24, L=3, H=4, d=6, D_ff=40, V=120) with B=2, N=5 has every size distinct,
# so a wrong axis cannot hide. The last row is padded, so the trace shows the keep-mask
# `[B, 1, 1, N]`; asking for the attentions takes the explicit path, which records scores and
# probabilities `[B, H, N, N]`.

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


print(trace_example().table(collapse_repeats=True))


# %% [markdown]
# ## What to remember
#
# - Embeddings = word + token type (row 0 even for one segment) + position, then LayerNorm.
# - A BERT layer is post-LN with the erf GELU: `LN(x + Attn(x))`, then `LN(x + FFN(x))`, and the
#   FFN (`[B, N, D] -> [B, N, D_ff] -> [B, N, D]`) treats every token row on its own.
# - Padding is excluded through the keep-mask: pad content cannot change real tokens at all.
# - The pooler reads row 0, the [CLS] token: remember this when lesson 06 puts a prompt there.
# - Dropout must be off (`eval()`) whenever outputs are compared.
#
# ## Check your understanding
#
# 1. One BERT-base layer has 7,087,872 parameters (D=768, D_ff=3072). How many of them are in the
#    attention and how many in the feed-forward block?
#
#    <details><summary>Answer</summary>
#
#    Attention: `qkv` D x 3D + 3D and `output` D x D + D, 4D^2 + 4D = 2,362,368. Feed-forward:
#    D x D_ff + D_ff and D_ff x D + D, 2 D D_ff + D_ff + D = 4,722,432, twice as much, since
#    D_ff = 4D. The two LayerNorms add 4D = 3,072: 2,362,368 + 4,722,432 + 3,072 = 7,087,872.
#
#    </details>
#
# 2. Why can the content of a pad position not change a real token's output, when the pad
#    position's own output does change?
#
#    <details><summary>Answer</summary>
#
#    Real tokens' queries give the pad keys weight exactly 0 (keep-mask), so the pad's value is
#    multiplied by 0 in every layer; the feed-forward block and LayerNorm work row by row, so
#    nothing else mixes tokens. The pad's own query is not masked: it reads the real tokens, and
#    its own token changes its own row, so its output moves (and is never used).
#
#    </details>
#
# 3. A shallow prompt puts P virtual rows in front of the tokens, `[B, P+N, D]`. What does
#    `h[:, 0]` then point at, and what must the pooler read instead?
#
#    <details><summary>Answer</summary>
#
#    `h[:, 0]` is the first virtual token, not [CLS]. The prompt rows must be sliced off first,
#    `h[:, P:]`, so that row 0 is the real [CLS] again (pitfall 2, lesson 06). `EncoderOutput`
#    does this: its pooler always reads the real [CLS].
#
#    </details>
#
# 4. Two forward passes in `train()` mode give different outputs. Which modules cause it, and why
#    must traces and equivalence tests run in `eval()`?
#
#    <details><summary>Answer</summary>
#
#    The dropout layers (p = 0.1 on the embeddings, the attention probabilities and each residual
#    branch) zero a random tenth of their inputs and scale the rest by 1/0.9 on every call. In
#    `eval()` they pass inputs through unchanged, so the model is a deterministic function and
#    can be compared with a reference.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/03_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. Swap in the tanh GELU: call `layer_by_hand(model, x, approximate="tanh")` and see the
#    assertion fail. By how much does layer 0's output move? [`try_1`]
# 2. Remove the token-type row: call `embeddings_by_hand(model, ids, with_token_type=False)` and
#    measure the difference; then do the same on the pretrained MiniLM of lesson 04,
#    `BertEncoder.from_pretrained(default_model_dir())` (`from minigpt_ptv2.pretrained import
#    default_model_dir`). [`try_2`]
# 3. Run `python -m minigpt_ptv2 trace --method none --config bert-tiny --B 2 --N 5 --pad 2`, then
#    again with `--pad 0`. Which row disappears, and why? [`try_3`]
# 4. Run `where_the_parameters_are("minilm")`. What share of MiniLM is the word-embedding table,
#    and why is it so much larger than in BERT-base? [`try_4`]
