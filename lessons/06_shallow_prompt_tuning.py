# %% [markdown]
# # Lesson 06 — Shallow prompt tuning
#
# The simplest prompt method: P trainable vectors `[P, D]`, placed in front of the input
# embeddings. The frozen model then runs on P+N rows, and only those P vectors learn.
#
#     word embeddings [B, N, D]  ->  cat(prompt [B, P, D], embeddings) [B, P+N, D]  ->  L layers
#
# Only the first layer sees the prompt directly; deeper layers see whatever the frozen layers
# made of it. That is the weakness deep prompts fix (lesson 07). Here we get the mechanics
# right, including three mistakes that popular code makes.

# %%
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from minigpt_ptv2 import GPT2Decoder, BertEncoder, ShapeTrace, preset
from minigpt_ptv2.prompts import SoftPrompt, pad_labels

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")

# %% [markdown]
# ## 1. Where the prompt goes
#
# `SoftPrompt` holds `weight [P, D]`. The encoder adds token-type row 0 to it, puts it in front
# of the real tokens' embeddings *before* LayerNorm (as PEFT does), and extends the padding
# mask with P ones. Real tokens keep positions 0..N-1 (`positions="real"`); the HF/PEFT
# convention `positions="shifted"` moves them to P..P+N-1, which makes the usable length
# shrink by P. We show that limit failing loudly rather than indexing past the table.

# %%
def position_policies(P=20):
    cfg = preset("bert-tiny")  # 64 positions
    model = BertEncoder(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 50))  # [1, 50]
    for policy in ("real", "shifted"):
        model.attach(SoftPrompt(cfg, P, positions=policy))
        try:
            n = model(ids).last_hidden_state.shape[1]
            print(f"positions={policy!r:<9} N=50, P={P}: ok, {n} real rows out")
        except ValueError as e:
            print(f"positions={policy!r:<9} N=50, P={P}: ValueError: {e}")
    model.detach_prompt()


# %% [markdown]
# ## 2. Pool after slicing (pitfall 2)
#
# After the prompt is prepended, row 0 of the hidden states is the first *virtual* token, not
# [CLS]. Code that prepends a prompt and then pools `last_hidden_state[:, 0]` reads a prompt
# vector and calls it the sentence. Our encoder drops the P virtual rows first, so
# `last_hidden_state` has N rows and row 0 is the real [CLS] again.
#
# With pretrained MiniLM we can see the difference: a small prompt should barely move the
# real [CLS] vector, while row 0 of the un-sliced output is something else entirely.

# %%
def backbone() -> BertEncoder:
    from minigpt_ptv2.pretrained import default_model_dir
    try:
        return BertEncoder.from_pretrained(default_model_dir())
    except FileNotFoundError as e:
        print(f"(no pretrained model: {e}; using random MiniLM-shaped weights)")
        return BertEncoder(preset("minilm")).eval()


def pool_after_slicing(model: BertEncoder, P=20, N=16):
    torch.manual_seed(0)
    ids = torch.randint(1000, model.config.vocab_size, (2, N))  # [B, N]
    ids[:, 0] = 101  # [CLS]
    plain_cls = model(ids).last_hidden_state[:, 0]  # [B, D]
    model.attach(SoftPrompt.from_vocab(model, P))  # P rows of the vocabulary as a start
    last = f"layer{len(model.layers) - 1}.out"
    with ShapeTrace(keep=(last,)) as tr:
        out = model(ids)
    full = tr.tensors[last]  # [B, P+N, D]: before the slice
    model.detach_prompt()
    right = out.last_hidden_state[:, 0]  # [B, D]: the real [CLS]
    wrong = full[:, 0]  # [B, D]: the first virtual token
    assert torch.equal(right, full[:, P]), "after slicing, row 0 is what was row P"
    cos = lambda a, b: F.cosine_similarity(a, b, dim=-1).mean().item()  # noqa: E731
    print(f"un-sliced output {list(full.shape)}, sliced {list(out.last_hidden_state.shape)}")
    print(f"cos(plain [CLS], prompted real [CLS]) = {cos(plain_cls, right):.3f}")
    print(f"cos(plain [CLS], prompted row 0)      = {cos(plain_cls, wrong):.3f}   <- a virtual token")
    assert cos(plain_cls, right) > cos(plain_cls, wrong)


# %% [markdown]
# ## 3. Seed 003's initialisation bug (pitfall 6)
#
# A popular soft-prompt snippet does, in effect:
#
# ```python
# init_prompt_value = torch.FloatTensor(2, 10).uniform_(-random_range, random_range)
# self.soft_prompt = nn.Embedding(n_tokens, self.config.n_embd)
# self.soft_prompt.weight = nn.parameter.Parameter(init_prompt_value)
# ```
#
# The `[2, 10]` is hard-coded: whatever `n_tokens` and `n_embd` are, the "embedding" now holds
# a 2 x 10 matrix, while `num_embeddings` still claims `n_tokens`. Nothing fails here; it fails
# later, in `torch.cat`, with a message about sizes that points nowhere near the cause.

# %%
def seed_003_bug(n_tokens=20, n_embd=768, B=4, N=16):
    soft = nn.Embedding(n_tokens, n_embd)
    soft.weight = nn.Parameter(torch.FloatTensor(2, 10).uniform_(-0.5, 0.5))
    print(f"nn.Embedding({n_tokens}, {n_embd}) now holds weight {list(soft.weight.shape)}, "
          f"num_embeddings still says {soft.num_embeddings}")
    learned = soft.weight.repeat(B, 1, 1)  # [B, 2, 10], not [B, P, D]
    try:
        torch.cat([learned, torch.zeros(B, N, n_embd)], dim=1)
    except RuntimeError as e:
        print(f"  ...much later, torch.cat fails: {str(e).splitlines()[0]}")
    try:
        SoftPrompt(preset("gpt2"), n_tokens, init=torch.empty(2, 10))
    except ValueError as e:
        print(f"  SoftPrompt refuses at construction: {e}")


# %% [markdown]
# ## 4. Decoders: label the prompt -100, or slice the logits?
#
# For a causal LM the prompt rows produce logits too. One way (seed 003, PEFT) keeps all P+N
# logits and extends the labels with P entries of -100, which cross-entropy ignores. Our
# decoder slices the logits back to the N real rows and uses the labels as they are.
#
# These are *almost* the same loss, and the difference is instructive. After the shift by one,
# the -100 version still contains one real term per row: the last prompt row predicting the
# first real token. Slicing drops it (nothing real comes before token 0). Label that token
# -100 too and the two agree exactly. Neither is wrong; but compare losses with PEFT knowing
# that its version trains the prompt to predict the first token and ours does not.

# %%
def labels_vs_slicing(P=5, B=2, N=12):
    torch.manual_seed(0)
    cfg = preset("gpt2-tiny")
    model = GPT2Decoder(cfg, prompt=SoftPrompt(cfg, P)).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    last = f"layer{cfg.num_hidden_layers - 1}.out"
    with ShapeTrace(keep=(last,)) as tr:
        out = model(ids, labels=ids)  # logits [B, N, V]
    full_logits = model.ln_f(tr.tensors[last]) @ model.wte.weight.T  # [B, P+N, V]

    def shifted_loss(labels):  # labels [B, P+N]; position t predicts token t+1
        return F.cross_entropy(full_logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                               ignore_index=-100)

    padded = pad_labels(ids, P)  # [B, P+N]: -100 over the prompt
    also_first = padded.clone()
    also_first[:, P] = -100  # the first real token, predicted by the last prompt row
    print(f"logits: ours {list(out.logits.shape)}, un-sliced {list(full_logits.shape)}")
    print(f"sliced logits, labels as they are:         {out.loss:.6f}  ({B * (N - 1)} terms)")
    print(f"P+N logits, -100 over the prompt (PEFT):   {shifted_loss(padded):.6f}  ({B * N} terms)")
    print(f"P+N logits, -100 over prompt + 1st token:  {shifted_loss(also_first):.6f}  ({B * (N - 1)} terms)")
    assert torch.allclose(out.loss, shifted_loss(also_first), atol=1e-6)
    assert not torch.allclose(out.loss, shifted_loss(padded), atol=1e-6)


# %% [markdown]
# ## 5. The shapes, recorded
#
# BERT-base shapes with seed 000's numbers (two of the twelve layers). The prompt joins at the
# embeddings, so every layer runs on P+N = 148 rows, and the only slice happens once, at the
# very end, before the hidden states and the pooler.

# %%
def trace_example(B=16, N=128, P=20, layers=2) -> ShapeTrace:
    torch.manual_seed(0)
    cfg = preset("bert-base").replace(num_hidden_layers=layers)
    model = BertEncoder(cfg, prompt=SoftPrompt(cfg, P)).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    with torch.no_grad(), ShapeTrace.for_model(model, B=B, N=N) as tr:
        model(ids)
    return tr


# %%
def main():
    torch.manual_seed(0)
    position_policies()
    print()
    with torch.no_grad():
        pool_after_slicing(backbone(), P=4 if QUICK else 20)
    print()
    seed_003_bug()
    print()
    with torch.no_grad():
        labels_vs_slicing()
    print()
    B, N = (2, 16) if QUICK else (16, 128)
    tr = trace_example(B, N)
    print(tr.table())
    print(tr.walk())


# %% [markdown]
# ## What to remember
#
# - A shallow prompt is `[P, D]`, broadcast to `[B, P, D]`, joined to the embeddings: the model
#   runs on P+N rows, and the mask grows by P ones.
# - Slice the P virtual rows off before pooling or predicting: row 0 is [CLS] only after that.
# - Build the prompt at the size you asked for, and check it: `[P, D]`, never a literal shape.
# - For decoders, "-100 labels over P+N logits" keeps one extra term per row (the first real
#   token, predicted by the last prompt row); "slice logits to N" drops it.
# - `positions="shifted"` (the HF/PEFT habit) costs P positions of usable length.
#
# ## Try this
#
# - Pool `full[:, 0]` instead in `pool_after_slicing` and train a classifier on it (lesson 10).
# - Initialise with `SoftPrompt.from_text(model, ids_of("classify the sentiment"))`.
# - Trace the decoder: `python -m minigpt_ptv2 trace --method soft --model decoder --config gpt2-tiny --B 2 --N 5 --P 3`.

# %%
if __name__ == "__main__":
    main()
