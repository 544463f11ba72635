# %% [markdown]
# # Lesson 07 — Deep prompts: inject, process, slice
#
# P-Tuning v2's move: instead of one prompt at the input, give *every* layer its own prompt
# `[P, D]`. At layer i:
#
# 1. broadcast the layer's prompt to `[B, P, D]`;
# 2. **inject**: `cat(prompt, hidden)` -> `[B, P+N, D]`;
# 3. **process**: run the frozen layer on all P+N rows;
# 4. **slice**: keep the last N rows, `[B, N, D]`, for the next layer.
#
# ![Inject, process, slice (left) beside a K/V prefix (right)](../../figures/deep_styles.png)
#
# (**B** batch size, **N** real tokens, **P** prompt length, **D** hidden size, **L** layers,
# **H** attention heads of size **d** = D/H.)
#
# With seed 000's numbers: `[16, 20, 768] + [16, 128, 768] -> [16, 148, 768] -> layer ->
# [16, 148, 768] -> slice -> [16, 128, 768]`. We trace exactly that, rebuild the loop by hand,
# and look at two mistakes in popular write-ups: a 2-D mask handed to a layer, and "every
# layer" in the text but only the input layer in the code.

# %%
from __future__ import annotations

import math

import torch

from minigpt_ptv2 import BertEncoder, ShapeTrace, preset
from minigpt_ptv2.core.masks import build_keep
from minigpt_ptv2.core.prompt_rows import keys_in_front
from minigpt_ptv2.prompts import DeepPrompt, SoftPrompt, format_report, parameter_report



# %% [markdown]
# ## 1. Seed 000's walk, recorded
#
# BERT-base shapes (D=768, H=12, d=64), random weights, three of the twelve layers (all layers
# look alike; with two, lesson 08's prefix width `L*2*D` would equal the feed-forward width
# D_ff = 3,072, and a table could not tell them apart). The last row of the batch is padded, so
# the model builds the 4-D keep-mask `[B, 1, 1, P+N]`: the prompt columns are always kept, pad
# columns never.

# %%
def trace_example(B=16, N=128, P=20, layers=3, pad=8) -> ShapeTrace:
    torch.manual_seed(0)
    cfg = preset("bert-base").replace(num_hidden_layers=layers)
    model = BertEncoder(cfg, prompt=DeepPrompt(cfg, P)).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)  # [B, N]
    mask[-1, N - pad:] = 0
    with torch.no_grad(), ShapeTrace.for_model(model, B=B, N=N, keep=("mask.keep",)) as tr:
        model(ids, attention_mask=mask)
    return tr


def check_keep(tr: ShapeTrace, P: int, pad: int):
    keep = tr.tensors["mask.keep"][:, 0, 0]  # [B, P+N]
    expected = torch.ones_like(keep)
    expected[-1, keep.shape[1] - pad:] = False  # the pad columns of the last row
    assert torch.equal(keep, expected) and keep[:, :P].all()
    print(f"mask.keep: all {P} prompt columns kept in every row; "
          f"the last row drops its {pad} pad column{'s' if pad != 1 else ''}")


B, N, P = 16, 128, 20
tr = trace_example(B, N, P, pad=N // 16)
print(tr.table(collapse_repeats=True))
print(tr.walk(0))
check_keep(tr, P, pad=N // 16)


# %% [markdown]
# ## 2. What trains: L prompts of `[P, D]`
#
# Only `deep.prompts` `[L, P, D]` learns. With BERT-base (L=12) and P=20 that is
# 12 * 20 * 768 = 184,320 numbers, 0.17% of the backbone; the K/V prefix of lesson 08 is twice
# that (a key and a value per prompt row, instead of one hidden vector).

# %%
def what_trains(P=20) -> dict:
    cfg = preset("bert-base")
    rows = parameter_report(cfg, P, ["soft", "deep", "prefix"])
    print(format_report(rows))
    n = {r["method"]: r for r in rows}
    assert n["deep"]["trainable"] == cfg.num_hidden_layers * P * cfg.hidden_size == 184_320
    assert round(n["deep"]["percent"], 2) == 0.17 and n["prefix"]["trainable"] == 2 * n["deep"]["trainable"]
    return n


trainable = what_trains()


# %% [markdown]
# ## 3. The loop, by hand
#
# The package's `stack.run_layers` is this loop plus bookkeeping. We run it ourselves with the
# model's own layers and prompts, and compare with the model's output. A MiniLM-shaped model
# (D=384, L=6, H=12) with random weights.

# %%
def loop_by_hand(model: BertEncoder, ids: torch.Tensor, mask: torch.Tensor):
    P = model.prompt.num_virtual
    prompts = model.prompt.layer_prompts()  # [L, P, D]
    B, N = ids.shape
    x = model.embeddings(ids, torch.zeros_like(ids), torch.arange(N).expand(B, N))  # [B, N, D]
    keys = keys_in_front(mask.bool(), P)  # [B, P+N]: prompt columns always kept
    keep = build_keep(keys, P + N)  # [B, 1, 1, P+N] (None if nothing is padded)
    for i, layer in enumerate(model.layers):
        prompt = prompts[i].unsqueeze(0).expand(B, -1, -1)  # [B, P, D]
        x = torch.cat([prompt, x], dim=1)  # inject: [B, P+N, D]
        x, _, _ = layer(x, keep=keep)  # process: [B, P+N, D]
        x = x[:, P:]  # slice: [B, N, D]
    theirs = model(ids, attention_mask=mask).last_hidden_state  # [B, N, D]
    print(f"inject/process/slice by hand vs model: max |diff| = {(x - theirs).abs().max():.1e}")
    assert torch.allclose(x, theirs, atol=1e-5)


torch.manual_seed(0)
cfg = preset("minilm")
model = BertEncoder(cfg, prompt=DeepPrompt(cfg, P)).eval()
ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
mask = torch.ones(B, N, dtype=torch.long)  # [B, N]
mask[-1, -3:] = 0
with torch.no_grad():
    loop_by_hand(model, ids, mask)


# %% [markdown]
# ## 4. Seed 000's mask mistake: a 2-D mask where the layer needs 4-D (pitfall 7)
#
# Seed 000 extends the padding mask to `[B, P+N]` (ones for the prompt, then the 0/1 padding
# mask), and passes it straight to each layer, trusting that "the library builds the 4-D mask
# internally". It is the *model's* forward that turns a 2-D padding mask into the additive
# 4-D form `[B, 1, 1, P+N]` (0 keep, very negative drop); a layer called directly just adds
# what it is given to its scores `[B, H, P+N, P+N]`. Two things can then happen:
#
# - broadcasting lines `[B, P+N]` up with the *last two* axes `[P+N, P+N]`: for B=16 the sizes
#   clash and it crashes (the lucky case);
# - for B=1 it broadcasts silently: kept keys get +1, pad keys +0. Softmax only sees the
#   difference, so every pad key's weight, relative to a kept key's, is divided by e = 2.718
#   instead of going to zero. The pads are down-weighted, not masked: below, with 2 pads among 10
#   keys, their share of attention falls from 0.218 (no mask) to 0.098, where the 4-D mask gives
#   exactly 0. The model keeps reading padding, and nothing crashes to tell you.

# %%
def two_d_mask_mistake(P=4, N=6, H=2, batches=(16, 1)) -> dict:
    torch.manual_seed(0)
    found = {}
    for B in batches:
        scores = torch.randn(B, H, P + N, P + N)  # [B, H, P+N, P+N]
        padding = torch.ones(B, N)
        padding[:, -2:] = 0  # two pad tokens
        mask_2d = torch.cat([torch.ones(B, P), padding], dim=1)  # [B, P+N], 1 = keep
        try:
            wrong = (scores + mask_2d).softmax(-1)  # what a layer does with a 2-D 0/1 mask
        except RuntimeError as e:
            print(f"B={B:>2}: adding a [B, P+N] mask to [B, H, P+N, P+N] scores fails: {str(e).splitlines()[0]}")
            found[B] = "raises"
            continue
        keep = build_keep(mask_2d.bool(), P + N)  # [B, 1, 1, P+N]
        right = scores.masked_fill(~keep, torch.finfo(scores.dtype).min).softmax(-1)
        none = scores.softmax(-1)
        share = {name: p[..., -2:].sum(-1) for name, p in (("none", none), ("2-D", wrong), ("4-D", right))}
        print(f"B={B:>2}: it runs. Attention on the 2 pad keys: no mask {share['none'].mean():.3f}, "
              f"2-D 0/1 mask {share['2-D'].mean():.3f}, 4-D additive mask {share['4-D'].mean():.3f}")
        odds = {name: s / (1 - s) for name, s in share.items() if name != "4-D"}  # pads : kept keys, per row
        ratio = (odds["none"] / odds["2-D"]).mean().item()
        print(f"       pads' weight relative to the kept keys: divided by {ratio:.4f} (e = {math.e:.4f})")
        assert torch.all(share["4-D"] == 0) and torch.all(share["2-D"] > 0)
        assert torch.all(share["2-D"] < share["none"]) and torch.allclose(odds["none"] / odds["2-D"],
                                                                          torch.tensor(math.e), rtol=1e-4)
        found[B] = {name: s.mean().item() for name, s in share.items()}
    return found


shares = two_d_mask_mistake()


# %% [markdown]
# ## 5. Seed 001's mistake: every layer in the text, one layer in the code (pitfall 7)
#
# Seed 001 describes prefixes "in the input of each Transformer layer", but its code
# concatenates the prompt to the *input embeddings* once, then calls the model: that is
# shallow prompt tuning (with an MLP on the prompt, P-tuning v1 style), not P-Tuning v2.
#
# The difference is visible in what enters layer 1's prompt rows. With deep prompts they are
# *free parameters*, `deep.prompts[1]`, exactly. With a shallow prompt they are whatever the
# frozen layer 0 computed from the input prompt: the model decides, not the optimiser.

# %%
def every_layer_or_only_the_first(P=4, B=2, N=6):
    torch.manual_seed(0)
    cfg = preset("bert-tiny")
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    deep_model = BertEncoder(cfg, prompt=DeepPrompt(cfg, P)).eval()
    with torch.no_grad(), ShapeTrace(keep=("layer1.inject",)) as deep_tr:
        deep_model(ids)
    rows = deep_tr.tensors["layer1.inject"][:, :P]  # [B, P, D]
    free = torch.equal(rows, deep_model.prompt.prompts[1].expand(B, -1, -1))
    shallow_model = BertEncoder(cfg, prompt=SoftPrompt(cfg, P)).eval()
    shallow_model.load_state_dict(deep_model.state_dict(), strict=False)  # same backbone
    with torch.no_grad(), ShapeTrace() as shallow_tr:
        shallow_model(ids)
    injected = lambda tr: [n for n in tr.names() if n.endswith((".prompt", ".inject"))]  # noqa: E731
    print(f"deep:    prompt rows entering layer 1 are deep.prompts[1]: {free}")
    print(f"deep:    prompts enter at {injected(deep_tr)}")
    print(f"shallow: prompts enter at {injected(shallow_tr)}")
    assert free and injected(shallow_tr) == ["shallow.prompt"]


every_layer_or_only_the_first()


# %% [markdown]
# ## What to remember
#
# - Deep prompts: at every layer, inject `[B, P, D]` before the `[B, N, D]` hidden states,
#   run the layer on P+N rows, slice the P rows off. Only `[L, P, D]` numbers train.
# - The prompt rows' *outputs* are thrown away at every layer; what the real tokens keep is
#   what they read from the prompt rows through attention (lesson 09 makes this exact).
# - A layer needs the additive 4-D mask `[B, 1, 1, P+N]`. A 2-D 0/1 mask either crashes or,
#   worse, runs and only down-weights the pads (by a factor e relative to the kept keys): the
#   model still reads padding (0.098 of the attention here instead of 0).
# - "Every layer" must be true in the code: a prompt added only to the input embeddings is
#   shallow prompt tuning, whatever the text says.
#
# ## Check your understanding
#
# 1. BERT-base with a deep prompt, B=16, N=128, P=20: what are the shapes of layer 5's queries
#    and attention scores, and how many numbers train?
#
#    <details><summary>Answer</summary>
#
#    Queries `[16, 12, 148, 64]` (`[B, H, P+N, d]`): the prompt rows query too. Scores
#    `[16, 12, 148, 148]` (`[B, H, P+N, P+N]`). Trainable: L * P * D = 12 * 20 * 768 = 184,320.
#
#    </details>
#
# 2. Layer i's prompt rows are sliced off right after the layer. So what, of those P rows, do the
#    real tokens ever use?
#
#    <details><summary>Answer</summary>
#
#    Only the keys and values computed from them inside layer i's attention: the real tokens'
#    queries read them there. The prompt rows' own queries, attention outputs and feed-forward
#    outputs are computed and thrown away (P of the P+N query rows are wasted work). Lesson 09
#    turns this into an identity: a deep prompt is a K/V prefix with K and V tied through one h.
#
#    </details>
#
# 3. At B=1 the 2-D 0/1 mask adds +1 to kept keys and 0 to pad keys. Why do the pads still get
#    attention, and what must be added to a pad's score for it to get none?
#
#    <details><summary>Answer</summary>
#
#    Softmax does not change when every score moves by the same amount, so only the difference
#    between kept and pad keys counts: 1, which divides a pad's weight relative to a kept key by
#    e. To remove a pad, its score must go to -infinity relative to the others; the additive mask
#    uses the most negative float (0 for kept keys), so exp underflows to exactly 0.
#
#    </details>
#
# 4. Seed 001 concatenates its prompt to the input embeddings once. In a trace of that model,
#    which prompt rows appear, and how many numbers train on BERT-base with P=20 (ignoring its MLP)?
#
#    <details><summary>Answer</summary>
#
#    Only `shallow.prompt` `[B, P, D]` (and the slice at the end): no `layer{i}.prompt` or
#    `layer{i}.inject`. It trains P * D = 15,360 numbers, L = 12 times fewer than a deep prompt,
#    and deeper layers see the prompt only through what the frozen layers made of it.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/07_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. `python -m minigpt_ptv2 trace --method deep --B 16 --N 128 --P 20 --config bert-base --num-layers 3 --layers 0`:
#    which rows are P+N long, which are N long, and which is the only `[L, P, D]`? [`try_1`]
# 2. Set `pad=0` in `trace_example`: which row disappears, and why is that allowed? [`try_2`]
# 3. Make `loop_by_hand` skip the slice at layer 0 only, and see the shapes fail at layer 1. How
#    many rows does layer 1 get, and which check fails? [`try_3`]
# 4. Call `two_d_mask_mistake(batches=(16, 1, 10))`, adding B = P+N = 10: it no longer raises.
#    What does it compute? [`try_4`]
# 5. Build `DeepPrompt(preset("bert-base"), 20, reparam=True)`: is `layer_prompts()` still
#    `[L, P, D]`, and how many numbers train now? [`try_5`]
