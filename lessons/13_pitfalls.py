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
# Each pitfall gets a small counter-example that runs here, on tiny shapes: the wrong version,
# the right version, and a check that tells them apart. The lessons in the table's last column
# show them in context, most at larger sizes.
#
# | # | pitfall | also in |
# |---|---|---|
# | 1 | positions under a prefix, and the max_positions - P limit | lesson 12, section 1 |
# | 2 | pooling a virtual token instead of [CLS] | lesson 06, section 2 |
# | 3 | prefixing the queries | lesson 08, section 2 |
# | 4 | a zero prefix is not "no prefix" | lesson 08, section 3; lesson 11, section 3 |
# | 5 | `repeat` (or an MLP run per row) where `expand` does | lesson 08, section 5 (time) |
# | 6 | a hard-coded `[2, 10]` prompt initialisation | lesson 06, section 3 |
# | 7 | a 2-D mask handed to a layer; "every layer" in the text, the input layer in the code | lesson 07, sections 4 and 5 |
# | 8 | small differences that break equivalence with a reference | lessons 02-03 |
#
# Letters: B batch size, N real tokens, P prompt or prefix length, D hidden size, L layers,
# H attention heads, d = D / H the head size. Most examples use the tiny BERT preset
# (`bert-tiny`: D=24, L=3, H=4, d=6, a vocabulary of 120 and 64 positions).

# %%
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minigpt_ptv2 import BertEncoder, ShapeTrace, preset
from minigpt_ptv2.core.attention import additive_mask
from minigpt_ptv2.core.masks import build_keep
from minigpt_ptv2.prompts import DeepPrompt, KVPrefix, SoftPrompt
from minigpt_ptv2.trace import dims_for, side_by_side



def tiny_encoder(seed: int = 0, **changes) -> BertEncoder:
    torch.manual_seed(seed)
    return BertEncoder(preset("bert-tiny").replace(**changes)).eval()  # D=24, H=4, 64 positions


# %% [markdown]
# ## 1. Positions under a prefix, and the max_positions - P limit
#
# When a K/V prefix is handed to HuggingFace BERT or GPT-2 as "past keys", the model assumes
# those P entries were earlier *tokens*, so the real tokens get positions P..P+N-1. PEFT
# inherits this (tests/test_prompts_vs_peft.py checks our `positions="shifted"` against it). Two
# consequences: the outputs differ from a model where real tokens keep 0..N-1, and the longest
# input shrinks from the position table's length (512 for BERT) to that length minus P; in
# transformers the error past it is a tensor-size mismatch that never mentions the prefix. We make the
# policy a named choice (`positions="real"` by default, `"shifted"` to match PEFT) and refuse
# too-long inputs with a message that says why. Here with the tiny BERT's 64 positions, P=8.

# %%
@torch.no_grad()
def positions_under_a_prefix(P=8):
    model = tiny_encoder()
    limit = model.config.max_position_embeddings  # 64 for the tiny BERT, 512 for BERT / MiniLM
    torch.manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (1, 10))  # [1, N]
    outs = {}
    for policy in ("real", "shifted"):
        torch.manual_seed(2)  # the same prefix table under both policies
        model.attach(KVPrefix(model.config, P, positions=policy))
        outs[policy] = model(ids).last_hidden_state
    gap = float((outs["real"] - outs["shifted"]).abs().max())
    print(f"same prefix, same tokens: 'real' vs 'shifted' positions differ by {gap:.2f} (max |diff|)")
    assert gap > 1e-2
    longest = torch.randint(0, model.config.vocab_size, (1, limit))  # N = max positions
    model.attach(KVPrefix(model.config, P, positions="real"))
    print(f"positions='real',    N={limit}: ok, {model(longest).last_hidden_state.shape[1]} rows")
    model.attach(KVPrefix(model.config, P, positions="shifted"))
    try:
        model(longest)
        raise AssertionError("a shifted prefix must not fit N = max positions")
    except ValueError as e:
        print(f"positions='shifted', N={limit}: ValueError: {e}")
    print(f"positions='shifted', N={limit - P}: ok, {model(longest[:, :limit - P]).last_hidden_state.shape[1]} rows "
          f"(the limit is max_positions - P)")
    return gap


found = positions_under_a_prefix()


# %% [markdown]
# ## 2. Pooling a virtual token instead of [CLS] (seed 001)
#
# Prepend P rows to the input and row 0 of every later hidden state is the first *virtual*
# token; [CLS] has moved to row P. Seed 001 classifies from `last_hidden_state[:, 0]` after
# prepending, so its classifier reads a prompt vector. Nothing fails: the numbers are just the
# wrong ones. Slice the P rows off first (our encoder does, before `last_hidden_state` and the
# pooler). Below, the last layer's output before the slice `[B, P+N, D]`, its row 0 and its row P.

# %%
@torch.no_grad()
def pooling_a_virtual_token(P=3, N=6):
    model = tiny_encoder()
    torch.manual_seed(1)
    ids = torch.randint(1, model.config.vocab_size, (2, N))  # [B, N]
    model.attach(SoftPrompt(model.config, P))
    last = f"layer{model.config.num_hidden_layers - 1}.out"
    with ShapeTrace(keep=(last,)) as tr:
        out = model(ids)
    full = tr.tensors[last]  # [B, P+N, D]: what the layers return, virtual rows included
    cls = out.last_hidden_state[:, 0]  # [B, D]: after the slice, row 0 is the real [CLS]
    gap = float((full[:, 0] - cls).abs().max())
    print(f"un-sliced output {list(full.shape)} = [B, P+N, D]; sliced {list(out.last_hidden_state.shape)}")
    print(f"un-sliced row P == our [CLS]: {torch.equal(full[:, P], cls)}; un-sliced row 0 (a virtual token) "
          f"differs from it by up to {gap:.2f}")
    assert torch.equal(full[:, P], cls) and gap > 0.1
    return gap


found = pooling_a_virtual_token()


# %% [markdown]
# ## 3. Prefixing the queries (seed 001's formula)
#
# Only K and V get a prefix. With P prefix queries as well, attention returns P+N rows, the
# residual `x + attn(x)` no longer adds up, and if the extra rows are dropped to make it fit,
# the N real rows are the K/V-only result: each query row is computed on its own, so the prefix
# queries were pure waste.

# %%
def prefixed_queries(B=2, H=4, N=7, P=5, d=6):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, B, H, N, d)  # the real tokens' Q, K, V
    pq, pk, pv = torch.randn(3, B, H, P, d)  # prefix Q (seed 001's formula), K, V
    K, V = torch.cat([pk, k], 2), torch.cat([pv, v], 2)  # [B, H, P+N, d]
    attend = lambda q_: torch.softmax(q_ @ K.transpose(-1, -2) / d ** 0.5, -1) @ V  # noqa: E731
    with_q = attend(torch.cat([pq, q], 2))  # [B, H, P+N, d]
    kv_only = attend(q)  # [B, H, N, d]
    x = torch.randn(B, N, H * d)  # the residual stream [B, N, D]
    try:
        x + with_q.transpose(1, 2).flatten(2)  # [B, P+N, D] onto [B, N, D]
    except RuntimeError as e:
        print(f"prefixed Q: attention gives {list(with_q.shape)}; the residual fails: {str(e).splitlines()[0]}")
    gap = float((with_q[:, :, P:] - kv_only).abs().max())
    print(f"its last N rows vs K/V-only attention {list(kv_only.shape)}: max |diff| {gap:.1e}")
    assert with_q.shape[2] == P + N and gap <= 1e-6
    return gap


found = prefixed_queries()


# %% [markdown]
# ## 4. A zero prefix is not "no prefix"
#
# Zero keys score 0 against every query, not minus infinity, so a zero prefix still takes
# attention (each zero key gets weight e^0 = 1 before normalising) away from the real keys, and
# the outputs change. "Off" means masked (`virtual_keep = False`).
# Below: the plain model, a zero prefix, and the same prefix masked.

# %%
@torch.no_grad()
def zero_is_not_off(P=5, N=7):
    model = tiny_encoder()
    torch.manual_seed(1)
    ids = torch.randint(1, model.config.vocab_size, (2, N))  # [B, N]
    plain = model(ids).last_hidden_state
    prefix = KVPrefix(model.config, P)
    nn.init.zeros_(prefix.embedding.weight)
    out = model.attach(prefix)(ids, output_attentions=True)
    share = float(out.attentions[0][..., :P].sum(-1).mean())  # layer 0: attention on the P prefix keys
    zero_gap = float((out.last_hidden_state - plain).abs().max())
    prefix.virtual_keep[:] = False
    masked_gap = float((model(ids).last_hidden_state - plain).abs().max())
    model.detach_prompt()
    print(f"zero prefix: layer 0 puts {100 * share:.0f}% of its attention on the {P} zero keys; "
          f"outputs move by {zero_gap:.2f} from the plain model")
    print(f"masked prefix: outputs differ from the plain model by {masked_gap:.1e}")
    assert share > 0.05 and zero_gap > 0.1 and masked_gap < 1e-5
    return share, zero_gap, masked_gap


found = zero_is_not_off()


# %% [markdown]
# ## 5. `repeat`, or an MLP per row, where `expand` does (seed 002, seed 003)
#
# The prefix is the same for every row of the batch. Seed 002 copies its MLP output B times
# with `.repeat(...)` (seed 003 does the same to its soft prompt); the result is right, but it
# is B real copies. `.expand` gives the same values as a view: no copy, a stride of 0 along the
# batch. Worse still is running the MLP once per row (feeding `[B, P]` indices, as code written
# for "one prompt per example" does): B times the work and B copies of the output, for the same
# numbers. All three give the same values and the same gradients (up to float rounding: the B
# rows' contributions are summed at another point, in another order); the costs are memory and
# work, measured below on BERT-base sizes (L=12, D=768, P=20, MLP width 512; the flat K/V table
# is `L*2*D` = 18,432 wide). The work is counted from what the MLP's two `nn.Linear` layers are
# actually fed: 2 * rows * in * out FLOPs per call.

# %%
def count_linear_flops(module: nn.Module, fn):
    """Run fn(); return its result and the FLOPs of every nn.Linear call inside `module`."""
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        rows = inputs[0].numel() // layer.in_features  # every row the layer multiplied
        total += 2 * rows * layer.in_features * layer.out_features
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Linear)]
    try:
        return fn(), total
    finally:
        for h in handles:
            h.remove()


def repeat_vs_expand(B=16, P=20):
    cfg = preset("bert-base")
    torch.manual_seed(0)
    prefix = KVPrefix(cfg, P, projection=True)  # Embedding(P, D) -> Linear(D, 512) -> Tanh -> Linear(512, L*2*D)
    idx = torch.arange(P)
    mlp = lambda i: prefix.transform(prefix.embedding(i))  # noqa: E731
    ways = {"once + expand": lambda: mlp(idx).unsqueeze(0).expand(B, -1, -1),  # [B, P, L*2*D], a view
            "once + repeat": lambda: mlp(idx).unsqueeze(0).repeat(B, 1, 1),  # B copies
            "MLP per row": lambda: mlp(idx.expand(B, P))}  # B times the MLP
    w = torch.randn(B, P, cfg.prefix_width)  # a stand-in for what the layers do with the prefix
    found = {}
    for name, make in ways.items():
        out, flops = count_linear_flops(prefix, make)
        grads = torch.autograd.grad((out * w).sum(), list(prefix.parameters()))
        found[name] = (out.detach(), out.untyped_storage().nbytes(), flops, grads)
    base, _, base_flops, base_grads = found["once + expand"]
    print(f"B={B}: {'':14} {'memory':>9} {'MLP FLOPs':>11}   vs once + expand: values max |diff|, "
          f"gradients max |diff| / max |gradient|")
    for name, (out, nbytes, n_flops, grads) in found.items():
        g = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(grads, base_grads))
        print(f"      {name:14} {nbytes / 2**20:7.1f}MiB {n_flops / 1e9:9.2f}G   "
              f"{float((out - base).abs().max()):.1e}, {g:.1e}")
        assert torch.allclose(out, base, atol=1e-5) and g < 1e-5  # float rounding only
    assert found["once + expand"][0].stride(0) == 0
    assert found["once + repeat"][1] == B * found["once + expand"][1] == found["MLP per row"][1]
    assert found["MLP per row"][2] == B * base_flops == B * found["once + repeat"][2]
    return {name: (nbytes, n_flops) for name, (_, nbytes, n_flops, _) in found.items()}


cost = repeat_vs_expand(B=16)


# %% [markdown]
# ## 6. A hard-coded `[2, 10]` initialisation (seed 003)
#
# Seed 003 initialises its soft prompt from a `2 x 10` random matrix whatever the number of
# tokens and the embedding size. Assigning it to the `nn.Embedding(n_tokens, n_embd)`'s weight
# raises nothing, and the module still reports `num_embeddings = n_tokens`; the error comes
# only when the prompt meets the input embeddings. `SoftPrompt` checks its init up front.

# %%
def two_by_ten_init(n_tokens=20, n_embd=24, B=2, N=5):
    soft_prompt = nn.Embedding(n_tokens, n_embd)  # seed 003's three lines
    init_prompt_value = torch.FloatTensor(2, 10).uniform_(-0.5, 0.5)
    soft_prompt.weight = nn.parameter.Parameter(init_prompt_value)
    print(f"seed 003: num_embeddings={soft_prompt.num_embeddings}, weight {list(soft_prompt.weight.shape)}: "
          f"no error yet")
    inputs_embeds = torch.randn(B, N, n_embd)  # [B, N, D]
    try:
        torch.cat([soft_prompt.weight.repeat(B, 1, 1), inputs_embeds], dim=1)  # its _cat_learned_embedding_to_input
        raise AssertionError("a [2, 10] prompt cannot join [B, N, D] embeddings")
    except RuntimeError as e:
        print(f"  first forward: RuntimeError: {str(e).splitlines()[0]}")
    try:
        SoftPrompt(preset("bert-tiny"), n_tokens, init=init_prompt_value)
        raise AssertionError("SoftPrompt must refuse a [2, 10] init")
    except ValueError as e:
        print(f"SoftPrompt, at construction: {type(e).__name__}: {e}")


two_by_ten_init()


# %% [markdown]
# ## 7. A 2-D mask handed to a layer (seed 000); "every layer" at the input only (seed 001)
#
# A layer adds its mask to the scores `[B, H, P+N, P+N]` (transformers' BERT attention does
# `attn_weights + attention_mask`); the 0/1 padding mask `[B, P+N]` becomes the additive
# `[B, 1, 1, P+N]` form (0 keep, a huge negative number drop) only inside the *model's* forward.
# Hand the 0/1 mask straight to a layer and broadcasting lines `[B, P+N]` up with the *last two*
# axes `[P+N, P+N]`:
#
# - for most B the sizes clash and it crashes (the lucky case);
# - for B = 1 it runs, and the pads are **down-weighted, not removed**: kept keys get +1, pad
#   keys +0, and softmax only sees the difference, so each pad key's weight relative to each
#   kept key shrinks by a factor e = 2.718. The pads keep some of the attention;
# - for B = P+N it runs too, and row i of the mask lands on *query* i of every example.
#
# The keep-mask `[B, 1, 1, P+N]` gives the pads exactly 0.

# %%
def two_d_mask(P=4, N=6, H=2, pads=2, batches=None) -> dict:
    """Add seed 000's 0/1 mask [B, P+N] to scores [B, H, P+N, P+N] for each B; returns B -> what happened."""
    torch.manual_seed(0)
    found = {}
    for B in batches or (16, 1, P + N):
        scores = torch.randn(B, H, P + N, P + N)  # [B, H, P+N, P+N]
        padding = torch.ones(B, N)
        padding[0, -pads:] = 0  # example 0 ends with two pad tokens
        mask_2d = torch.cat([torch.ones(B, P), padding], dim=1)  # [B, P+N], 1 = keep (seed 000's extended mask)
        try:
            wrong = (scores + mask_2d).softmax(-1)  # what a layer does with it
        except RuntimeError as e:
            found[B] = "crashes"
            if batches is None:
                print(f"B={B:>2}: adding a [B, P+N] 0/1 mask to [B, H, P+N, P+N] scores fails: "
                      f"{str(e).splitlines()[0]}")
            continue
        none = scores.softmax(-1)
        keep = build_keep(mask_2d.bool(), P + N)  # [B, 1, 1, P+N]
        right = scores.masked_fill(~keep, torch.finfo(scores.dtype).min).softmax(-1)
        if B == 1:
            share = lambda p: float(p[..., -pads:].sum(-1).mean())  # noqa: E731
            odds = lambda p: p[..., -pads:] / p[..., :1]  # noqa: E731  each pad key's weight / key 0's
            factor = float((odds(none) / odds(wrong)).mean())
            found[B] = f"runs: the pads get {share(wrong):.3f} of the attention instead of {share(none):.3f}"
            print(f"B= 1: it runs. Attention on the {pads} pad keys: no mask {share(none):.3f}, 2-D 0/1 mask "
                  f"{share(wrong):.3f}, keep-mask {share(right):.3f}; pad weight / kept weight shrank by "
                  f"{factor:.3f} (e = {torch.e:.3f})")
            assert share(none) > share(wrong) > 0.01 and share(right) == 0
            assert torch.allclose(odds(none) / odds(wrong), torch.full_like(odds(none), torch.e))
        else:
            moved = float((wrong[1] - none[1]).abs().max())  # example 1 has no padding at all
            untouched = float((wrong[0, :, 1:] - none[0, :, 1:]).abs().max())  # example 0, queries 1..
            found[B] = "runs: query i of every example gets example i's mask"
            print(f"B={B:>2} (= P+N): it runs. Example 1 (no pads) moves by {moved:.3f}: its query 0 got example "
                  f"0's mask; example 0's queries 1.. are not masked at all (moved by {untouched:.1e})")
            assert B == P + N and moved > 1e-2 and untouched < 1e-6
    return found


def every_layer_or_only_the_input(P=3, N=5):
    cfg = preset("bert-tiny")
    ids = torch.randint(1, cfg.vocab_size, (1, N))  # [1, N]
    counts = {}
    for name, method in (("shallow (seed 001)", SoftPrompt), ("deep (P-Tuning v2)", DeepPrompt)):
        torch.manual_seed(0)
        with torch.no_grad(), ShapeTrace() as tr:
            BertEncoder(cfg, prompt=method(cfg, P)).eval()(ids)
        counts[name] = (tr.names().count("shallow.prompt"), sum(n.endswith(".inject") for n in tr.names()))
        print(f"{name:<19}: the prompt joins the input {counts[name][0]}x, the layers {counts[name][1]}x "
              f"(L={cfg.num_hidden_layers})")
    assert list(counts.values()) == [(1, 0), (0, cfg.num_hidden_layers)]


two_d_mask()
every_layer_or_only_the_input()


# %% [markdown]
# ## 8. Small differences that break equivalence with a reference
#
# When your model and a reference (transformers, PEFT) disagree in the third decimal, it is
# usually one of these. Some are small (GELU, eps at unit scale), some large (a forgotten
# transpose), and every one of them fails a comparison at 1e-5. Each runs below.
#
# - **GELU**: BERT uses the exact erf form, GPT-2 the tanh approximation.
# - **LayerNorm eps**: 1e-12 in BERT, 1e-5 in GPT-2; about 1e-5 apart at unit scale, far more
#   when a row's variance is small.
# - **Weight layout**: GPT-2's Conv1D (and this package's `Linear`) stores weights `[in, out]`,
#   `nn.Linear` (and so BERT's checkpoints) `[out, in]`. Square matrices (D x D) load without
#   any shape error when the transpose is forgotten.
# - **Token-type row 0**: BERT adds `token_type_embeddings[0]` to every token, even when you
#   pass no token types; hand-built input embeddings (or prompt rows) must add it too.
# - **Dropout**: in `train()` mode every forward differs; compare in `eval()`.
# - **The mask constant**: -inf turns a fully masked row into NaN; the dtype's most negative
#   finite number gives a harmless uniform row. And fp32's minimum overflows to -inf in fp16,
#   so the constant must come from the compute dtype.

# %%
def equivalence_breakers():
    torch.manual_seed(0)
    x = torch.linspace(-6, 6, 1001)
    gelu_gap = float((F.gelu(x) - F.gelu(x, approximate="tanh")).abs().max())
    print(f"GELU erf vs tanh on [-6, 6]: max |diff| {gelu_gap:.1e}")
    assert 1e-5 < gelu_gap < 1e-2

    eps_gaps = []
    for scale in (1.0, 1e-3):
        h = torch.randn(4, 24) * scale  # rows with variance scale**2
        eps_gaps.append(float((F.layer_norm(h, (24,), eps=1e-12) - F.layer_norm(h, (24,), eps=1e-5)).abs().max()))
        print(f"LayerNorm eps 1e-12 vs 1e-5, rows with std {scale:g}: max |diff| {eps_gaps[-1]:.1e}")
    assert 1e-5 < eps_gaps[0] < 1e-4 and eps_gaps[1] > 0.1

    D = 24
    w = torch.randn(D, D)  # a BERT (nn.Linear) weight, [out, in]
    b, v = torch.randn(D), torch.randn(3, D)
    bert = F.linear(v, w, b)  # what BERT computes: v w^T + b
    forgot = v @ w + b  # loaded into our Linear (W [in, out], v W + b) as is: no error
    print(f"nn.Linear [out, in] loaded without transpose: max |diff| {(bert - forgot).abs().max():.2f}; "
          f"with w.T: {(bert - (v @ w.T + b)).abs().max():.1e}")
    assert not torch.allclose(bert, forgot, atol=1e-3) and torch.allclose(bert, v @ w.T + b, atol=1e-5)

    model = tiny_encoder()
    ids = torch.randint(1, model.config.vocab_size, (1, 5))  # [1, N]
    e = model.embeddings
    with torch.no_grad():
        ours = e(ids, torch.zeros_like(ids), torch.arange(5)[None])  # word + type 0 + position, LayerNorm
        by_hand = e.LayerNorm(e.word_embeddings(ids) + e.position_embeddings(torch.arange(5)[None]))
    type_gap = float((ours - by_hand).abs().max())
    print(f"embeddings built by hand without token-type row 0: max |diff| {type_gap:.2f}")
    assert type_gap > 1e-2

    with torch.no_grad():
        model.train()
        train_gap = float((model(ids).last_hidden_state - model(ids).last_hidden_state).abs().max())
        model.eval()
        eval_gap = float((model(ids).last_hidden_state - model(ids).last_hidden_state).abs().max())
    print(f"two forwards of the same input: train() mode differ by {train_gap:.2f}, eval() by {eval_gap:.1e}")
    assert train_gap > 1e-2 and eval_gap == 0

    scores = torch.randn(4)  # one query's scores over 4 keys, all of them masked (a fully padded row)
    with_inf = torch.softmax(scores + torch.full((4,), float("-inf")), -1)
    with_min = torch.softmax(scores + torch.full((4,), torch.finfo(torch.float32).min), -1)
    print(f"a fully masked row: -inf gives {with_inf.tolist()}; finfo.min gives {with_min.tolist()}")
    assert torch.isnan(with_inf).all() and torch.isfinite(with_min).all()
    nothing_kept = torch.zeros(1, 4, dtype=torch.bool)
    half = torch.tensor(torch.finfo(torch.float32).min).to(torch.float16)
    in_dtype = additive_mask(nothing_kept, torch.float16)[0, 0]
    print(f"fp32's min cast to fp16: {half.item()}; additive_mask builds the mask in the compute dtype: "
          f"{in_dtype.item()}")
    assert torch.isinf(half) and torch.isfinite(in_dtype)
    return {"gelu": gelu_gap, "eps": eps_gaps, "token_type": type_gap}


found = equivalence_breakers()


# %% [markdown]
# ## 9. The shapes, recorded: zero prefix vs masked prefix
#
# The trace shows pitfall 4 from the inside. Tiny BERT (D=24, H=4, d=6, L=3, vocabulary 120,
# feed-forward width 40), layer 0 shown, B=8, N=7, P=5 (every letter a different size), no
# padding. With a zero prefix nothing is masked, so no keep-mask is built at all (the fused
# attention runs without one). Masking the prefix adds one row, `mask.keep [B, 1, 1, P+N]`, and
# that row is the whole difference between "off" and "zero".

# %%
def trace_example(B=8, N=7, P=5, layers=3):
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
# 5. Compute the prefix once and `expand` it: `repeat` makes B copies, an MLP per row does B
#    times the work as well, and neither changes a value or a gradient.
# 6. Build tensors at the size you were asked for and check them when they are given to you.
# 7. Layers take additive (or boolean keep) 4-D masks; a 2-D 0/1 mask crashes, or at B = 1 only
#    down-weights the pads by e. "Every layer" should be visible in a trace.
# 8. When comparing with a reference: GELU flavour, LayerNorm eps, the weight layout's transpose,
#    token-type row 0, eval mode, and a finite mask constant in the compute dtype.
#
# ## Check your understanding
#
# 1. A BERT layer gets scores `[B, H, P+N, P+N]` with P=4, N=6, and seed 000's 0/1 mask
#    `[B, P+N]`. For which batch sizes does `scores + mask` run, and what does it do then?
#
#    <details><summary>Answer</summary>
#
#    Broadcasting aligns `[B, 10]` with the last two axes `[10, 10]`, so it runs only for B = 1
#    and B = P+N = 10. At B = 1 every kept key gets +1 and every pad +0: the pads are
#    down-weighted by e relative to each kept key, not removed. At B = 10, row i of the mask
#    lands on query i of every example: the wrong example's padding, on one query each.
#
#    </details>
#
# 2. At B = 1, a query gives its two pad keys 21.8% of its attention with no mask. Roughly how
#    much do they get under the 2-D 0/1 mask, and under the keep-mask?
#
#    <details><summary>Answer</summary>
#
#    The pads' weights are divided by e while the kept keys' are not, then everything is
#    normalised: 0.218 / (0.218 + e * 0.782) = 0.093, about 9% (section 7 measures 9.8%, an
#    average over queries with different shares). Under the keep-mask: exactly 0.
#
#    </details>
#
# 3. A prefix MLP at BERT-base sizes costs 0.39 GFLOP for P=20. What does it cost at B=32 with
#    `expand`, with `repeat`, and run per row? Which of the three has different gradients?
#
#    <details><summary>Answer</summary>
#
#    0.39, 0.39 and 12.6 GFLOP: `expand` and `repeat` run the MLP once, per row runs it 32 times.
#    None: all three compute the same function of the same parameters, so the gradients agree
#    (up to float rounding in the order of the sums). `repeat` and per row cost 32 copies of
#    the output in memory.
#
#    </details>
#
# 4. Why is a forgotten transpose easy to miss for W_Q in BERT-base but not for the
#    feed-forward weights?
#
#    <details><summary>Answer</summary>
#
#    W_Q is 768 x 768: `[out, in]` and `[in, out]` have the same shape, so it loads and runs, and
#    only the numbers are wrong. The feed-forward weights are 768 x 3072: loading them without
#    the transpose is a shape error.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/13_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. Do section 1 on the shipped MiniLM (`BertEncoder.from_pretrained(default_model_dir())`, with
#    `from minigpt_ptv2.pretrained import default_model_dir`) and P=20: what is the longest N each
#    policy accepts? [`try_1`]
# 2. In `equivalence_breakers`, find the row scale at which the two LayerNorm eps values start
#    to differ by more than 1e-5. [`try_2`]
# 3. `python -m minigpt_ptv2 trace --method soft --config bert-tiny --B 2 --N 5 --P 3` and
#    `--method deep`: count the `inject` rows (pitfall 7). [`try_3`]
# 4. Run `two_d_mask` with P=4, N=6 for every B from 1 to 12: which ones run? [`try_4`]
