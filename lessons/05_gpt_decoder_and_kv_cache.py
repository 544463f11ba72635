# %% [markdown]
# # Lesson 05 — The GPT decoder, the causal mask and the KV cache
#
# The decoder is the encoder's sibling, with three differences that matter for prompts:
#
# 1. **Pre-LN blocks**: `x = x + Attn(LN1(x))`, `x = x + FFN(LN2(x))` (BERT normalises after),
#    with the tanh GELU and LayerNorm eps 1e-5.
# 2. **A causal mask**: token t may look at tokens 0..t only, so the model can be trained to
#    predict token t+1 at every position at once.
# 3. **A KV cache** for generation: keys and values of earlier tokens are kept, so each new
#    token costs one row of work instead of the whole sequence.
#
# The third point is where P-Tuning v2 hides in plain sight: a K/V prefix is a KV cache that
# nobody computed, it was trained.

# %%
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from minigpt_ptv2 import GPT2Decoder, ShapeTrace, preset
from minigpt_ptv2.core.masks import build_keep
from minigpt_ptv2.trace import dims_for, side_by_side
from minigpt_ptv2.viz import save_figure

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")

# %% [markdown]
# ## 0. A random GPT-2, initialised the way GPT-2 is
#
# PyTorch's default `nn.Embedding` init draws N(0, 1), which with a tied head gives logits in
# the hundreds. GPT-2 draws its weight matrices from N(0, 0.02); then a fresh model predicts
# roughly uniformly and its loss starts near ln V, as a real one does before training.

# %%
def random_gpt2(cfg) -> GPT2Decoder:
    model = GPT2Decoder(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.02)
    return model


# %% [markdown]
# ## 1. The head is the embedding table, transposed
#
# GPT-2 *ties* its output layer to the token embedding: logits = `ln_f(h) @ wte^T`. There is
# no separate `lm_head` weight to load, train or forget.

# %%
def tied_head(model: GPT2Decoder, ids: torch.Tensor):
    with ShapeTrace(keep=(f"layer{len(model.layers) - 1}.out",)) as tr:
        logits = model(ids).logits  # [B, N, V]
    h = tr.tensors[f"layer{len(model.layers) - 1}.out"]  # [B, N, D]
    mine = model.ln_f(h) @ model.wte.weight.T  # [B, N, V]
    print(f"logits = ln_f(h) @ wte^T: max |diff| = {(mine - logits).abs().max():.1e}")
    assert torch.allclose(mine, logits, atol=1e-5)


# %% [markdown]
# ## 2. The causal mask, with a prefix and with a cache
#
# `build_keep(key_mask, n_query, causal=True)` lays keys out as `[earlier keys | new tokens]`
# and lets query i see every earlier key plus new keys up to itself. "Earlier keys" can be a
# prefix of P trained vectors or a cache of T computed ones: the mask cannot tell them apart.

# %%
def causal_masks(N=5, P=2, T=4):
    plain = build_keep(torch.ones(1, N, dtype=torch.bool), N, causal=True)[0, 0]  # [N, N]
    prefix = build_keep(torch.ones(1, P + N, dtype=torch.bool), N, causal=True)[0, 0]  # [N, P+N]
    cache = build_keep(torch.ones(1, T + 1, dtype=torch.bool), 1, causal=True)[0, 0]  # [1, T+1]
    for title, m in ((f"plain, N={N}", plain), (f"K/V prefix P={P}, N={N}", prefix),
                     (f"cache T={T}, one new token", cache)):
        print(f"{title}  {list(m.shape)}")
        for row in m.int().tolist():
            print("   " + " ".join(str(v) for v in row))
    assert prefix[:, :P].all(), "every real token sees the whole prefix"
    assert cache.all(), "the newest token sees the whole cache and itself"
    return plain, prefix, cache


def plot_masks(masks, P=2):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 3))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [5, 7, 5]})
    for ax, m, title in zip(axes, masks, ("causal", f"causal + prefix (first {P} keys)", "cache + 1 token")):
        ax.imshow(m.int(), cmap="Greens", vmin=0, vmax=1.4)
        ax.set(title=title, xlabel="key", ylabel="query", xticks=range(m.shape[1]), yticks=range(m.shape[0]))
    save_figure(fig, "05_causal_masks.png")


# %% [markdown]
# ## 3. Causal means: the future cannot change the past
#
# Change the last token of a sequence: logits at every earlier position stay exactly put.

# %%
def future_cannot_change_past(model: GPT2Decoder, ids: torch.Tensor):
    other = ids.clone()
    other[:, -1] = (ids[:, -1] + 1) % model.config.vocab_size
    a, b = model(ids).logits, model(other).logits  # [B, N, V] each
    print(f"change the last token: earlier logits move by {(a - b)[:, :-1].abs().max():.1e}, "
          f"the last one by {(a - b)[:, -1].abs().max():.2f}")
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6) and not torch.allclose(a[:, -1], b[:, -1])


# %% [markdown]
# ## 4. The loss: position t predicts token t+1
#
# With `labels=input_ids`, the model compares the logits at 0..N-2 with the tokens at 1..N-1.
# Positions labelled -100 are ignored; lesson 06 uses that for prompts.

# %%
def next_token_loss(model: GPT2Decoder, ids: torch.Tensor):
    out = model(ids, labels=ids)
    mine = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    print(f"loss {out.loss:.4f} = cross_entropy(logits[:, :-1], ids[:, 1:]) = {mine:.4f}"
          f"  (ln V = {math.log(model.config.vocab_size):.4f})")
    assert torch.allclose(out.loss, mine, atol=1e-6)


# %% [markdown]
# ## 5. The KV cache: same tokens, a fraction of the work
#
# Without a cache, step t recomputes all t rows. With it, step t feeds one row and attends to
# the T cached keys and values. Same function, so greedy decoding must pick the same tokens,
# and the logits of a cached step must equal those of a full recomputation.

# %%
def kv_cache(model: GPT2Decoder, ids: torch.Tensor, steps: int):
    with_cache = model.generate(ids, steps, use_cache=True)
    without = model.generate(ids, steps, use_cache=False)
    assert torch.equal(with_cache, without), "the cache must not change the tokens"
    full = model(with_cache).logits[:, -1]  # [B, V]: everything recomputed
    first = model(with_cache[:, :-1], use_cache=True)
    step = model(with_cache[:, -1:], past=first.cache).logits[:, -1]  # [B, V]: one new row
    print(f"greedy, {steps} new tokens: identical with and without the cache; last-step logits "
          f"cached vs recomputed: max |diff| = {(full - step).abs().max():.1e}")
    assert torch.allclose(full, step, rtol=1e-4, atol=1e-5)
    N = ids.shape[1]
    rows_without = sum(N + t for t in range(steps))
    print(f"query rows through the model: {rows_without} without the cache, {N + steps - 1} with it")


# %% [markdown]
# ## 6. The shapes, recorded: a prompt step, then one cached step
#
# The first call runs the N prompt tokens (causal mask `[B, 1, N, N]`) and returns a cache of
# per-layer keys and values `[B, H, N, d]`. The second call feeds one token: its query is
# `[B, H, 1, d]`, and the cache shows up exactly where a K/V prefix would, as `prefix_k` /
# `prefix_v` `[B, H, T, d]`, extending keys to `[B, H, T+1, d]`.

# %%
def trace_example(B=2, N=7, layers=2):
    torch.manual_seed(0)
    cfg = preset("gpt2-tiny").replace(num_hidden_layers=layers)
    model = random_gpt2(cfg)
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    with torch.no_grad():
        with ShapeTrace(dims=dims_for(cfg, B=B, N=N)) as prompt_step:
            out = model(ids, use_cache=True, output_attentions=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
        with ShapeTrace(dims={**dims_for(cfg, B=B), "T": N, "T+1": N + 1}) as cached_step:
            model(nxt, past=out.cache, output_attentions=True)
    return prompt_step, cached_step


# %%
def main():
    torch.manual_seed(0)
    cfg = preset("gpt2-tiny") if QUICK else preset("gpt2").replace(num_hidden_layers=4)
    model = random_gpt2(cfg)
    B, N, steps = (2, 6, 4) if QUICK else (2, 16, 8)
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    with torch.no_grad():
        tied_head(model, ids)
        print()
        masks = causal_masks()
        plot_masks(masks)
        print()
        future_cannot_change_past(model, ids)
        next_token_loss(model, ids)
        kv_cache(model, ids, steps)
    prompt_step, cached_step = trace_example()
    print()
    print(side_by_side(prompt_step, cached_step, ("prompt step", "one cached step (T = N)"), layers=(0,)))


# %% [markdown]
# ## What to remember
#
# - GPT-2 blocks are pre-LN with the tanh GELU; the LM head is the token embedding, transposed.
# - The causal mask lets query i see every earlier key (prefix or cache) and new keys up to i.
# - The labels are the inputs: position t is scored on token t+1; -100 means "no loss here".
# - A KV cache stores `[B, H, T, d]` keys and values per layer. A new token's keys are simply
#   concatenated after them: the very same `concat_prefix` a K/V prefix goes through.
#
# ## Try this
#
# - In `causal_masks`, mark one prefix entry as masked (`key_mask[:, 0] = False`) and print.
# - Decode 50 tokens with and without the cache on `gpt2` with 4 layers, and time both.
# - Run `python -m minigpt_ptv2 trace --model decoder --config gpt2-tiny --method prefix --B 2 --N 5 --P 3`
#   and find the rows that look like the cached step above.

# %%
if __name__ == "__main__":
    main()
