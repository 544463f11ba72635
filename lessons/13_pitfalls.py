# %% [markdown]
# # Lesson 13 — Eight pitfalls, in one place
#
# Prompt tuning is a few lines of code, and most of the mistakes people make are in those few
# lines. This project started from five popular tutorials on P-Tuning v2 and prompt tuning,
# which the lessons call *seeds* and number 000 to 004 (`lessons/README.md` lists them; lesson
# 14 goes through them one by one). The same eight mistakes turn up in them and in library
# conventions, so here they are as one list, to come back to when your numbers do not match
# someone else's.
#
# Most of them were met, and run, where they belong: then this lesson just names them and
# says where to look. The ones not shown elsewhere get a small counter-example here: the wrong
# version, the right version, and a check that tells them apart.
#
# | # | pitfall | where it runs |
# |---|---|---|
# | 1 | positions under a prefix, and the 512 - P limit | here |
# | 2 | pooling a virtual token instead of [CLS] | lesson 06, section 2 |
# | 3 | prefixing the queries | lesson 08, section 2 |
# | 4 | a zero prefix is not "no prefix" | lesson 08, section 3; the trace in section 9 here |
# | 5 | `repeat` where `expand` does | here (memory, gradients); lesson 08, section 5 (time) |
# | 6 | a hard-coded `[2, 10]` prompt initialisation | lesson 06, section 3 |
# | 7 | a 2-D mask handed to a layer; "every layer" in the text, the input layer in the code | lesson 07, sections 4 and 5 |
# | 8 | small differences that break equivalence with a reference | here, and lessons 02-03 |

# %%
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from minigpt_ptv2 import BertEncoder, ShapeTrace, preset
from minigpt_ptv2.core.attention import additive_mask
from minigpt_ptv2.prompts import KVPrefix
from minigpt_ptv2.trace import dims_for, side_by_side

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")


def tiny_encoder(seed: int = 0, **changes) -> BertEncoder:
    torch.manual_seed(seed)
    return BertEncoder(preset("bert-tiny").replace(**changes)).eval()  # D=24, H=4, 64 positions


# %% [markdown]
# ## 1. Positions under a prefix, and the 512 - P limit
#
# When a K/V prefix is handed to HuggingFace BERT or GPT-2 as "past keys", the model assumes
# those P entries were earlier *tokens*, so the real tokens get positions P..P+N-1. PEFT
# inherits this. Two consequences: the outputs differ from a model where real tokens keep
# 0..N-1, and the longest input silently shrinks from 512 to 512 - P (past it, an error from
# deep inside the embeddings that never mentions the prefix). We make the policy a named choice (`positions="real"` by
# default, `"shifted"` to match PEFT) and refuse too-long inputs with a message that says why.

# %%
def positions_under_a_prefix(P=8):
    model = tiny_encoder()
    L = model.config.max_position_embeddings  # 64 for the tiny BERT, 512 for BERT / MiniLM
    torch.manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (1, 10))
    outs = {}
    for policy in ("real", "shifted"):
        torch.manual_seed(2)
        model.attach(KVPrefix(model.config, P, positions=policy))
        outs[policy] = model(ids).last_hidden_state
    gap = (outs["real"] - outs["shifted"]).abs().max()
    print(f"same prefix, same tokens: 'real' vs 'shifted' positions differ by {gap:.2f} (max |diff|)")
    assert gap > 1e-3
    longest = torch.randint(0, model.config.vocab_size, (1, L))  # N = max positions
    model.attach(KVPrefix(model.config, P, positions="real"))
    print(f"positions='real',    N={L}: ok, {model(longest).last_hidden_state.shape[1]} rows")
    model.attach(KVPrefix(model.config, P, positions="shifted"))
    try:
        model(longest)
        raise AssertionError("a shifted prefix must not fit N = max positions")
    except ValueError as e:
        print(f"positions='shifted', N={L}: ValueError: {e}")
    print(f"positions='shifted', N={L - P}: ok, {model(longest[:, :L - P]).last_hidden_state.shape[1]} rows "
          f"(the limit is max_positions - P)")


# %% [markdown]
# ## 2. Pooling a virtual token instead of [CLS] (seed 001)
#
# Prepend P rows to the input and row 0 of every later hidden state is the first *virtual*
# token; [CLS] has moved to row P. Seed 001 classifies from `last_hidden_state[:, 0]` after
# prepending, so its classifier reads a prompt vector. Nothing fails: the numbers are just
# the wrong ones. Slice the P rows off first (our encoder does, before `last_hidden_state` and
# the pooler). Lesson 06, section 2 shows the two rows side by side on pretrained MiniLM.
#
# ## 3. Prefixing the queries (seed 001's formula)
#
# Only K and V get a prefix. With P prefix queries as well, attention returns P+N rows, the
# residual `x + attn(x)` no longer adds up, and if the extra rows are dropped to make it fit,
# the N real rows are exactly the K/V-only result: the prefix queries were pure waste. Lesson
# 08, section 2 runs both versions.
#
# ## 4. A zero prefix is not "no prefix"
#
# Zero keys score 0 against every query, not minus infinity, so a zero prefix still takes
# attention and dilutes the real keys. "Off" means masked (`virtual_keep = False`). Lesson 08,
# section 3 measures both against the plain model; lesson 11, section 3 looks at the
# attention; section 9 below shows the one trace row that tells them apart.

# %% [markdown]
# ## 5. `repeat` where `expand` does (seed 002, seed 003)
#
# The prefix is the same for every row of the batch. Seed 002 copies its MLP output B times
# with `.repeat(...)` (seed 003 does the same to its soft prompt); the result is right, but it
# is B real copies. `.expand` gives the same values as a view: no copy, a stride of 0 along the
# batch, and the same gradient. (Worse still is running the MLP once per row: B times the
# work, and results that can drift in the last bits; lesson 08, section 5 times all three.)

# %%
def repeat_vs_expand(B=32, P=20, L=12, D=768):
    table = torch.randn(L, 2, P, D, requires_grad=True)  # what one forward needs, [L, 2, P, D]
    expanded = table.unsqueeze(2).expand(-1, -1, B, -1, -1)  # [L, 2, B, P, D], a view
    repeated = table.unsqueeze(2).repeat(1, 1, B, 1, 1)  # [L, 2, B, P, D], B copies
    mib = lambda t: t.untyped_storage().nbytes() / 2**20  # noqa: E731
    print(f"prefix for B={B}: expand {mib(expanded):.1f} MiB (stride along B: {expanded.stride(2)}), "
          f"repeat {mib(repeated):.1f} MiB")
    assert torch.equal(expanded, repeated) and expanded.stride(2) == 0
    w = torch.randn(L, 2, B, P, D)
    g_expand, = torch.autograd.grad((expanded * w).sum(), table)
    g_repeat, = torch.autograd.grad((repeated * w).sum(), table)
    assert torch.allclose(g_expand, g_repeat, atol=1e-4)
    print(f"gradients agree (max |diff| {(g_expand - g_repeat).abs().max():.1e}): the copies bought nothing")


# %% [markdown]
# ## 6. A hard-coded `[2, 10]` initialisation (seed 003)
#
# Seed 003 initialises its soft prompt from a `2 x 10` random matrix whatever the number of
# tokens and the embedding size, and nothing fails until the prompt meets the input
# embeddings. Lesson 06, section 3 reproduces it and shows `SoftPrompt` refusing it up front.
#
# ## 7. A 2-D mask handed to a layer (seed 000); "every layer" at the input only (seed 001)
#
# A layer adds its mask to the scores `[B, H, P+N, P+N]`; the 0/1 `[B, P+N]` padding mask
# only becomes the additive `[B, 1, 1, P+N]` form inside the *model's* forward. Handed
# straight to a layer, it crashes for most B, and for B = 1 it broadcasts silently and stops
# masking the pads (lesson 07, section 4). And a prompt concatenated to the input embeddings
# once is shallow prompt tuning, whatever the text says about "every layer" (lesson 07,
# section 5; lesson 14 traces P-tuning v1 the same way).

# %% [markdown]
# ## 8. Small differences that break equivalence with a reference
#
# When your model and a reference (transformers, PEFT) disagree in the third decimal, it is
# usually one of these. Each is tiny on its own and each breaks a 1e-5 comparison.
#
# - **GELU**: BERT uses the exact erf form, GPT-2 the tanh approximation (lesson 03, section 3
#   measures the gap).
# - **LayerNorm eps**: 1e-12 in BERT, 1e-5 in GPT-2; it matters when a row's variance is small.
# - **Weight layout**: GPT-2's Conv1D (and this package's `Linear`) stores weights `[in, out]`,
#   `nn.Linear` (and so BERT's checkpoints) `[out, in]`. Square matrices (D x D) load without
#   any shape error when the transpose is forgotten.
# - **Token-type row 0**: BERT adds `token_type_embeddings[0]` to every token, even when you
#   pass no token types; hand-built input embeddings (or prompt rows) must add it too
#   (lesson 03, section 2).
# - **Dropout**: in `train()` mode every forward differs; compare in `eval()` (lesson 03,
#   section 5).
# - **The mask constant**: -inf turns a fully masked row into NaN; the dtype's most negative
#   finite number gives a harmless uniform row (lesson 02, section 2). And fp32's minimum
#   overflows to -inf in fp16, so the constant must come from the compute dtype.
#
# The three not shown elsewhere, run:

# %%
def equivalence_breakers():
    torch.manual_seed(0)
    for scale in (1.0, 1e-3):
        h = torch.randn(4, 24) * scale  # rows with variance scale**2
        eps_gap = (F.layer_norm(h, (24,), eps=1e-12) - F.layer_norm(h, (24,), eps=1e-5)).abs().max()
        print(f"LayerNorm eps 1e-12 vs 1e-5, rows with std {scale:g}: max |diff| {eps_gap:.1e}")

    D = 24
    w = torch.randn(D, D)  # a BERT (nn.Linear) weight, [out, in]
    b, v = torch.randn(D), torch.randn(3, D)
    bert = F.linear(v, w, b)  # what BERT computes: v w^T + b
    forgot = v @ w + b  # loaded into our Linear (W [in, out], v W + b) as is: no error
    print(f"nn.Linear [out, in] loaded without transpose: max |diff| {(bert - forgot).abs().max():.2f}; "
          f"with w.T: {(bert - (v @ w.T + b)).abs().max():.1e}")
    assert not torch.allclose(bert, forgot, atol=1e-3)
    assert torch.allclose(bert, v @ w.T + b, atol=1e-5)

    nothing_kept = torch.zeros(1, 4, dtype=torch.bool)  # e.g. a fully padded row
    half = torch.tensor(torch.finfo(torch.float32).min).to(torch.float16)
    in_dtype = additive_mask(nothing_kept, torch.float16)[0, 0]
    print(f"fp32's min cast to fp16: {half.item()}; additive_mask builds the mask in the compute dtype: "
          f"{in_dtype.item()}")
    assert torch.isinf(half) and torch.isfinite(in_dtype)


# %% [markdown]
# ## 9. The shapes, recorded: zero prefix vs masked prefix
#
# The trace shows pitfall 4 from the inside. Tiny BERT (D=24, H=4, d=6, L=3), layer 0 shown,
# B=2, N=7, P=5, no padding. With a zero prefix nothing is masked, so no keep-mask is built at
# all (the fused attention runs without one). Masking the prefix adds one row, `mask.keep [B, 1, 1, P+N]`,
# and that row is the whole difference between "off" and "zero".

# %%
def trace_example(B=2, N=7, P=5, layers=3):
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


# %%
def main():
    torch.manual_seed(0)
    with torch.no_grad():
        positions_under_a_prefix()
    print()
    repeat_vs_expand(B=4 if QUICK else 32)
    print()
    equivalence_breakers()
    print()
    zero, masked = trace_example()
    print(side_by_side(zero, masked, ("zero prefix", "masked prefix")))


# %% [markdown]
# ## What to remember
#
# 1. Decide where real tokens sit under a prefix (0..N-1, or P..P+N-1 like PEFT) and say so;
#    the shifted convention costs P positions of length.
# 2. After a shallow prompt, slice the virtual rows off before pooling: row 0 must be [CLS].
# 3. Only K and V get a prefix. A prefixed Q is wasted work at best, a shape error at worst.
# 4. Zero is not off. Masked is off.
# 5. Compute the prefix once and `expand` it; `repeat` makes B copies for nothing.
# 6. Build tensors at the size you were asked for and check them when they are given to you.
# 7. Layers take additive `[B, 1, 1, P+N]` masks; "every layer" should be visible in a trace.
# 8. When comparing with a reference: GELU flavour, LayerNorm eps, the weight layout's transpose,
#    token-type row 0, eval mode, and a finite mask constant in the compute dtype.
#
# ## Try this
#
# - In `positions_under_a_prefix`, load MiniLM (`BertEncoder.from_pretrained(default_model_dir())`)
#   and find the longest N each policy accepts with P=20.
# - In `equivalence_breakers`, find the row scale at which the two LayerNorm eps values start
#   to differ by more than 1e-5.
# - `python -m minigpt_ptv2 trace --method soft --config bert-tiny --B 2 --N 5 --P 3` and
#   `--method deep`: count the `inject` rows (pitfall 7).

# %%
if __name__ == "__main__":
    main()
