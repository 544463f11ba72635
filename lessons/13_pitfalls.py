# %% [markdown]
# # Lesson 13 — Pitfalls found in popular tutorials
#
# Prompt tuning is a few lines of code, and most of the mistakes people make are in those few
# lines. Each section below takes one mistake, seen in widely read write-ups (the tutorials
# this project started from, "seeds" 000 to 004, and in library conventions), and turns it
# into a small counter-example you can run: the wrong version, the right version, and a check
# that tells them apart. Most were met in earlier lessons; here they are together, as a list
# to come back to when your own numbers do not match someone else's.
#
# 1. positions under a prefix, and the 512 - P limit
# 2. pooling a virtual token instead of [CLS]
# 3. prefixing the queries
# 4. a zero prefix is not "no prefix"
# 5. `repeat` where `expand` does
# 6. a hard-coded `[2, 10]` prompt initialisation
# 7. a 2-D mask handed to a layer; "every layer" in the text, the input layer in the code
# 8. small differences that break equivalence with a reference implementation

# %%
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from minigpt_ptv2 import Encoder, MultiHeadAttention, ShapeTrace, preset
from minigpt_ptv2.attention import additive_mask
from minigpt_ptv2.prompts import DeepPrompt, KVPrefix, SoftPrompt
from minigpt_ptv2.trace import dims_for

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")


def tiny_encoder(seed: int = 0, **changes) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(preset("bert-tiny").replace(**changes)).eval()  # D=24, H=4, 64 positions


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
# Seed 001 prepends its prefix vectors to the input embeddings and then classifies from
# `last_hidden_state[:, 0]`. After prepending, row 0 is the first *virtual* token; [CLS] has
# moved to row P. Nothing fails, the classifier just reads the wrong vector. Slice the P
# virtual rows off first (our encoder does), and row 0 is [CLS] again.

# %%
def pooling_a_virtual_token(P=4):
    model = tiny_encoder()
    model.attach(SoftPrompt(model.config, P))
    ids = torch.randint(1, model.config.vocab_size, (2, 7))
    last = f"layer{model.config.num_hidden_layers - 1}.out"
    with ShapeTrace(keep=(last,)) as tr:
        out = model(ids)
    full = tr.tensors[last]  # [B, P+N, D]: what seed 001 indexes
    assert torch.equal(out.last_hidden_state[:, 0], full[:, P])  # ours: the real [CLS]
    assert torch.allclose(out.pooler_output, torch.tanh(model.pooler(full[:, P])), atol=1e-6)
    wrong = (full[:, 0] - full[:, P]).abs().max()
    print(f"un-sliced output {list(full.shape)}: row 0 is virtual token p0, [CLS] is row P={P}; "
          f"reading row 0 instead changes the pooled vector by up to {wrong:.2f}")
    assert wrong > 1e-2


# %% [markdown]
# ## 3. Prefixing the queries (seed 001's formula)
#
# Seed 001 writes the attention as softmax([X W_Q; P_Q][X W_K; P_K]^T) [X W_V; P_V]: the
# prefix joins Q as well as K and V. Seed 002 gets it right: only K and V. With P extra
# queries the layer returns P+N rows and the residual connection `x + attn(x)` no longer
# adds up; drop the extra rows to make it fit and the N real rows are *exactly* what
# unprefixed queries give. Prefix queries cost work and change nothing the real tokens see.

# %%
def prefixing_q(B=2, N=6, P=3, D=24, H=4):
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, H).eval()
    x = torch.randn(B, N, D)  # [B, N, D]
    pk, pv, pq = (torch.randn(B, H, P, D // H) for _ in range(3))  # [B, H, P, d] each
    right, _, _ = attn(x, prefix=(pk, pv))  # [B, N, D]
    q = torch.cat([pq, attn.split_heads(attn.query(x))], dim=2)  # [B, H, P+N, d]: the mistake
    k = torch.cat([pk, attn.split_heads(attn.key(x))], dim=2)  # [B, H, P+N, d]
    v = torch.cat([pv, attn.split_heads(attn.value(x))], dim=2)  # [B, H, P+N, d]
    ctx = torch.softmax(q @ k.transpose(-2, -1) / (D // H) ** 0.5, dim=-1) @ v  # [B, H, P+N, d]
    wrong = attn.output(ctx.transpose(1, 2).reshape(B, P + N, D))  # [B, P+N, D]
    try:
        x + wrong
    except RuntimeError as e:
        print(f"Q prefixed: attention returns {list(wrong.shape)}, the residual x is {list(x.shape)}: "
              f"{str(e).splitlines()[0]}")
    gap = (wrong[:, P:] - right).abs().max()
    print(f"drop the P extra rows: the N real rows equal the K/V-only result (max |diff| {gap:.1e})")
    assert gap < 1e-5


# %% [markdown]
# ## 4. A zero prefix is not "no prefix"
#
# Zero keys give scores of exactly 0 against every query, and exp(0) = 1 is a lot of weight:
# a zero prefix takes attention and hands back zero values, shrinking every real update.
# "Off" means masked (`virtual_keep = False`), which gives the plain model's numbers.

# %%
def zero_is_not_off(P=4):
    model = tiny_encoder()
    ids = torch.randint(1, model.config.vocab_size, (2, 7))
    plain = model(ids).last_hidden_state
    zero = KVPrefix(model.config, P)
    nn.init.zeros_(zero.embedding.weight)
    model.attach(zero)
    zeroed = model(ids).last_hidden_state
    zero.virtual_keep[:] = False
    masked = model(ids).last_hidden_state
    model.detach_prompt()
    print(f"zero prefix vs no prefix: max |diff| {(zeroed - plain).abs().max():.3f}; "
          f"masked prefix vs no prefix: {(masked - plain).abs().max():.1e}")
    assert not torch.allclose(zeroed, plain, atol=1e-3) and torch.allclose(masked, plain, atol=1e-6)


# %% [markdown]
# ## 5. `repeat` where `expand` does (seed 002, seed 003)
#
# The prefix is the same for every row of the batch. Seed 002 copies its MLP output B times
# with `.repeat(...)` (seed 003 does the same to its soft prompt); the result is right, but it
# is B real copies. `.expand` gives the same values as a view: no copy, a stride of 0 along the
# batch, and the same gradient. (Worse still is running the MLP once per row: B times the
# work, and results that can drift in the last bits; lesson 08 measures both.)

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
# Seed 003 initialises its soft prompt from `torch.FloatTensor(2, 10)` whatever `n_tokens`
# and the embedding size are, and assigns it as the weight of an `nn.Embedding(n_tokens, D)`.
# The module keeps claiming `n_tokens` rows while holding a 2 x 10 matrix, and nothing fails
# until the prompt meets the input embeddings. `SoftPrompt` builds `[P, D]` and checks any
# given init against it.

# %%
def hard_coded_init(n_tokens=20, D=768, B=2, N=5):
    emb = nn.Embedding(n_tokens, D)
    emb.weight = nn.Parameter(torch.empty(2, 10).uniform_(-0.5, 0.5))  # the mistake
    print(f"nn.Embedding({n_tokens}, {D}).num_embeddings = {emb.num_embeddings}, "
          f"but its weight is {list(emb.weight.shape)}")
    try:
        torch.cat([emb.weight.expand(B, -1, -1), torch.zeros(B, N, D)], dim=1)
    except RuntimeError as e:
        print(f"  fails only later, at the concatenation: {str(e).splitlines()[0]}")
    try:
        SoftPrompt(preset("gpt2"), n_tokens, init=torch.empty(2, 10))
    except ValueError as e:
        print(f"  SoftPrompt refuses up front: {e}")


# %% [markdown]
# ## 7. A 2-D mask handed to a layer (seed 000); "every layer" at the input only (seed 001)
#
# Seed 000 builds a `[B, P+N]` mask of ones and zeros and passes it straight to each BERT
# layer, remarking that the library will expand it. The model does that expansion once, at
# its top; a layer called directly adds whatever it is given to the scores `[B, H, Q, K]`.
# A `[B, P+N]` tensor lines up with the *last two* axes: a shape error for most B, and for
# B = 1 it broadcasts quietly, adding +1 to kept keys and 0 to pads, so padding is not masked
# at all. A layer needs the additive `[B, 1, 1, P+N]` form: 0 where kept, a huge negative
# number where not.
#
# Seed 001 says the prefix goes into every layer, but its code concatenates it to the input
# embeddings once: that is shallow prompt tuning. The trace tells the two apart at a glance.

# %%
def two_d_mask(P=2, N=4, H=2):
    torch.manual_seed(0)
    keep = torch.tensor([[True] * (P + N - 1) + [False]])  # [1, P+N]: the last key is padding
    scores = torch.randn(1, H, P + N, P + N)  # [B, H, Q, K], B = 1
    wrong = torch.softmax(scores + keep.float(), dim=-1)  # 0/1 mask added as is: broadcasts
    right = torch.softmax(scores + additive_mask(keep[:, None, None, :], scores.dtype), dim=-1)
    print(f"B=1, 0/1 mask added to the scores: the pad key still gets up to {wrong[..., -1].max():.2f} "
          f"of the attention; additive [B, 1, 1, P+N] mask: {right[..., -1].max():.1f}")
    try:
        torch.randn(3, H, P + N, P + N) + keep.expand(3, -1).float()  # B = 3
    except RuntimeError as e:
        print(f"B=3: {str(e).splitlines()[0]}")


def every_layer_or_input_only(P=3):
    model = tiny_encoder()
    ids = torch.randint(1, model.config.vocab_size, (1, 5))
    for method in (SoftPrompt(model.config, P), DeepPrompt(model.config, P)):
        model.attach(method)
        with ShapeTrace() as tr:
            model(ids)
        injected = [n.split(".")[0] for n in tr.names() if n.endswith(".inject")]
        where = "the input embeddings only" if "shallow.prompt" in tr.names() else f"{injected}"
        print(f"{type(method).__name__:<10} enters at {where}")
    model.detach_prompt()


# %% [markdown]
# ## 8. Small differences that break equivalence with a reference
#
# When your model and a reference (transformers, PEFT) disagree in the third decimal, it is
# usually one of these. Each is tiny on its own and each breaks a 1e-5 comparison.
#
# - **GELU**: BERT uses the exact erf form, GPT-2 the tanh approximation.
# - **LayerNorm eps**: 1e-12 in BERT, 1e-5 in GPT-2; it matters when a row's variance is small.
# - **GPT-2's Conv1D** stores weights `[in, out]`, `nn.Linear` stores `[out, in]`. Square
#   matrices (D x D) load without any shape error when the transpose is forgotten.
# - **Token-type row 0**: BERT adds `token_type_embeddings[0]` to every token, even when you
#   pass no token types; hand-built input embeddings (or prompt rows) must add it too.
# - **Dropout**: in `train()` mode every forward differs; compare in `eval()`.
# - **The mask constant**: -inf turns a fully masked row into NaN; the dtype's most negative
#   finite number gives a harmless uniform row. And fp32's minimum overflows to -inf in fp16.

# %%
def equivalence_breakers():
    x = torch.linspace(-6, 6, 2001)
    gelu_gap = (F.gelu(x) - F.gelu(x, approximate="tanh")).abs().max()
    print(f"GELU erf vs tanh: max |diff| {gelu_gap:.1e} on [-6, 6]")
    assert gelu_gap > 1e-5

    torch.manual_seed(0)
    for scale in (1.0, 1e-3):
        h = torch.randn(4, 24) * scale  # rows with variance scale**2
        eps_gap = (F.layer_norm(h, (24,), eps=1e-12) - F.layer_norm(h, (24,), eps=1e-5)).abs().max()
        print(f"LayerNorm eps 1e-12 vs 1e-5, rows with std {scale:g}: max |diff| {eps_gap:.1e}")

    D = 24
    w = torch.randn(D, D)  # a Conv1D weight, [in, out]
    b, v = torch.randn(D), torch.randn(3, D)
    conv1d = v @ w + b  # what GPT-2 computes
    forgot = F.linear(v, w, b)  # loaded into nn.Linear as is: x @ w.T + b, no error
    print(f"Conv1D [in, out] loaded without transpose: max |diff| {(conv1d - forgot).abs().max():.2f}; "
          f"with w.T: {(conv1d - F.linear(v, w.T, b)).abs().max():.1e}")

    model = tiny_encoder()
    ids = torch.randint(1, model.config.vocab_size, (1, 5))
    emb = model.embeddings
    pos = emb.position_embeddings(torch.arange(5))[None]  # [1, N, D]
    with_tt = emb.LayerNorm(emb.word_embeddings(ids) + emb.token_type_embeddings.weight[0] + pos)
    without = emb.LayerNorm(emb.word_embeddings(ids) + pos)
    with ShapeTrace(keep=("embeddings.out",)) as tr:
        model(ids)
    assert torch.allclose(tr.tensors["embeddings.out"], with_tt, atol=1e-6)
    print(f"token-type row 0 forgotten: embeddings move by {(with_tt - without).abs().max():.2f}")

    model.train()
    a, b2 = model(ids).last_hidden_state, model(ids).last_hidden_state
    model.eval()
    c, d = model(ids).last_hidden_state, model(ids).last_hidden_state
    print(f"dropout: two forwards in train() differ by {(a - b2).abs().max():.2f}, in eval() by "
          f"{(c - d).abs().max():.1f}")
    assert torch.equal(c, d)

    scores = torch.randn(1, 4)
    nothing_kept = torch.zeros(1, 4, dtype=torch.bool)  # e.g. a fully padded row
    with_inf = torch.softmax(scores.masked_fill(~nothing_kept, float("-inf")), -1)
    with_min = torch.softmax(scores + additive_mask(nothing_kept, torch.float32), -1)
    print(f"fully masked row: -inf gives {with_inf.tolist()[0]}, finfo.min gives {with_min.tolist()[0]}")
    half = torch.tensor(torch.finfo(torch.float32).min).to(torch.float16)
    print(f"fp32's min cast to fp16: {half.item()}; additive_mask builds the mask in the compute dtype: "
          f"{additive_mask(nothing_kept, torch.float16)[0, 0].item()}")
    assert torch.isnan(with_inf).all() and torch.isfinite(with_min).all()


# %% [markdown]
# ## 9. The shapes, recorded: zero prefix vs masked prefix
#
# The trace shows pitfall 4 from the inside. Tiny BERT (D=24, H=4, d=6, L=3), layer 0 shown,
# B=2, N=7, P=5, no padding. With a zero prefix nothing is masked, so no keep-mask is built at all (the fused
# attention runs without one). Masking the prefix adds one row, `mask.keep [B, 1, 1, P+N]`,
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
        pooling_a_virtual_token()
        print()
        prefixing_q()
        print()
        zero_is_not_off()
        print()
    repeat_vs_expand(B=4 if QUICK else 32)
    print()
    hard_coded_init()
    print()
    with torch.no_grad():
        two_d_mask()
        every_layer_or_input_only()
        print()
        equivalence_breakers()
    print()
    zero, masked = trace_example()
    print("zero prefix:")
    print(zero.table())
    print("\nmasked prefix:")
    print(masked.table())


# %% [markdown]
# ## What to remember
#
# - Decide where real tokens sit under a prefix (0..N-1, or P..P+N-1 like PEFT) and say so;
#   the shifted convention costs P positions of length.
# - After a shallow prompt, slice the virtual rows off before pooling: row 0 must be [CLS].
# - Only K and V get a prefix. A prefixed Q is wasted work at best, a shape error at worst.
# - Zero is not off. Masked is off.
# - Compute the prefix once and `expand` it; `repeat` makes B copies for nothing.
# - Build tensors at the size you were asked for and check them when they are given to you.
# - Layers take additive `[B, 1, 1, P+N]` masks; "every layer" should be visible in a trace.
# - When comparing with a reference: GELU flavour, LayerNorm eps, Conv1D's transpose,
#   token-type row 0, eval mode, and a finite mask constant in the compute dtype.
#
# ## Try this
#
# - In `positions_under_a_prefix`, load MiniLM (`Encoder.from_pretrained(default_model_dir())`)
#   and find the longest N each policy accepts with P=20.
# - Make `two_d_mask` use B = P+N: it no longer raises. What does it compute?
# - `python -m minigpt_ptv2 trace --method soft --config bert-tiny --B 2 --N 5 --P 3` and
#   `--method deep`: count the `inject` rows.

# %%
if __name__ == "__main__":
    main()
