# %% [markdown]
# # Lesson 15 — Deep prompts on a modern decoder: RoPE and grouped K/V heads
#
# BERT and GPT-2 taught the two deep styles. The decoders people use today (LLaMA, Mistral,
# Qwen, SmolLM...) change four things that matter for prompts:
#
# | | GPT-2 (lesson 05) | LLaMA-style (`models/llama.py`) |
# |---|---|---|
# | positions | a learned table `wpe` added to the embeddings | none added: queries and keys are *turned* by their position inside attention (RoPE) |
# | norm | LayerNorm (mean, variance, bias) | RMSNorm (root mean square only, no bias) |
# | feed-forward | `gelu(x W1) W2` | SwiGLU: `(silu(x W_gate) * x W_up) W_down` |
# | K/V heads | H, one per query head | H_kv < H: each K/V head serves a group of H / H_kv query heads |
#
# The last two letters are new: **H_kv**, the number of key/value heads, and the cache and the
# K/V prefix are `[B, H_kv, P, d]`. And one question no tutorial answers: under RoPE every key
# carries its position, so *what position does a prefix key have?* We answer it here, with
# numbers, on a tiny random LLaMA-style decoder (no pretrained one can be fetched offline;
# tests/test_llama.py proves our decoder equal to transformers' `LlamaForCausalLM`); section 6
# ends with the course's own small pretrained one, which writes words. Section 7
# adds the third deep style, a gated prefix that starts as the frozen model, exactly.

# %%
from __future__ import annotations

import torch
from torch import nn

from _course import RUNS, print_speech
from minigpt_ptv2 import ShapeTrace, preset
from minigpt_ptv2.core.rotary import Rotary, rotate_half
from minigpt_ptv2.data.bpe import ByteLevelBPE
from minigpt_ptv2.models.llama import LlamaDecoder
from minigpt_ptv2.prompts import (DeepPrompt, GatedPrefix, KVPrefix, SoftPrompt, freeze_backbone, hidden_to_kv,
                                  parameter_report)
from minigpt_ptv2.trace import dims_for, side_by_side
from minigpt_ptv2.training.lm import load_decoder
from minigpt_ptv2.training.pretrain import decoder_dir
from minigpt_ptv2.training.steer import speak



# %% [markdown]
# ## 0. A tiny LLaMA-style decoder
#
# `llama-tiny`: D=40, L=3, H=4 query heads sharing H_kv=2 key/value heads, d=10, V=140. Weights
# from N(0, 0.3), so that prompts visibly move the outputs and greedy text varies.

# %%
def tiny_llama(seed: int = 0, layers: int | None = None) -> LlamaDecoder:
    cfg = preset("llama-tiny")
    if layers is not None:
        cfg = cfg.replace(num_hidden_layers=layers)
    torch.manual_seed(seed)
    model = LlamaDecoder(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model


model = tiny_llama(layers=3)
torch.manual_seed(6)
ids = torch.randint(1, model.config.vocab_size, (2, 12))  # [B, N]
print(model)


# %% [markdown]
# ## 1. RoPE: a position is an angle, and a score sees only distances
#
# Split the d features of a query or key into d/2 pairs, (j, j + d/2). Pair j turns by the angle
# `position * theta^(-2j/d)`: `t * cos + rotate_half(t) * sin`, where rotate_half maps the halves
# (x1, x2) to (-x2, x1). Turning q by angle a and k by angle b leaves q . k depending on a - b
# only: **the score of two tokens depends on how far apart they are, not where they are.**

# %%
def rope_sees_distances():
    rot = Rotary(head_dim=10)
    print(f"rotate_half([1, 2, 3, 4]) = {rotate_half(torch.tensor([1., 2., 3., 4.])).tolist()}")
    torch.manual_seed(1)
    q, k = torch.randn(1, 1, 1, 10), torch.randn(1, 1, 1, 10)  # [B, H, 1, d]

    def score(i: int, j: int) -> float:
        return float(rot(q, torch.tensor([[i]])) @ rot(k, torch.tensor([[j]])).transpose(-1, -2))
    rows = [(7, 3), (24, 20), (103, 99), (7, 4)]
    for i, j in rows:
        print(f"  query at {i:3d}, key at {j:3d} (distance {i - j}): score {score(i, j):+.5f}")
    assert abs(score(7, 3) - score(103, 99)) < 1e-4 and abs(score(7, 3) - score(7, 4)) > 1e-3
    print("same distance, same score; move one of them and the score changes")


rope_sees_distances()


# %% [markdown]
# ## 2. Grouped K/V heads: H queries, H_kv keys and values
#
# ![H query heads sharing H_kv key/value heads](../../figures/grouped_heads.png)
#
# One product makes every head at once: `qkv.weight` is `[D, (H + 2 H_kv) d]`, so x becomes H
# query heads and H_kv key and value heads. To score, each K/V head is shared by H / H_kv
# query heads (the explicit path widens it with `repeat_kv`: the `k_repeated` capture point;
# the fused kernel pairs them itself). The KV cache and a K/V prefix keep only H_kv heads, so
# at a 1B shape (LLaMA 3.2 1B: H=32, H_kv=8) a P-Tuning v2 prefix is a quarter of what
# `[P, L*2*D]` would be, and now smaller than a deep hidden-state prompt `[L, P, D]`.

# %%
def grouped_heads(model: LlamaDecoder):
    c = model.config
    print(f"qkv.weight {list(model.layers[0].attn.qkv.weight.shape)} = [D, (H + 2 H_kv) d] = "
          f"[{c.hidden_size}, ({c.num_attention_heads} + 2*{c.num_key_value_heads}) * {c.head_dim}]")
    ids = torch.randint(1, c.vocab_size, (2, 6))
    with torch.no_grad():
        out = model(ids, use_cache=True)
    k, _ = out.cache.layers[0]
    print(f"cached K per layer {list(k.shape)} = [B, H_kv, N, d]: {c.num_attention_heads // c.num_key_value_heads}"
          f" times smaller than [B, H, N, d]")
    big = preset("llama-1b")
    rows = {r["method"]: r for r in parameter_report(big, 16, ["soft", "deep", "prefix"])}
    print(f"LLaMA-3.2-1B shape, P=16 (backbone {rows['prefix']['backbone']:,} parameters):")
    for name, r in rows.items():
        print(f"  {name:7s} {r['trainable']:>9,} trainable ({r['percent']:.3f}%)")
    assert rows["prefix"]["trainable"] == 16 * big.prefix_width == rows["deep"]["trainable"] // 2


grouped_heads(model)


# %% [markdown]
# ## 3. What position does a prefix key have? (pitfall 9)
#
# A key is turned when it is made, and a cache keeps it turned. A K/V prefix, though, is handed
# to the layers ready-made. Two choices, both offered (`KVPrefix(rotate_keys=...)`):
#
# - `rotate_keys=False` (default, PEFT's way): the keys are used as given, as if already turned.
#   An unturned key scores like a key at position 0. So the real tokens' own positions matter:
#   start them at P (positions="shifted", as HF/PEFT do) and every token sits P further from
#   the prefix than with positions="real". The two policies give different models.
# - `rotate_keys=True`: the model turns the prefix keys to the prompt rows' positions, just
#   before the text (0..P-1 with the text at P.., or -P..-1 with the text at 0..: the same
#   distances). Then "real" and "shifted" agree, as they always do when every key is turned.

# %%
def prefix_key_positions(model: LlamaDecoder, ids: torch.Tensor):
    P = 4
    out = {}
    for rotate in (False, True):
        for positions in ("real", "shifted"):
            torch.manual_seed(2)
            prefix = KVPrefix(model.config, P, init_std=1.0, positions=positions, rotate_keys=rotate)
            with torch.no_grad():
                out[rotate, positions] = model.attach(prefix)(ids).logits
            model.detach_prompt()
    for rotate in (False, True):
        gap = float((out[rotate, "real"] - out[rotate, "shifted"]).abs().max())
        print(f"rotate_keys={rotate!s:5}: real vs shifted logits differ by {gap:.2e}")
    assert (out[False, "real"] - out[False, "shifted"]).abs().max() > 1e-2
    assert (out[True, "real"] - out[True, "shifted"]).abs().max() < 1e-4


prefix_key_positions(model, ids)


# %% [markdown]
# ## 4. Hidden-state prompts: turned like any row
#
# A deep prompt's P rows go through the layer with the real tokens, so their keys are turned at
# whatever positions they are given: -P..-1 under "real" (just before the text), 0..P-1 under
# "shifted". Only distances count, so here the policy makes no difference (up to rounding),
# unlike on GPT-2, where "shifted" moves the real tokens along a learned table (lesson 13).

# %%
def deep_prompt_positions(model: LlamaDecoder, ids: torch.Tensor):
    outs = []
    for positions in ("real", "shifted"):
        torch.manual_seed(3)
        with torch.no_grad():
            outs.append(model.attach(DeepPrompt(model.config, 4, init_std=1.0, positions=positions))(ids).logits)
        model.detach_prompt()
    gap = float((outs[0] - outs[1]).abs().max())
    print(f"deep prompt, real (rows at -P..-1) vs shifted (rows at 0..P-1): logits differ by {gap:.1e}")
    init = torch.randn(4, model.config.hidden_size)  # [P, D], the same rows under both policies
    with torch.no_grad():
        soft = [model.attach(SoftPrompt(model.config, 4, init=init, positions=p))(ids).logits
                for p in ("real", "shifted")]
    model.detach_prompt()
    print(f"shallow soft prompt, the same comparison: {float((soft[0] - soft[1]).abs().max()):.1e}")
    assert gap < 1e-4


deep_prompt_positions(model, ids)


# %% [markdown]
# ## 5. The bridge, restated for this block
#
# Lesson 09's bridge holds here too, with this block's own "what attention reads": a prompt row
# h gives the real tokens K = RoPE(RMSNorm(h) W_K) at the row's position and V = RMSNorm(h) W_V.
# `layer.kv_from_hidden` says it for each architecture; `hidden_to_kv` turns a deep prompt into
# that K/V prefix, keys already turned (so the prefix keeps rotate_keys=False).

# %%
def bridge(model: LlamaDecoder, ids: torch.Tensor):
    torch.manual_seed(4)
    deep = DeepPrompt(model.config, 4, init_std=1.0)
    with torch.no_grad():
        a = model.attach(deep)(ids).logits
        prefix = hidden_to_kv(model, deep)
        b = model.attach(prefix)(ids).logits
        model.detach_prompt()
        plain = model(ids).logits
    gap, effect = float((a - b).abs().max()), float((a - plain).abs().max())
    print(f"deep prompt vs hidden_to_kv prefix: {gap:.1e} apart (the prompt itself moves the logits by {effect:.2f})")
    assert gap <= 1e-5 * max(1.0, float(a.abs().max())) and effect > 1e-2


bridge(model, ids)


# %% [markdown]
# ## 6. Generation: the prefix is the first P entries of an H_kv-headed cache
#
# As on GPT-2 (lesson 12): the first step keeps the prefix in the cache, `[B, H_kv, P+N, d]` per
# layer; cached decoding equals full recomputation; a left-padded row generates what it
# generates alone, because positions count real tokens only.

# %%
def generation(model: LlamaDecoder, steps: int):
    torch.manual_seed(5)
    model.attach(KVPrefix(model.config, 4, init_std=1.0))
    ids = torch.randint(1, model.config.vocab_size, (2, 6))
    mask = torch.ones_like(ids)
    ids[0, :2], mask[0, :2] = 0, 0  # row 0 left-padded by 2
    with torch.no_grad():
        out = model(ids, attention_mask=mask, use_cache=True)
    print(f"cache after the prompt step: K {list(out.cache.layers[0][0].shape)} = [B, H_kv, P+N, d]")
    cached = model.generate(ids, steps, attention_mask=mask)
    assert torch.equal(cached, model.generate(ids, steps, attention_mask=mask, use_cache=False))
    assert torch.equal(cached[0, 2:], model.generate(ids[:1, 2:], steps)[0])
    print(f"{steps} tokens, cached == recomputed, padded row == alone: {cached[0, -steps:].tolist()}")
    model.detach_prompt()


generation(model, 16)


# %% [markdown]
# ### The same, on a LLaMA-style decoder that speaks
#
# The course's pretrained decoder (lesson 05, section 7; built here, about a minute of CPU once,
# if no earlier lesson has) is this very class, `LlamaDecoder`, at L=4, D=64, H=H_kv=4, d=16,
# with a 4,000-symbol tokenizer. With a deep hidden-state prompt of P=4 random rows attached
# (untrained: it only shows that the prompt rows take part), it writes words, greedy and
# sampled; the cache and the recomputation agree on every text, as they must.

# %%
def speaking_llama(folder, start: str = "the film is") -> dict:
    decoder, tok = load_decoder(folder), ByteLevelBPE.from_model_dir(folder)
    c = decoder.config
    print(f"{type(decoder).__name__}: L={c.num_hidden_layers}, D={c.hidden_size}, H={c.num_attention_heads}, "
          f"H_kv={c.num_key_value_heads}, d={c.head_dim}, V={c.vocab_size}")
    torch.manual_seed(0)
    prompts = {"no prompt": None, "a random deep prompt, P=4": DeepPrompt(c, 4, init_std=1.0).eval()}
    said = {}
    for name, prompt in prompts.items():
        if prompt is not None:
            decoder.attach(prompt)  # rows [L, P, D] drawn from N(0, 1): large enough to move the text
        said[name] = speak(decoder, tok, start, n=2, seed=0)  # greedy and sampled, cache and none
        print(f"{name}, after '{start}':")
        print_speech(said[name])
        assert said[name]["greedy"] == said[name]["greedy, no cache"]
        assert said[name]["sampled"] == said[name]["sampled, no cache"]
    return said


folder = decoder_dir(RUNS / "decoder")  # the course's pretrained decoder
said = speaking_llama(folder)


# %% [markdown]
# ## 7. A gated prefix: zero is not off, a gate at 0 is (pitfall 10)
#
# The third deep style, LLaMA-Adapter's zero-init gated prefix (`GatedPrefix`, PEFT's adaption
# prompt). A K/V prefix (lesson 08) is *joined*: its P keys and the tokens' own keys share one
# softmax. That is why no prefix can leave the model as it was: a key of zeros scores
# q . 0 = 0, and exp(0) = 1 is an ordinary weight. For one query whose real keys sum to
# Z = sum exp(score), P zero keys shrink every real weight by the same factor Z / (Z + P)
# (pitfall 4, lesson 08 §3). With zero values the context is then the frozen one times that factor.
#
# The gated prefix reads its keys under a softmax of their own and adds the result, scaled by a
# learnable gate g per layer that starts at 0 (`core/prefix.py`'s `Prefix(k, v, gate=g)`):
#
#     tokens' read   softmax(q K^T / sqrt(d)) V              [B, H, N, d]  untouched
#     prefix read    g * softmax(q K_p^T / sqrt(d)) V_p      [B, H, N, d]  its own softmax
#     context        tokens' read + prefix read              [B, H, N, d]
#
# Its rows are `[P, D]` per layer, turned into `K_p, V_p [B, H_kv, P, d]` by the layer's own
# projection. First the joined prefix of zeros, on layer 0 of the lesson's decoder:

# %%
@torch.no_grad()
def zero_prefix_is_not_off(model: LlamaDecoder, ids: torch.Tensor, P: int = 4) -> float:
    frozen = model(ids, output_attentions=True)
    prefix = KVPrefix(model.config, P)
    nn.init.zeros_(prefix.embedding.weight)  # every layer's K and V: [B, H_kv, P, d] of zeros
    joined = model.attach(prefix)(ids, output_attentions=True)
    model.detach_prompt()
    before, after = frozen.attentions[0], joined.attentions[0]  # [B, H, N, N], [B, H, N, P+N]
    kept = after[..., P:].sum(-1, keepdim=True)  # [B, H, N, 1]: Z / (Z + P), what the text keeps
    assert torch.allclose(after[..., P:], before * kept, atol=1e-6)  # every real weight times Z / (Z + P)
    print(f"layer 0, P={P} zero keys: the real keys keep {kept.mean():.3f} of a query's attention on average "
          f"({kept.min():.3f} to {kept.max():.3f}); each real weight is the frozen one times that share")
    gap = float((joined.logits - frozen.logits).abs().max())
    print(f"zero K/V prefix vs the frozen model: logits max |diff| {gap:.3f}")
    assert gap > 1e-2
    return gap


zero_gap = zero_prefix_is_not_off(model, ids)


# %% [markdown]
# Now a fresh gated prefix: rows drawn from N(0, 1), far from zero, and every gate at 0. The
# prefix read is g times something, so at g = 0 it is exactly zero, and the model is the frozen
# one bit for bit, on the fused path and on the explicit one. Open a gate and it is not.

# %%
@torch.no_grad()
def gate_at_zero_is_off(model: LlamaDecoder, ids: torch.Tensor, P: int = 4) -> float:
    gated = GatedPrefix(model.config, P)  # rows [L, P, D], gates [L] = 0
    for explicit in (False, True):  # the fused kernel, then the path that builds the probabilities
        frozen = model(ids, output_attentions=explicit).logits  # [B, N, V]
        with_gate = model.attach(gated)(ids, output_attentions=explicit).logits  # [B, N, V]
        model.detach_prompt()
        print(f"gates {gated.gates.tolist()}, rows of std {gated.rows.std():.2f}, explicit path {explicit}: "
              f"torch.equal(frozen, gated) = {torch.equal(frozen, with_gate)}")
        assert torch.equal(frozen, with_gate)
    gated.gates.fill_(0.5)
    opened = float((model.attach(gated)(ids).logits - frozen).abs().max())
    model.detach_prompt()
    print(f"gates at 0.5: logits max |diff| {opened:.3f}")
    assert opened > 1e-2
    return opened


open_gap = gate_at_zero_is_off(model, ids)


# %% [markdown]
# Training opens the gate. At g = 0 the rows get no gradient (their read is multiplied by 0),
# but g does: d context / d g = softmax(q K_p^T / sqrt(d)) V_p, not 0. So the first steps move
# the gates off 0, and the rows learn after them. A few steps of next-token loss on the lesson's
# batch, the decoder frozen (a fresh copy, so the sections above and below are untouched):

# %%
def training_opens_the_gate(ids: torch.Tensor, P: int = 4, steps: int = 8) -> list:
    model = tiny_llama(layers=3)
    gated = GatedPrefix(model.config, P)
    freeze_backbone(model.attach(gated))  # only model.prompt.* trains: rows [L, P, D] and gates [L]
    opt = torch.optim.AdamW(gated.parameters(), lr=5e-2, weight_decay=0.0)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = model(ids, labels=ids).loss
        loss.backward()
        if step == 0:
            print(f"step 0: |grad| of the rows {gated.rows.grad.abs().max():.1e}, "
                  f"of the gates {[f'{g:.1e}' for g in gated.gates.grad.abs().tolist()]}")
            assert not gated.rows.grad.any() and gated.gates.grad.all()
        opt.step()
        losses.append(loss.item())
        print(f"step {step}: loss {loss.item():.4f}, gates {[round(g, 3) for g in gated.gates.tolist()]}")
    assert (gated.gates.abs() > 0.01).all() and losses[-1] < 0.95 * losses[0]  # every gate open, the loss down
    return losses


losses = training_opens_the_gate(ids)


# %% [markdown]
# ## 8. The shapes, recorded
#
# llama-tiny, layer 0, B=6, N=7, P=5 (every letter a different size), a deep prompt and a K/V
# prefix: queries keep all H=4 heads; keys, values and the prefix have H_kv=2; the explicit path
# widens keys and values to H to score (`k_repeated`). RoPE turns q and k without changing a shape.

# %%
def trace_example(B=6, N=7, P=5, layers=3):
    model = tiny_llama(layers=layers)
    model.attach(KVPrefix(model.config, P, init_std=1.0))
    ids = torch.randint(0, model.config.vocab_size, (B, N))  # [B, N]
    dims = dims_for(model.config, B=B, N=N, P=P)
    with torch.no_grad():
        with ShapeTrace(dims=dims, layers=(0,)) as prefix:
            model(ids, output_attentions=True)
        model.attach(DeepPrompt(model.config, P))
        with ShapeTrace(dims=dims, layers=(0,)) as deep:
            model(ids, output_attentions=True)
    return prefix, deep


prefix_trace, deep_trace = trace_example()
print(side_by_side(deep_trace, prefix_trace, ("deep hidden-state prompt", "K/V prefix")))


# %% [markdown]
# ## What to remember
#
# - RoPE turns queries and keys by their positions; a score depends on distances only. There is
#   no position table, so nothing is added to a prompt row's embedding.
# - Grouped-query attention: H query heads, H_kv key/value heads. The cache and a K/V prefix are
#   `[B, H_kv, P, d]`; PEFT's table is `[P, L*2*H_kv*d]`. At a 1B shape a P=16 prefix trains
#   262,144 numbers (0.021%).
# - A prefix key has no position of its own: used as given it scores like a key at position 0
#   (PEFT's way, `rotate_keys=False`), so "real" and "shifted" are different models; turned on
#   purpose (`rotate_keys=True`) it sits just before the text, and the policies agree.
# - Hidden-state prompt rows are turned like any row; the bridge holds with
#   K = RoPE(RMSNorm(h) W_K).
# - Under one softmax a zero prefix is not off: P zero keys leave the text Z / (Z + P) of each
#   query's attention. A gated prefix reads its keys under a softmax of their own, times a gate
#   g that starts at 0: at the start the model is the frozen one exactly, and training opens g.
#
# ## Check your understanding
#
# 1. A query at position 10 and a key at position 7 give some score. Which of these pairs gives the
#    same score: (13, 10), (10, 10), (20, 7)?
#
#    <details><summary>Answer</summary>
#
#    (13, 10): RoPE turns q and k by angles proportional to their positions, and the score depends
#    on the difference only (distance 3 in both). (10, 10) is distance 0, (20, 7) distance 13.
#
#    </details>
#
# 2. In LLaMA 3.2 1B (L=16, H=32, H_kv=8, d=64, D=2048), how wide is one row of a K/V prefix table,
#    and why is it not `L*2*D`?
#
#    <details><summary>Answer</summary>
#
#    `L*2*H_kv*d` = `16*2*8*64` = 16,384. The prefix holds keys and values, and there are only H_kv = 8
#    key/value heads of d = 64 per layer (`H_kv*d` = 512, not D = 2048): the 32 query heads share them.
#
#    </details>
#
# 3. With `rotate_keys=False`, why do `positions="real"` and `positions="shifted"` give different
#    models, when for a shallow prompt they do not?
#
#    <details><summary>Answer</summary>
#
#    An unturned prefix key scores like a key at position 0. Moving the real tokens from 0.. to P..
#    changes their distance to it, so every score against the prefix changes. A shallow prompt's rows
#    are turned at their own positions, which move with the text: every distance stays the same.
#
#    </details>
#
# 4. The bridge on BERT uses K = h W_K + b_K. What is it on this block, and at which positions?
#
#    <details><summary>Answer</summary>
#
#    K = RoPE(RMSNorm(h) W_K) at the prompt rows' positions (-P..-1 under "real", 0..P-1 under
#    "shifted"), V = RMSNorm(h) W_V: the block normalises before attention (pre-norm) and turns keys
#    by position; it has no biases.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/15_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. `python -m minigpt_ptv2 trace --config llama-tiny --method prefix --B 2 --N 6 --P 4 --layers 0`:
#    find `k_repeated`, the grouped keys widened to H heads. How many query heads read each K/V head?
#    [`try_1`]
# 2. Build a `KVPrefix(config, 4, rotate_keys=True)` for GPT-2 (`preset("gpt2-tiny")`) and attach it to
#    a `GPT2Decoder`: read the error. [`try_2`]
# 3. `python -m minigpt_ptv2 params --config llama-1b --P 16`: which prompt method trains the
#    fewest numbers, and why is the K/V prefix smaller than the deep prompt here, when on BERT-base it
#    is twice as large? [`try_3`]
# 4. In section 3, measure the logits' gap between "real" and "shifted" for P = 1, 4 and 16 under
#    `rotate_keys=False`: does it grow with P? [`try_4`]
# 5. Give a fresh `GatedPrefix(model.config, 4)` rows of zeros and every gate 1: do the logits
#    change? Compare with section 7's zero K/V prefix. [`try_5`]
