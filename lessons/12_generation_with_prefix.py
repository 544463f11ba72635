# %% [markdown]
# # Lesson 12 — Generation with a prefix
#
# On a decoder, a K/V prefix and a KV cache are the same object. Generation keeps, per layer,
# the keys and values `[B, H, T, d]` of everything seen so far; P-Tuning v2 simply puts P
# trained entries at the front of that list before the first real token arrives:
#
#     cache after the prompt step:  [ prefix K/V (P) | prompt tokens (N) ]          T = P + N
#     after each new token:         [ prefix K/V (P) | prompt tokens (N) | new ... ]
#
# So nothing special happens at decoding time: the first step attends to the prefix like any
# forward pass, returns a cache that already contains it, and every later step reads it from
# there. We check that the cache really starts with the prefix, that cached decoding equals
# full recomputation, and that left padding does not change what a row generates.
#
# No pretrained GPT-2 can be fetched offline, so the decoder has random weights: the tokens are
# meaningless, but every equality below is exact behaviour, not luck.

# %%
from __future__ import annotations

import os

import torch

from minigpt_ptv2 import GPT2Decoder, ShapeTrace, preset
from minigpt_ptv2.prompts import KVPrefix
from minigpt_ptv2.trace import dims_for, side_by_side

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")


# %% [markdown]
# ## 0. A random GPT-2 with a prefix
#
# Weights drawn from N(0, 0.2), ten times GPT-2's init (lesson 05), so that greedy decoding
# does not settle on repeating one token, and a `KVPrefix` with a N(0, 0.5) table.

# %%
def model_with_prefix(cfg, P: int, seed: int = 0, positions: str = "real") -> GPT2Decoder:
    torch.manual_seed(seed)
    model = GPT2Decoder(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    return model.attach(KVPrefix(cfg, P, init_std=0.5, positions=positions).eval())


# %% [markdown]
# ## 1. The cache starts from the prefix
#
# After the prompt step, each layer's cached keys are `[B, H, P+N, d]`, and their first P
# entries are *exactly* the prefix keys of that layer: `concat_prefix` put them there. The
# cache's key mask marks them as visible, and the next position is N, because real tokens
# count from 0 whatever P is (positions="real"; "shifted" would continue from P+N).

# %%
def cache_starts_from_prefix(model: GPT2Decoder, ids: torch.Tensor):
    P = model.prompt.num_virtual
    out = model(ids, use_cache=True)
    kv = model.prompt.layer_kv()  # [L, 2, H, P, d]
    B, N = ids.shape
    print(f"prompt step: N={N} tokens, cache length T={out.cache.length} = P + N = {P} + {N}")
    for i, (k, v) in enumerate(out.cache.layers):
        assert k.shape == (B, model.config.num_attention_heads, P + N, model.config.head_dim)
        assert torch.equal(k[:, :, :P], kv[i, 0].expand(B, -1, -1, -1))
        assert torch.equal(v[:, :, :P], kv[i, 1].expand(B, -1, -1, -1))
    print(f"layer 0 cached K {list(out.cache.layers[0][0].shape)}: first P entries == the prefix K "
          f"in every layer; key mask over the prefix all True: {bool(out.cache.key_mask[:, :P].all())}")
    print(f"next position: {out.cache.next_position.tolist()} (N, not P+N: the prefix has no position)")
    return out


# %% [markdown]
# ## 2. Cached decoding equals full recomputation
#
# `generate(..., use_cache=False)` recomputes the whole sequence (prefix included) at every
# step; `use_cache=True` feeds one token per step. Same function, so the same greedy tokens,
# and at every step the same logits up to float rounding.

# %%
def cached_equals_full(model: GPT2Decoder, ids: torch.Tensor, steps: int):
    cached = model.generate(ids, steps, use_cache=True)  # [B, N + steps]
    full = model.generate(ids, steps, use_cache=False)
    assert torch.equal(cached, full)
    worst, scale, out = 0.0, 0.0, model(ids, use_cache=True)
    for t in range(ids.shape[1], cached.shape[1]):  # step by step, compare the logits
        recomputed = model(cached[:, :t]).logits[:, -1]  # [B, V]
        worst = max(worst, float((out.logits[:, -1] - recomputed).abs().max()))
        scale = max(scale, float(recomputed.abs().max()))
        out = model(cached[:, t:t + 1], past=out.cache, use_cache=True)
    print(f"{steps} greedy tokens: identical with and without the cache; largest logit difference "
          f"over the steps {worst:.1e}, for logits as large as {scale:.1f}")
    assert worst <= 1e-4 * max(scale, 1.0), "float rounding only"
    return cached


# %% [markdown]
# ## 3. Left padding
#
# Batched prompts of different lengths are padded on the *left*, so every row's last token is
# in the last column and new tokens line up. Two things must then hold for a padded row:
# its pads are masked (the prefix is not: it belongs to every row), and its positions count
# real tokens only, so its first real token is still position 0. `generate` does both, so a
# row generates the same tokens batched and padded as alone. Count the positions naively
# (pads included) and the same row sees a different sequence.

# %%
def left_padding(model: GPT2Decoder, short: torch.Tensor, long: torch.Tensor, steps: int):
    pad = long.shape[0] - short.shape[0]
    ids = torch.stack([torch.cat([torch.zeros(pad, dtype=torch.long), short]), long])  # [2, N]
    mask = torch.ones_like(ids)
    mask[0, :pad] = 0
    batched = model.generate(ids, steps, attention_mask=mask)  # [2, N + steps]
    alone = model.generate(short[None], steps)  # [1, len(short) + steps]
    assert torch.equal(batched[0, pad:], alone[0]) and torch.equal(
        batched[1], model.generate(long[None], steps)[0])
    print(f"row 0 left-padded by {pad}: generates {batched[0, -steps:].tolist()}, alone "
          f"{alone[0, -steps:].tolist()}")
    naive = model(ids, attention_mask=mask, position_ids=torch.arange(ids.shape[1]).expand(2, -1))
    right = model(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    gap = (naive.logits[0, -1] - right.logits[0, -1]).abs().max()
    print(f"positions counting the pads instead: last-token logits of row 0 move by {gap:.2e}")
    assert gap > 1e-4


# %% [markdown]
# ## 4. Sampling, reproducibly
#
# Greedy picks the argmax; sampling draws from softmax(logits / temperature), optionally
# restricted to the top k. Pass a `torch.Generator` and the draw is reproducible.

# %%
def sampling(model: GPT2Decoder, ids: torch.Tensor, steps: int):
    draws = [model.generate(ids, steps, do_sample=True, top_k=20, temperature=1.0,
                            generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(draws[0], draws[1])
    print(f"sampled (top_k=20, seed 1): {draws[0][0, -steps:].tolist()}; seed 1 again: same; "
          f"seed 2: {draws[2][0, -steps:].tolist()}")


# %% [markdown]
# ## 5. The shapes, recorded
#
# Tiny GPT-2 (D=24, H=4, d=6, V=130, L=3), layer 0 shown, B=2, N=7, P=5. The prompt step looks
# like an encoder with a prefix, plus the causal keep-mask `[B, 1, N, P+N]`. The cached step
# feeds one token: the cache of T = P+N = 12 entries arrives as `prefix_k`/`prefix_v`
# `[B, H, T, d]`, where the prefix was one step before. The prefix table is not read again.

# %%
def trace_example(B=2, N=7, P=5, layers=3):
    cfg = preset("gpt2-tiny").replace(num_hidden_layers=layers)
    model = model_with_prefix(cfg, P)
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    with torch.no_grad():
        with ShapeTrace(dims=dims_for(cfg, B=B, N=N, P=P), layers=(0,)) as prompt_step:
            out = model(ids, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
        dims = {**dims_for(cfg, B=B), "T": P + N, "T+1": P + N + 1}
        with ShapeTrace(dims=dims, layers=(0,)) as cached_step:
            model(nxt, past=out.cache, use_cache=True)
    return prompt_step, cached_step


# %%
def main():
    cfg = preset("gpt2-tiny") if QUICK else preset("gpt2").replace(num_hidden_layers=2)
    P, N, steps = (3, 6, 5) if QUICK else (16, 16, 12)
    model = model_with_prefix(cfg, P)
    torch.manual_seed(1)
    ids = torch.randint(1, cfg.vocab_size, (2, N))  # [B, N]
    with torch.no_grad():
        cache_starts_from_prefix(model, ids)
        print()
        cached_equals_full(model, ids, steps)
        print()
        left_padding(model, ids[0, N // 2:], ids[1], steps)
        print()
        sampling(model, ids, steps)
    print()
    prompt_step, cached_step = trace_example()
    print(side_by_side(prompt_step, cached_step, ("prompt step", "one cached step (T = P+N)")))


# %% [markdown]
# ## What to remember
#
# - On a decoder, a K/V prefix *is* the first P entries of the KV cache: after the prompt step
#   the cache is `[B, H, P+N, d]` per layer and its first P entries are the prefix, exactly.
# - Cached decoding and full recomputation are the same function; test one against the other.
# - Left padding needs two things: pads masked (the prefix never is) and positions counting
#   real tokens only. Then a row generates the same tokens padded in a batch as alone.
# - Under positions="real" the prefix takes no position: real tokens start at 0, and the
#   position table's full length stays available (lesson 13, pitfall 1).
#
# ## Try this
#
# - Attach the prefix with `positions="shifted"` (PEFT's convention) and print
#   `cache.next_position`: where do the real tokens start now?
# - Mask the prefix (`model.prompt.virtual_keep[:] = False`) and check that generation equals
#   the plain model's (`model.detach_prompt()`).
# - Time 64 new tokens with and without the cache on `preset("gpt2")` with 4 layers.
# - `python -m minigpt_ptv2 trace --model decoder --config gpt2-tiny --method prefix --B 2 --N 5 --P 3`.

# %%
if __name__ == "__main__":
    main()
