# %% [markdown]
# # Lesson 09 — Side by side: the bridge between the two deep styles
#
# Lessons 07 and 08 prompted every layer in two different ways:
#
# - **hidden-state prompts** (seed 000): inject `h [P, D]` as extra rows, process, slice;
# - **K/V prefixes** (P-Tuning v2, prefix tuning): extra keys and values `[H, P, d]` per layer.
#
# The letters: **B** sentences in a batch, **N** real tokens each, **P** prompt rows, **D** the
# hidden size, **L** layers, **H** attention heads of size **d** = D/H, **D_ff** the feed-forward
# width, **V** the vocabulary. BERT and GPT-2 give every query head its own key/value head
# (H_kv = H, lesson 15 is where they differ).
#
# They are not rivals; one is a special case of the other. At layer i, the real tokens never
# see the prompt rows' *outputs* (they are sliced away); they only read the prompt rows' keys
# and values through attention. For a post-LN BERT layer those are
#
#     K = h W_K + b_K,      V = h W_V + b_V
#
# (a pre-LN GPT-2 layer applies its first LayerNorm to h first). So a hidden-state prompt
# *is* a K/V prefix, with K and V tied together through one h. The converse fails: a free K/V
# prefix has twice the numbers and most choices of it come from no h at all.
#
# ![The bridge: K = f(h) W_K, V = f(h) W_V, tied through one h](../../figures/bridge.png)

# %%
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from minigpt_ptv2 import GPT2Decoder, BertEncoder, ShapeTrace, preset
from minigpt_ptv2.prompts import DeepPrompt, hidden_to_kv
from minigpt_ptv2.trace import dims_for, side_by_side

from _course import interleaved_times  # a stopwatch: plumbing


# %% [markdown]
# ## 1. The two traces, side by side
#
# Same model, same batch, same P: the tiny BERT (D=24, L=3, H=4, d=6, D_ff=40, V=120), B=2,
# N=7, P=5, layer 0 shown. Rows present in only one of the two styles are the difference
# between them: `inject`/`slice` and P+N queries on the left, `prefix_k`/`prefix_v` and N
# queries on the right. Both end at the same `[B, N, D]`.

# %%
def trace_example(B=2, N=7, P=5, layers=3):
    """(deep trace, trace of the equivalent K/V prefix) on the tiny BERT with `layers` layers,
    layer 0 recorded."""
    torch.manual_seed(0)
    cfg = preset("bert-tiny").replace(num_hidden_layers=layers)
    model = BertEncoder(cfg).eval()
    deep = DeepPrompt(cfg, P).eval()
    prefix = hidden_to_kv(model, deep)
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    traces = []
    with torch.no_grad():
        for method in (deep, prefix):
            model.attach(method)
            with ShapeTrace(dims=dims_for(cfg, B=B, N=N, P=P), layers=(0,)) as tr:
                model(ids)
            traces.append(tr)
    model.detach_prompt()
    return traces[0], traces[1]


deep_trace, prefix_trace = trace_example()
print(side_by_side(deep_trace, prefix_trace, ("hidden-state prompt", "K/V prefix")))


# %% [markdown]
# ## 2. The bridge, checked
#
# `hidden_to_kv(model, deep)` computes, for every layer, `K = f(h) W_K + b_K` and
# `V = f(h) W_V + b_V` and stores them in a `KVPrefix`. The real tokens' outputs must agree
# to float rounding (we ask for 1e-5), on the encoder (f = identity) and on the decoder
# (f = the block's ln_1). The models have MiniLM's shape (D=384, L=6, H=12) and GPT-2-tiny's,
# with random weights: the bridge is algebra, it holds for any weights. Two things could break
# it and do not here: dropout (eval mode: off), and positions (a hidden-state prompt is
# injected *after* the embeddings, so it never gets a position).

# %%
def bridge_check(model, ids, P: int, atol: float = 1e-5) -> float:
    torch.manual_seed(1)
    deep = DeepPrompt(model.config, P, init_std=0.5).eval()  # large, so the prompt matters
    with torch.no_grad():
        plain = _out(model, ids)
        a = _out(model.attach(deep), ids)
        b = _out(model.attach(hidden_to_kv(model, deep)), ids)
    model.detach_prompt()
    gap, effect = (a - b).abs().max().item(), (a - plain).abs().max().item()
    kind = type(model).__name__
    print(f"{kind:<11} deep prompt vs its K/V prefix: max |diff| = {gap:.1e}   "
          f"(the prompt itself moves the outputs by up to {effect:.2f})")
    assert gap < atol, f"the bridge does not hold on the {kind}: {gap}"
    assert effect > 100 * atol, "the prompt must matter, or agreeing proves nothing"
    return gap


def _out(model, ids):
    out = model(ids)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


torch.manual_seed(0)
enc = BertEncoder(preset("minilm")).eval()
dec = GPT2Decoder(preset("gpt2-tiny")).eval()
B, N, P = 8, 64, 20
bridge_check(enc, torch.randint(0, enc.config.vocab_size, (B, N)), P)  # ids [B, N] < V
gap = bridge_check(dec, torch.randint(0, dec.config.vocab_size, (B, N)), P)


# %% [markdown]
# ## 3. Why K/V is strictly more expressive
#
# Per prompt row, a hidden-state prompt chooses D numbers (h); the K/V pair it produces has
# 2D numbers, but they lie on a D-dimensional (affine) subspace: whatever h is, (K, V) is
# `(h W_K + b_K, h W_V + b_V)`. A free K/V prefix can sit anywhere in 2D dimensions.
#
# Test it with least squares: for a given prefix (K, V) at layer 0, find the h that comes
# closest, and measure what is left. For the prefix built by the bridge the residual is ~0 (it
# came from an h). A random direction in 2D dimensions keeps on average half its squared
# length outside a D-dimensional subspace, so for a random prefix about 1/sqrt(2) = 0.71 of
# its length cannot be reached by any h.

# %%
def kv_rows(kv: torch.Tensor) -> torch.Tensor:
    """One layer's prefix kv [2, H, P, d] as P rows [K of every head | V of every head]: [P, 2D],
    the same column order as [W_K | W_V] (heads side by side, (h d))."""
    k, v = kv[0].transpose(0, 1).flatten(1), kv[1].transpose(0, 1).flatten(1)  # [P, D] each
    return torch.cat([k, v], dim=1)  # [P, 2D]


def unreachable_fraction(attn, kv: torch.Tensor) -> float:
    """How much of a layer's prefix kv [2, H, P, d] no hidden row h can produce through this
    attention module (post-LN BERT: K = h W_K + b_K, V = h W_V + b_V): |residual| / |kv - b|."""
    D = attn.qkv.weight.shape[0]
    W = attn.qkv.weight[:, D:]  # [D, 2D]: [W_K | W_V], h -> (K, V)
    bias = attn.qkv.bias[D:]  # [2D]
    target = kv_rows(kv) - bias  # [P, 2D]
    h = torch.linalg.lstsq(W.T, target.T).solution.T  # [P, D]: the best h for each row
    return ((h @ W - target).norm() / target.norm()).item()


def expressiveness(model: BertEncoder, P: int = 8):
    attn, D = model.layers[0].attn, model.config.hidden_size
    torch.manual_seed(2)
    deep = DeepPrompt(model.config, P, init_std=0.5)
    with torch.no_grad():
        bridged = hidden_to_kv(model, deep).layer_kv()[0]  # [2, H, P, d]: layer 0
        free = torch.randn_like(bridged) * bridged.std()  # [2, H, P, d]: any K/V prefix
        a, b = unreachable_fraction(attn, bridged), unreachable_fraction(attn, free)
    print(f"fraction of (K, V) no h can produce: bridged prefix {a:.1e}, random prefix {b:.3f} "
          f"(1/sqrt(2) = {2 ** -0.5:.3f})")
    print(f"trainable numbers per layer: hidden-state {P * D:,} (P*D), K/V {2 * P * D:,} (P*2D)")
    assert a < 1e-3 and abs(b - 2 ** -0.5) < 0.05
    return a, b


found = expressiveness(enc)


# %% [markdown]
# ## 4. What each style costs
#
# Hidden-state prompts push P+N rows through every layer (Q/K/V and output projections,
# feed-forward) only to throw P of them away, and each of those rows also scores P+N keys;
# K/V prefixes push N rows and score the same P+N keys. Counting the multiply-adds of one
# forward pass (2 FLOPs each) from the config, with `rows` query rows and `keys` keys per layer:
#
#     per row and layer:  2 (3 D*D + D*D + 2 D*D_ff)    Q, K, V, output projection, feed-forward
#     attention:          2 * 2 * rows * keys * D        scores Q K^T and context, all H heads
#     pooler:             2 D*D per sentence
#
# Deep: rows = keys = P+N. K/V: rows = N, keys = P+N. Every term of a layer has a factor
# `rows`, so the hidden-state prompt costs (P+N)/N times as much (the one pooler aside). We
# check the formula against `torch.utils.flop_counter`, which counts the matrix products a
# forward pass really runs (on the explicit attention path, `output_attentions=True`, whose
# two attention products are plain `bmm`s the counter sees).
#
# Wall-clock time is another matter: it follows FLOPs only roughly, and on a machine shared
# with other work a 16% difference is inside the noise (one run of this lesson on a busy
# 2-core machine measured the K/V prefix 0.79 times as fast, i.e. slower). So we assert the
# FLOPs, and print the times of this run, next to their FLOP ratio, without asserting them.

# %%
def forward_flops(cfg, B: int, rows: int, keys: int) -> int:
    """Matrix-multiply FLOPs of one BERT forward: `rows` query rows and `keys` keys per layer."""
    D, L, D_ff = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    per_row = 2 * (3 * D * D + D * D + 2 * D * D_ff)  # Q, K, V, output projection, feed-forward up and down
    attention = 2 * 2 * rows * keys * D  # Q K^T and probs V: H heads of d, H*d = D
    return B * (L * (rows * per_row + attention) + 2 * D * D)  # + the pooler on [CLS]


def counted_flops(model, ids: torch.Tensor) -> int:
    """FLOPs torch's counter sees in one forward pass on the explicit attention path."""
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:  # (the counter needs autograd on)
        model(ids, output_attentions=True)
    return counter.get_total_flops()


# %% [markdown]
# The cost of each style, by the formula and by the counter, then timed (the methods in turn, best
# of three: `interleaved_times`, `lessons/_course.py`).

# %%
def cost(model: BertEncoder, B: int, N: int, P: int, repeat: int = 3) -> float:
    cfg = model.config
    torch.manual_seed(3)
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    deep = DeepPrompt(cfg, P).eval()
    methods = {"hidden-state": deep, "K/V prefix": hidden_to_kv(model, deep)}
    formula = {"hidden-state": forward_flops(cfg, B, P + N, P + N), "K/V prefix": forward_flops(cfg, B, N, P + N)}
    for name, method in methods.items():
        counted = counted_flops(model.attach(method), ids)
        assert counted == formula[name], f"{name}: counted {counted:,} FLOPs, the formula says {formula[name]:,}"
    model.detach_prompt()
    ratio = formula["hidden-state"] / formula["K/V prefix"]
    assert ratio > 1 and abs(ratio - (P + N) / N) < 0.01 * ratio
    with torch.no_grad():
        t = interleaved_times({name: lambda m=m: model.attach(m)(ids) for name, m in methods.items()}, repeat)
    model.detach_prompt()
    print(f"B={B}, N={N:3d}, P={P:2d}: GFLOPs hidden-state {formula['hidden-state'] / 1e9:.3g}, "
          f"K/V {formula['K/V prefix'] / 1e9:.3g} (counted = formula; ratio {ratio:.2f}, (P+N)/N = "
          f"{(P + N) / N:.2f}) | this run: {t['hidden-state'] * 1e3:4.0f} ms vs {t['K/V prefix'] * 1e3:4.0f} ms "
          f"(ratio {t['hidden-state'] / t['K/V prefix']:.2f})")
    return ratio


B = 8
# the walkthrough's N and P; then a short sentence under a long prompt
shapes = ((128, 20), (32, 64))  # (N, P)
for N, P in shapes:
    cost(enc, B, N, P)


# %% [markdown]
# ## What to remember
#
# - At every layer the real tokens read only the prompt rows' keys and values; the rows'
#   outputs are sliced away. So a hidden-state prompt h equals the K/V prefix
#   `(f(h) W_K + b_K, f(h) W_V + b_V)`, with f = identity (post-LN) or ln_1 (pre-LN).
# - The K/V form is strictly more expressive: 2D free numbers per row instead of D tied ones;
#   a random K/V prefix is about 1/sqrt(2) out of reach of any h.
# - It is also cheaper in FLOPs: N query rows per layer instead of P+N, a factor (P+N)/N
#   (1.16 at N=128, P=20; 3 for a 32-token sentence under a 64-row prompt). Wall-clock time
#   follows only roughly, and a small ratio drowns in the noise of a busy machine.
# - The bridge is exact only in eval mode (dropout off) and with prompts that carry no
#   position embedding; section 2 checks it to 1e-5 on both models.
#
# ## Check your understanding
#
# 1. With B=2, N=7, P=5, H=4, d=6, what shapes do `layer0.attn.q` and `layer0.attn.k` have
#    under a hidden-state prompt, and under its K/V prefix?
#
#    <details><summary>Answer</summary>
#
#    Hidden-state: both [2, 4, 12, 6] = [B, H, P+N, d], the prompt rows are ordinary rows. K/V
#    prefix: q [2, 4, 7, 6] = [B, H, N, d] and k [2, 4, 7, 6] too; the prefix keys arrive
#    separately (`prefix_k` [2, 4, 5, 6]) and `k_with_prefix` is [2, 4, 12, 6].
#
#    </details>
#
# 2. Why does the bridge for GPT-2 need the block's ln_1, and BERT's none?
#
#    <details><summary>Answer</summary>
#
#    The bridge needs what attention reads of a prompt row. GPT-2 is pre-LN: attention reads
#    ln_1(x), so the prompt row h reaches W_K and W_V as ln_1(h). BERT is post-LN: the
#    LayerNorm comes after attention and the residual, so attention reads the layer's input h
#    itself.
#
#    </details>
#
# 3. The random prefix in section 3 is about 0.71 out of reach. What would the fraction be for
#    a K/V prefix made of keys and values of real tokens of some sentence, taken at layer 0?
#
#    <details><summary>Answer</summary>
#
#    About 0: those keys and values are (h W_K + b_K, h W_V + b_V) for the tokens' own hidden
#    rows h, so an h reproduces them exactly. Only pairs that come from no single h are out of reach.
#
#    </details>
#
# 4. A sentence of N=32 tokens under a P=32 prompt: how many times the FLOPs of the K/V
#    prefix does the hidden-state prompt cost, and why does the attention term have the same ratio?
#
#    <details><summary>Answer</summary>
#
#    (P+N)/N = 2 (just under, because of the pooler). Attention costs rows * keys: (P+N)(P+N)
#    for the hidden-state prompt, N(P+N) for the prefix, again a factor (P+N)/N: both score
#    P+N keys, the prompt rows only add queries.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/09_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. Break the bridge on the decoder: build the prefix from `layer.attn.project(h)` instead of
#    `layer.kv_from_hidden(h)` (that is, skip `ln_1`), put it in a `KVPrefix.from_layer_kv`,
#    and compare with the deep prompt. How far apart are they now? [`try_1`]
# 2. Tie K and V in section 3's random prefix (`free[1] = free[0]`) and call
#    `unreachable_fraction` again: is a tied prefix any easier to reach? [`try_2`]
# 3. `python -m minigpt_ptv2 trace --method deep --config minilm --B 2 --N 9 --P 5 --layers 0`,
#    then `--method prefix`: which rows does only one of them have, and how many query rows
#    does each run? [`try_3`]
# 4. With `forward_flops(preset("minilm"), ...)`, find the P at which a hidden-state prompt
#    costs twice the FLOPs of the K/V prefix, for N = 32 and for N = 128. [`try_4`]
