# %% [markdown]
# # Lesson 06 — Shallow prompt tuning
#
# The simplest prompt method: P trainable vectors `[P, D]`, placed in front of the input
# embeddings. The frozen model then runs on P+N rows, and only those P vectors learn.
#
#     word embeddings [B, N, D]  ->  cat(prompt [B, P, D], embeddings) [B, P+N, D]  ->  L layers
#
# (**B** batch size, **N** real tokens, **P** prompt length, **D** hidden size, **L** layers;
# later **H** heads of size **d** = D/H, and **V** the vocabulary size of a decoder's logits.)
#
# Only the first layer sees the prompt directly; deeper layers see whatever the frozen layers
# made of it. That is the weakness deep prompts fix (lesson 07). Here we get the mechanics
# right, including three mistakes that popular code makes.

# %%
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minigpt_ptv2 import BertEncoder, GPT2Decoder, ShapeTrace, preset
from minigpt_ptv2.prompts import SoftPrompt, pad_labels



# %% [markdown]
# ## 1. Where the prompt goes, and where the real tokens sit (pitfall 1)
#
# `SoftPrompt` holds `weight [P, D]`. The encoder adds token-type row 0 to it, puts it in front
# of the real tokens' embeddings *before* LayerNorm (as PEFT does), and extends the padding
# mask with P ones. Real tokens keep positions 0..N-1 (`positions="real"`); the HF/PEFT
# convention `positions="shifted"` moves them to P..P+N-1, which makes the usable length
# shrink by P. On `bert-tiny` (a table of 64 positions) with P=20, N=50 fits under "real" and
# fails under "shifted", loudly, rather than indexing past the table.

# %%
def position_policies(P=20, N=50) -> dict:
    cfg = preset("bert-tiny")  # 64 positions
    model = BertEncoder(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, N), generator=torch.Generator().manual_seed(0))  # [1, N]
    fits = {}
    for policy in ("real", "shifted"):
        model.attach(SoftPrompt(cfg, P, positions=policy))
        try:
            with torch.no_grad():
                n = model(ids).last_hidden_state.shape[1]
            print(f"positions={policy!r:<9} N={N}, P={P}: ok, {n} real rows out")
            fits[policy] = True
        except ValueError as e:
            print(f"positions={policy!r:<9} N={N}, P={P}: ValueError: {e}")
            fits[policy] = False
    model.detach_prompt()
    return fits


fits = position_policies()
assert fits == {"real": True, "shifted": False}, fits


# %% [markdown]
# ## 2. Pool after slicing (pitfall 2)
#
# After the prompt is prepended, row 0 of the hidden states is the first *virtual* token, not
# [CLS]. Code that prepends a prompt and then pools `last_hidden_state[:, 0]` reads a prompt
# vector and calls it the sentence. Our encoder drops the P virtual rows first, so
# `last_hidden_state` has N rows and row 0 is the real [CLS] again.
#
# With pretrained MiniLM (D=384, L=6) we can see the difference: the prompt moves the real
# [CLS] vector somewhat (its cosine to the unprompted [CLS] is about 0.8 with P=20, closer to 1
# with P=4), while row 0 of the un-sliced output is something else entirely (a
# cosine below 0.2).

# %%
def backbone() -> BertEncoder:
    from minigpt_ptv2.pretrained import default_model_dir
    try:
        return BertEncoder.from_pretrained(default_model_dir())
    except FileNotFoundError as e:
        print(f"(no pretrained model: {e}; using random MiniLM-shaped weights)")
        return BertEncoder(preset("minilm")).eval()


def pool_after_slicing(model: BertEncoder, P=20, N=16) -> dict:
    torch.manual_seed(0)
    ids = torch.randint(1000, model.config.vocab_size, (2, N))  # [B, N]
    ids[:, 0] = 101  # [CLS]
    last = f"layer{len(model.layers) - 1}.out"
    with torch.no_grad():
        plain_cls = model(ids).last_hidden_state[:, 0]  # [B, D]
        model.attach(SoftPrompt.from_vocab(model, P))  # P rows of the vocabulary as a start
        with ShapeTrace(keep=(last,)) as tr:
            out = model(ids)
    model.detach_prompt()
    full = tr.tensors[last]  # [B, P+N, D]: before the slice
    right = out.last_hidden_state[:, 0]  # [B, D]: the real [CLS]
    wrong = full[:, 0]  # [B, D]: the first virtual token
    assert torch.equal(right, full[:, P]), "after slicing, row 0 is what was row P"
    cos = {"real [CLS]": F.cosine_similarity(plain_cls, right, dim=-1).mean().item(),
           "row 0": F.cosine_similarity(plain_cls, wrong, dim=-1).mean().item()}
    print(f"un-sliced output {list(full.shape)}, sliced {list(out.last_hidden_state.shape)}")
    print(f"cos(plain [CLS], prompted real [CLS]) = {cos['real [CLS]']:.3f}")
    print(f"cos(plain [CLS], prompted row 0)      = {cos['row 0']:.3f}   <- a virtual token")
    assert cos["real [CLS]"] > 0.5 > cos["row 0"]
    return cos


encoder = backbone()
cosines = pool_after_slicing(encoder, P=20)


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
# `SoftPrompt` checks the shape where it is given.

# %%
def seed_003_bug(n_tokens=20, n_embd=768, B=4, N=16) -> tuple[str, str]:
    soft = nn.Embedding(n_tokens, n_embd)
    soft.weight = nn.Parameter(torch.empty(2, 10).uniform_(-0.5, 0.5))
    print(f"nn.Embedding({n_tokens}, {n_embd}) now holds weight {list(soft.weight.shape)}, "
          f"num_embeddings still says {soft.num_embeddings}")
    learned = soft.weight.repeat(B, 1, 1)  # [B, 2, 10], not [B, P, D]
    try:
        torch.cat([learned, torch.zeros(B, N, n_embd)], dim=1)
        late = ""
    except RuntimeError as e:
        late = str(e).splitlines()[0]
        print(f"  ...much later, torch.cat fails: {late}")
    try:
        SoftPrompt(preset("gpt2"), n_tokens, init=torch.empty(2, 10))
        early = ""
    except ValueError as e:
        early = str(e)
        print(f"  SoftPrompt refuses at construction: {early}")
    assert late and "[2, 10]" in early, "both must fail: late and vaguely, or early and by name"
    return late, early


found = seed_003_bug()


# %% [markdown]
# ## 4. Decoders: label the prompt -100, or slice the logits?
#
# For a causal LM the prompt rows produce logits too. One way (seed 003, PEFT) keeps all P+N
# logits and extends the labels with P entries of -100, which cross-entropy ignores. Our
# decoder slices the logits back to the N real rows and uses the labels as they are.
#
# These are *almost* the same loss, and the difference is instructive. After the shift by one,
# the -100 version still contains one real term per row: the last prompt row predicting the
# first real token (`B*N` terms instead of `B*(N-1)`). Slicing drops it (nothing real comes before
# token 0). Label that token -100 too and the two agree exactly. Neither is wrong; but compare
# losses with PEFT knowing that its version trains the prompt to predict the first token and
# ours does not.

# %%
def labels_vs_slicing(P=5, B=2, N=12):
    torch.manual_seed(0)
    cfg = preset("gpt2-tiny")
    model = GPT2Decoder(cfg, prompt=SoftPrompt(cfg, P)).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    last = f"layer{cfg.num_hidden_layers - 1}.out"
    with torch.no_grad():
        with ShapeTrace(keep=(last,)) as tr:
            out = model(ids, labels=ids)  # logits [B, N, V]
        full_logits = model.ln_f(tr.tensors[last]) @ model.wte.weight.T  # [B, P+N, V]

    def shifted_loss(labels):  # labels [B, P+N]; position t predicts token t+1
        return F.cross_entropy(full_logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                               ignore_index=-100)

    def terms(labels):  # how many (prediction, target) pairs the loss averages over
        return int((labels[:, 1:] != -100).sum())

    padded = pad_labels(ids, P)  # [B, P+N]: -100 over the prompt
    also_first = padded.clone()
    also_first[:, P] = -100  # the first real token, predicted by the last prompt row
    print(f"logits: ours {list(out.logits.shape)}, un-sliced {list(full_logits.shape)}")
    print(f"sliced logits, labels as they are:         {out.loss:.6f}  ({ids[:, 1:].numel()} terms)")
    print(f"P+N logits, -100 over the prompt (PEFT):   {shifted_loss(padded):.6f}  ({terms(padded)} terms)")
    print(f"P+N logits, -100 over prompt + 1st token:  {shifted_loss(also_first):.6f}  ({terms(also_first)} terms)")
    assert terms(padded) == B * N and terms(also_first) == B * (N - 1) == ids[:, 1:].numel()
    assert torch.allclose(out.loss, shifted_loss(also_first), atol=1e-6)
    assert not torch.allclose(out.loss, shifted_loss(padded), atol=1e-6)


labels_vs_slicing()


# %% [markdown]
# ## 5. The shapes, recorded
#
# BERT-base shapes (D=768, H=12, d=64, V=30,522, feed-forward width D_ff = 3,072) with seed
# 000's numbers B=16, N=128, P=20, three of the twelve layers (so that no two letters share a
# size; with two, lesson 08's prefix width `L*2*D` would be 3,072 = D_ff). The prompt joins at the
# embeddings, so every layer runs on P+N = 148 rows, and the only slice happens once, at the
# very end, before the hidden states and the pooler.

# %%
def trace_example(B=16, N=128, P=20, layers=3) -> ShapeTrace:
    torch.manual_seed(0)
    cfg = preset("bert-base").replace(num_hidden_layers=layers)
    model = BertEncoder(cfg, prompt=SoftPrompt(cfg, P)).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    with torch.no_grad(), ShapeTrace.for_model(model, B=B, N=N) as tr:
        model(ids)
    return tr


tr = trace_example(16, 128)
print(tr.table(collapse_repeats=True))
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
# ## Check your understanding
#
# 1. BERT-base with a soft prompt, B=16, N=128, P=20: what are the shapes of `embeddings.out`
#    and of `last_hidden_state`, and which row of `layer11.out` does the pooler read?
#
#    <details><summary>Answer</summary>
#
#    `embeddings.out` is `[16, 148, 768]` (`[B, P+N, D]`), `last_hidden_state` `[16, 128, 768]`
#    (`[B, N, D]`, after the slice). The pooler reads the real [CLS]: row 0 after the slice,
#    which is row P = 20 of `layer11.out`.
#
#    </details>
#
# 2. A BERT with 512 positions gets a soft prompt of P=20. What is the longest input it accepts
#    under `positions="real"`, and under `positions="shifted"`?
#
#    <details><summary>Answer</summary>
#
#    512 under "real" (the prompt rows take no positions; the real tokens keep 0..N-1) and
#    512 - 20 = 492 under "shifted" (the real tokens sit at P..P+N-1, so P+N <= 512).
#
#    </details>
#
# 3. In section 4 (B=2, N=12, P=5), PEFT's loss averages over 24 terms and ours over 22. Which
#    two terms are the extra ones, and what do they train the prompt to do?
#
#    <details><summary>Answer</summary>
#
#    One per row: the logits of the last prompt row (position P-1) scored against the first real
#    token. They train the prompt to predict how every text begins. Slicing the logits to the N
#    real rows has no row before token 0, so our loss has `B*(N-1)` = 22 terms.
#
#    </details>
#
# 4. Seed 003 assigns a `[2, 10]` Parameter to an `nn.Embedding(20, 768)`. Why does PyTorch not
#    object at that line?
#
#    <details><summary>Answer</summary>
#
#    `module.weight = nn.Parameter(...)` just registers a new tensor under that name; nothing
#    compares it with `num_embeddings` and `embedding_dim`, which are plain attributes kept from
#    construction. The shape only matters when the tensor is used, here in `torch.cat`, far from
#    the cause.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/06_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. In `pool_after_slicing`, draw two different prompts for the same sentences
#    (`SoftPrompt.from_vocab(model, P, generator=torch.Generator().manual_seed(1))`, then seed 2)
#    and compare each pooled vector across the two prompts: the real [CLS] and row 0 of the
#    un-sliced output. Which one follows the prompt rather than the sentence? [`try_1`]
# 2. Initialise a prompt from words, on `model = backbone()`:
#    `ids = WordPiece.from_model_dir().encode(["classify the sentiment"])["input_ids"][0, 1:-1]`
#    (`from minigpt_ptv2.data import WordPiece`; the slice drops [CLS] and [SEP]), then
#    `SoftPrompt.from_text(model, ids)`. What is P, and what are the prompt's rows? What does
#    `num_virtual=8` do? [`try_2`]
# 3. Trace the decoder:
#    `python -m minigpt_ptv2 trace --method soft --model decoder --config gpt2-tiny --B 2 --N 5 --P 3`.
#    Which rows are P+N long, which are N long, and what does the mask look like? [`try_3`]
# 4. Call `position_policies(N=44)` and `position_policies(N=45)`: what is the longest N that
#    `positions="shifted"` accepts with P=20 on `bert-tiny`? [`try_4`]
