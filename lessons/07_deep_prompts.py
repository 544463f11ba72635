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
# With seed 000's numbers: `[16, 20, 768] + [16, 128, 768] -> [16, 148, 768] -> layer ->
# [16, 148, 768] -> slice -> [16, 128, 768]`. We trace exactly that, rebuild the loop by hand,
# and look at two mistakes in popular write-ups: a 2-D mask handed to a layer, and "every
# layer" in the text but only the input layer in the code.

# %%
from __future__ import annotations

import os

import torch

from minigpt_ptv2 import BertEncoder, ShapeTrace, preset
from minigpt_ptv2.core.masks import build_keep
from minigpt_ptv2.core.prompt_rows import keys_in_front
from minigpt_ptv2.prompts import DeepPrompt, SoftPrompt, format_report, parameter_report

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")

# %% [markdown]
# ## 1. Seed 000's walk, recorded
#
# BERT-base shapes, random weights, two of the twelve layers (all layers look alike). The last
# row of the batch is padded, so the model builds the 4-D keep-mask `[B, 1, 1, P+N]`: the
# prompt columns are always kept, pad columns never.

# %%
def trace_example(B=16, N=128, P=20, layers=2, pad=8) -> ShapeTrace:
    torch.manual_seed(0)
    cfg = preset("bert-base").replace(num_hidden_layers=layers)
    model = BertEncoder(cfg, prompt=DeepPrompt(cfg, P)).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)  # [B, N]
    mask[-1, N - pad:] = 0
    with torch.no_grad(), ShapeTrace.for_model(model, B=B, N=N) as tr:
        model(ids, attention_mask=mask)
    return tr


# %% [markdown]
# ## 2. What trains: L prompts of `[P, D]`
#
# Only `deep.prompts` `[L, P, D]` learns. With BERT-base and P=20 that is 184,320 numbers,
# 0.17% of the backbone; the K/V prefix of lesson 08 is twice that.

# %%
def what_trains(P=20):
    print(format_report(parameter_report(preset("bert-base"), P, ["soft", "deep", "prefix"])))


# %% [markdown]
# ## 3. The loop, by hand
#
# The package's `stack.run_layers` is this loop plus bookkeeping. We run it ourselves with the
# model's own layers and prompts, and compare with the model's output.

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
#   difference, so the pads are down-weighted by a factor e = 2.7 instead of removed: the
#   model keeps reading padding, and nothing crashes to tell you.

# %%
def two_d_mask_mistake(P=4, N=6, H=2):
    torch.manual_seed(0)
    for B in (16, 1):
        scores = torch.randn(B, H, P + N, P + N)  # [B, H, P+N, P+N]
        padding = torch.ones(B, N)
        padding[:, -2:] = 0  # two pad tokens
        mask_2d = torch.cat([torch.ones(B, P), padding], dim=1)  # [B, P+N], 1 = keep
        try:
            wrong = (scores + mask_2d).softmax(-1)  # what a layer does with a 2-D 0/1 mask
        except RuntimeError as e:
            print(f"B={B:>2}: adding a [B, P+N] mask to [B, H, P+N, P+N] scores fails: {str(e).splitlines()[0]}")
            continue
        keep = build_keep(mask_2d.bool(), P + N)  # [B, 1, 1, P+N]
        right = scores.masked_fill(~keep, torch.finfo(scores.dtype).min).softmax(-1)
        none = scores.softmax(-1)
        print(f"B={B:>2}: it runs. Attention on the 2 pad keys: no mask {none[..., -2:].sum(-1).mean():.3f}, "
              f"2-D 0/1 mask {wrong[..., -2:].sum(-1).mean():.3f}, 4-D additive mask "
              f"{right[..., -2:].sum(-1).mean():.3f}")
        assert wrong[..., -2:].sum() > 0 and right[..., -2:].sum() == 0


# %% [markdown]
# ## 5. Seed 001's mistake: "every layer" in the text, one layer in the code (pitfall 7)
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
    with ShapeTrace(keep=("layer1.inject",)) as deep_tr:
        deep_model(ids)
    rows = deep_tr.tensors["layer1.inject"][:, :P]  # [B, P, D]
    free = torch.equal(rows, deep_model.prompt.prompts[1].expand(B, -1, -1))
    shallow_model = BertEncoder(cfg, prompt=SoftPrompt(cfg, P)).eval()
    shallow_model.load_state_dict(deep_model.state_dict(), strict=False)  # same backbone
    with ShapeTrace() as shallow_tr:
        shallow_model(ids)
    injected = lambda tr: [n for n in tr.names() if n.endswith((".prompt", ".inject"))]  # noqa: E731
    print(f"deep:    prompt rows entering layer 1 are deep.prompts[1]: {free}")
    print(f"deep:    prompts enter at {injected(deep_tr)}")
    print(f"shallow: prompts enter at {injected(shallow_tr)}")
    assert free and injected(shallow_tr) == ["shallow.prompt"]


# %%
def main():
    B, N, P = (2, 16, 4) if QUICK else (16, 128, 20)
    tr = trace_example(B, N, P, pad=N // 16 or 1)
    print(tr.table())
    print()
    print(tr.walk(0))
    print(tr.walk(1))
    print()
    what_trains()
    print()
    torch.manual_seed(0)
    cfg = preset("bert-tiny") if QUICK else preset("minilm")
    model = BertEncoder(cfg, prompt=DeepPrompt(cfg, P)).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)
    mask[-1, -3:] = 0
    with torch.no_grad():
        loop_by_hand(model, ids, mask)
        print()
        two_d_mask_mistake()
        print()
        every_layer_or_only_the_first()


# %% [markdown]
# ## What to remember
#
# - Deep prompts: at every layer, inject `[B, P, D]` before the `[B, N, D]` hidden states,
#   run the layer on P+N rows, slice the P rows off. Only `[L, P, D]` numbers train.
# - The prompt rows' *outputs* are thrown away at every layer; what the real tokens keep is
#   what they read from the prompt rows through attention (lesson 09 makes this exact).
# - A layer needs the additive 4-D mask `[B, 1, 1, P+N]`; a 2-D 0/1 mask either crashes or,
#   worse, silently stops masking anything.
# - "Every layer" must be true in the code: a prompt added only to the input embeddings is
#   shallow prompt tuning, whatever the text says.
#
# ## Try this
#
# - `python -m minigpt_ptv2 trace --method deep --B 16 --N 128 --P 20 --config bert-base --layers 0`
# - Set `pad=0` in `trace_example`: which row disappears, and why is that allowed?
# - Make `loop_by_hand` skip the slice at layer 0 only, and see the shapes fail at layer 1.
# - Add B = P+N to the loop in `two_d_mask_mistake`: it no longer raises. What does it compute?
# - Use `DeepPrompt(cfg, P, reparam=True)` and check that `layer_prompts()` is still `[L, P, D]`.

# %%
if __name__ == "__main__":
    main()
