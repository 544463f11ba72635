# %% [markdown]
# # Lesson 09 — Side by side: the bridge between the two deep styles
#
# Lessons 07 and 08 prompted every layer in two different ways:
#
# - **hidden-state prompts** (seed 000): inject `h [P, D]` as extra rows, process, slice;
# - **K/V prefixes** (P-Tuning v2, prefix tuning): extra keys and values `[H, P, d]`.
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

# %%
from __future__ import annotations

import os
import time

import torch

from minigpt_ptv2 import GPT2Decoder, BertEncoder, ShapeTrace, preset
from minigpt_ptv2.prompts import DeepPrompt, hidden_to_kv
from minigpt_ptv2.trace import side_by_side

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")

# %% [markdown]
# ## 1. The two traces, side by side
#
# Same model, same batch, same P. Rows present in only one of the two styles are the
# difference between them: `inject`/`slice` and `P+N` queries on the left, `prefix_k`/`prefix_v`
# and `N` queries on the right. Both end at the same `[B, N, D]`.

# %%
def trace_example(B=2, N=5, P=3, layers=2):
    """(deep trace, trace of the equivalent K/V prefix) on the tiny BERT with `layers` layers."""
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
            with ShapeTrace.for_model(model, B=B, N=N) as tr:
                model(ids)
            traces.append(tr)
    model.detach_prompt()
    return traces[0], traces[1]


# %% [markdown]
# ## 2. The bridge, checked
#
# `hidden_to_kv(model, deep)` computes, for every layer, `K = f(h) W_K + b_K` and
# `V = f(h) W_V + b_V` and stores them in a `KVPrefix`. The real tokens' outputs must agree
# to float rounding, on the encoder (f = identity) and on the decoder (f = the block's ln_1).
# Two things could break it and do not here: dropout (eval mode: off), and positions (a
# hidden-state prompt is injected *after* the embeddings, so it never gets a position).

# %%
def bridge_check(model, ids, P: int, atol: float = 1e-5) -> float:
    torch.manual_seed(1)
    deep = DeepPrompt(model.config, P, init_std=0.5).eval()  # large, so the prompt matters
    plain = _out(model, ids)
    a = _out(model.attach(deep), ids)
    b = _out(model.attach(hidden_to_kv(model, deep)), ids)
    model.detach_prompt()
    gap = (a - b).abs().max().item()
    kind = type(model).__name__
    print(f"{kind:<8} deep prompt vs its K/V prefix: max |diff| = {gap:.1e}   "
          f"(vs no prompt at all: {(a - plain).abs().max():.2f})")
    assert gap < atol, f"the bridge does not hold on the {kind}: {gap}"
    return gap


def _out(model, ids):
    out = model(ids)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


# %% [markdown]
# ## 3. Why K/V is strictly more expressive
#
# Per prompt row, a hidden-state prompt chooses D numbers (h); the K/V pair it produces has
# 2D numbers, but they lie on a D-dimensional (affine) subspace: whatever h is, (K, V) is
# `(h W_K + b_K, h W_V + b_V)`. A free K/V prefix can sit anywhere in 2D dimensions.
#
# Test it with least squares: for a given prefix (K, V) at layer 0, find the h that comes
# closest. For the prefix built by the bridge the residual is ~0 (it came from an h). For a
# random prefix of the same size, about 1/sqrt(2) of it cannot be reached by any h.

# %%
def expressiveness(model: BertEncoder, P: int = 8):
    layer = model.layers[0].attn
    D = model.config.hidden_size
    W = layer.qkv.weight[:, D:]  # [D, 2D]: [W_K | W_V], h -> (K, V)
    bias = layer.qkv.bias[D:]  # [2D]

    def unreachable_fraction(kv_rows: torch.Tensor) -> float:  # kv_rows [P, 2D]
        h = torch.linalg.lstsq(W.T, (kv_rows - bias).T).solution.T  # [P, D]: best h
        residual = (h @ W + bias) - kv_rows  # [P, 2D]
        return (residual.norm() / (kv_rows - bias).norm()).item()

    torch.manual_seed(2)
    deep = DeepPrompt(model.config, P, init_std=0.5)
    bridged = hidden_to_kv(model, deep).layer_kv()[0]  # [2, H, P, d]
    free = torch.randn_like(bridged) * bridged.std()  # [2, H, P, d]: any K/V prefix
    as_rows = lambda kv: torch.cat([kv[0].transpose(0, 1).flatten(1), kv[1].transpose(0, 1).flatten(1)], dim=1)  # noqa: E731
    a, b = unreachable_fraction(as_rows(bridged)), unreachable_fraction(as_rows(free))
    print(f"fraction of (K, V) no h can produce: bridged prefix {a:.1e}, random prefix {b:.2f} "
          f"(1/sqrt(2) = {2 ** -0.5:.2f})")
    print(f"trainable numbers per layer: hidden-state {P * D:,} (P*D), K/V {2 * P * D:,} (P*2D)")
    assert a < 1e-3 and b > 0.5


# %% [markdown]
# ## 4. What each style costs
#
# Hidden-state prompts push P+N rows through every layer (queries, feed-forward, LayerNorm)
# only to throw P of them away; K/V prefixes push N rows and attend to P+N keys. Same model,
# same batch, timed in the same run (compare the ratio, not the seconds).

# %%
def cost(model: BertEncoder, ids: torch.Tensor, P: int, repeat: int = 3):
    deep = DeepPrompt(model.config, P).eval()
    prefix = hidden_to_kv(model, deep)
    times = {}
    for name, method in (("hidden-state", deep), ("K/V prefix", prefix)):
        model.attach(method)
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            model(ids)
            best = min(best, time.perf_counter() - t)
        times[name] = best
    model.detach_prompt()
    B, N = ids.shape
    print(f"B={B}, N={N}, P={P}: hidden-state {times['hidden-state'] * 1e3:.0f} ms, K/V prefix "
          f"{times['K/V prefix'] * 1e3:.0f} ms (ratio {times['hidden-state'] / times['K/V prefix']:.2f}; "
          f"rows per layer {P + N} vs {N}, i.e. {(P + N) / N:.2f})")


# %%
def main():
    deep_tr, prefix_tr = trace_example()
    print(side_by_side(deep_tr, prefix_tr, ("hidden-state prompt", "K/V prefix"), layers=(0,)))
    print()
    torch.manual_seed(0)
    enc = BertEncoder(preset("bert-tiny") if QUICK else preset("minilm")).eval()
    dec = GPT2Decoder(preset("gpt2-tiny")).eval()
    B, N, P = (2, 8, 4) if QUICK else (8, 64, 20)
    with torch.no_grad():
        bridge_check(enc, torch.randint(0, enc.config.vocab_size, (B, N)), P)
        bridge_check(dec, torch.randint(0, dec.config.vocab_size, (B, N)), P)
        print()
        expressiveness(enc)
        print()
        cost(enc, torch.randint(0, enc.config.vocab_size, (B, N if QUICK else 128)), P)


# %% [markdown]
# ## What to remember
#
# - At every layer the real tokens read only the prompt rows' keys and values; the rows'
#   outputs are sliced away. So a hidden-state prompt h equals the K/V prefix
#   `(f(h) W_K + b_K, f(h) W_V + b_V)`, with f = identity (post-LN) or ln_1 (pre-LN).
# - The K/V form is strictly more expressive: 2D free numbers per row instead of D tied ones.
#   It is also cheaper: N rows per layer instead of P+N.
# - The bridge is exact only in eval mode (dropout off) and with prompts that carry no
#   position embedding; a test proves it to 1e-5.
#
# ## Try this
#
# - Break the bridge on the decoder: skip `ln_1` in your own copy of `hidden_to_kv`.
# - In `expressiveness`, make the random prefix share K and V (`free[1] = free[0]`): still reachable?
# - `python -m minigpt_ptv2 trace --method deep --config minilm --B 2 --N 8 --P 4 --layers 0`,
#   then `--method prefix`, and compare the rows.

# %%
if __name__ == "__main__":
    main()
