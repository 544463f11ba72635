# %% [markdown]
# # Lesson 14 — Seed by seed: what each tutorial gets wrong
#
# This project started from five popular tutorials on P-Tuning v2 and prompt tuning, the
# *seeds*, numbered 000 to 004 (`lessons/README.md` says what each one is). Lesson 13 indexes
# the ten general pitfalls, each explained where it first comes up; here we go through the seeds
# one at a time, and every mistake we name is run (a general pitfall is linked to where it is
# explained, not explained again): the seed's own lines where they are plain PyTorch, and where they lean on
# HuggingFace's `BertModel` or `GPT2LMHeadModel`, the same computation on this package's
# models, with what the HF model does spelled out.
#
# | seed | what it gets wrong | section |
# |---|---|---|
# | 000 | garbled example ids, NER labels one position off; a 2-D mask handed to a layer | 1, 2 |
# | 001 | an MLP D wide instead of `L*2*D`; Q prefixed; "every layer" but a shallow prompt, which shifts positions and pools a virtual token | 3, 4 |
# | 002 | a `repeat` that crashes, a view without a head axis, an index tensor without a device; "hard for BERT" | 5, 6 |
# | 003 | a `[2, 10]` init; `repeat`; a pickled prompt; a forward that drops the cache and the positions | 7, 8 |
# | 004 | "P-tuning inserts prompts at multiple layers"; "the fewest parameters", "0.001%", "a few kilobytes" | 9 |
#
# The seeds get a lot right, too: seed 000's shape walk is exactly what lesson 07 traces (and
# section 2 runs its loop), and seed 002's attention formula prefixes only K and V. A mistake in
# a tutorial is a fine teacher as long as someone points at it.
#
# Letters: B batch size, N real tokens, P prompt or prefix length, D hidden size, L layers,
# H attention heads, d = D / H the head size, V vocabulary size. The tiny models are `bert-tiny`
# (D=24, L=3, H=4, d=6, V=120, 64 positions) and `gpt2-tiny` (D=24, L=3, H=4, d=6, V=130).

# %%
from __future__ import annotations

import io

import torch
from einops import rearrange
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from minigpt_ptv2 import BertEncoder, GPT2Decoder, ShapeTrace, preset
from minigpt_ptv2.core.masks import build_keep
from minigpt_ptv2.core.prompt_rows import keys_in_front
from minigpt_ptv2.data import CONLL_LABELS, WordPiece
from minigpt_ptv2.prompts import DeepPrompt, KVPrefix, SoftPrompt, format_report, make_method, parameter_report
from minigpt_ptv2.trace import dims_for, side_by_side
from minigpt_ptv2.viz import attention_maps



# %% [markdown]
# ## 1. Seed 000: the example inputs
#
# Seed 000 is a P-Tuning v2 walkthrough: deep hidden-state prompts on BERT-base, B=16, N=128,
# P=20, D=768. Its examples are where it goes wrong:
#
# - **The sentiment example's `input_ids` are garbled.** The list holds the literal text
#   `23 masterpiece` (so it is not even a list of ids), its 7595 is a different word, and the
#   final "." is missing: 8 ids and 8 mask ones where the sentence has 9 tokens.
# - **The NER example does not fit the uncased vocabulary.** Its ids decode to other words;
#   "Sundar" and "Pichai" are not single word pieces (each splits in two, so the sentence has
#   10 pieces plus [CLS] and [SEP], not 7 plus 2); and its labels are shifted by one: the 8 word
#   tags start on [CLS], which carries B-PER, although the note underneath says special tokens
#   get -100. Below, with our tokenizer (the shipped MiniLM's uncased WordPiece) and first-piece
#   labelling (a word's later pieces get -100).

# %%
SEED_000_SENTIMENT = {"input_ids": [101, 1996, 3185, 2001, 2019, 7595, "23 masterpiece", 102],
                      "attention_mask": [1, 1, 1, 1, 1, 1, 1, 1], "label": 1}  # as printed in the seed
SEED_000_NER = {"input_ids": [101, 24167, 25895, 2552, 2005, 8224, 1999, 3408, 102],
                "labels": [1, 2, 0, 0, 3, 0, 4, 0, -100]}
SEED_000_SCHEME = {"O": 0, "B-PER": 1, "I-PER": 2, "B-ORG": 3, "B-LOC": 4}  # "PER=1,2; ORG=3; LOC=4; O=0"
SENTENCE = "The movie was an absolute masterpiece."
SUNDAR_WORDS = ["Sundar", "Pichai", "works", "for", "Google", "in", "California", "."]
SUNDAR_TAGS = ["B-PER", "I-PER", "O", "O", "B-ORG", "O", "B-LOC", "O"]


# %%
def seed_000_sentiment_ids(tok: WordPiece) -> list[int]:
    theirs = SEED_000_SENTIMENT["input_ids"]
    try:
        torch.tensor(theirs)
        raise AssertionError("a list holding text cannot become a tensor of ids")
    except TypeError as e:
        print(f"torch.tensor(seed 000's input_ids): TypeError: {e}")
    numbers = [i for i in theirs if isinstance(i, int)]
    ours = tok.encode([SENTENCE])["input_ids"][0].tolist()  # [N]
    print(f"its numbers decode to {tok.tokens(numbers)}")
    print(f"the uncased vocabulary gives {len(ours)} ids: {ours}")
    print(f"                             {tok.tokens(ours)}")
    assert tok.tokens([7595]) != ["absolute"] and 1012 not in numbers and tok.tokens([1012]) == ["."]
    assert len(SEED_000_SENTIMENT["attention_mask"]) == 8 and len(ours) == 9
    return ours


def seed_000_ner_example(tok: WordPiece) -> dict:
    pairs = lambda ts, ls: "  ".join(f"{t}:{n}" for t, n in zip(ts, ls))  # noqa: E731
    names = {v: k for k, v in SEED_000_SCHEME.items()} | {-100: "-100"}
    theirs = tok.tokens(SEED_000_NER["input_ids"])
    print(f"seed 000: {pairs(theirs, [names[x] for x in SEED_000_NER['labels']])}")
    ours = tok.encode_words([SUNDAR_WORDS], [[CONLL_LABELS.index(t) for t in SUNDAR_TAGS]])
    labels = ours["labels"][0].tolist()  # [N]: -100 on [CLS], [SEP] and non-first pieces
    our_names = [CONLL_LABELS[x] if x >= 0 else "-100" for x in labels]
    print(f"ours:     {pairs(tok.tokens(ours['input_ids'][0].tolist()), our_names)}")
    pieces = {w: tok.tokens(tok.encode_words([[w]])["input_ids"][0].tolist()[1:-1]) for w in ("Sundar", "Pichai")}
    print(f"word pieces: {pieces}; the seed's 8 word tags sit on positions 0-7, [CLS] first")
    assert theirs[1:3] != ["sun", "##dar"] and all(len(p) == 2 for p in pieces.values())
    assert theirs[0] == "[CLS]" and SEED_000_NER["labels"][0] != -100
    assert SEED_000_NER["labels"][:8] == [SEED_000_SCHEME[t] for t in SUNDAR_TAGS]  # shifted onto [CLS]
    assert labels == [-100, 1, -100, 2, -100, 0, 0, 3, 0, 5, 0, -100]
    return ours


tok = WordPiece.from_model_dir()
seed_000_sentiment_ids(tok)
labels = seed_000_ner_example(tok)


# %% [markdown]
# ## 2. Seed 000: the loop is right, the mask it hands each layer is not
#
# Its forward pass is the inject, process, slice loop of lesson 07: prepend the layer's prompt,
# run the layer on P+N rows, slice P rows off. Run with a proper mask, it computes exactly what
# our `DeepPrompt` computes, and its `hidden_states[:, 0]` is the real [CLS], because the loop
# slices after every layer, the last included. (It feeds that raw state to its head, while our
# heads read `pooler_output`, BERT's dense + tanh over the same [CLS]: both are common, but
# compare like with like.)
#
# %%
@torch.no_grad()
def seed_000_loop(P=3, N=6, B=2):
    cfg = preset("bert-tiny")
    torch.manual_seed(0)
    model = BertEncoder(cfg, prompt=DeepPrompt(cfg, P)).eval()
    ids = torch.randint(1, cfg.vocab_size, (B, N))  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)
    mask[-1, -2:] = 0  # the last row ends with two pads
    ours = model(ids, attention_mask=mask).last_hidden_state[:, 0]  # [B, D]
    hidden_states = model.embeddings(ids, torch.zeros_like(ids), torch.arange(N)[None])  # [B, N, D]
    keys = torch.cat([torch.ones(B, P, dtype=torch.bool), mask.bool()], dim=1)  # [B, P+N]
    keep = build_keep(keys, P + N)  # [B, 1, 1, P+N]: the 4-D form a layer needs
    for i, layer in enumerate(model.layers):  # seed 000's loop
        prompt = model.prompt.prompts[i].unsqueeze(0).expand(B, -1, -1)  # [B, P, D]
        hidden_states = torch.cat([prompt, hidden_states], dim=1)  # [B, P+N, D]
        hidden_states = layer(hidden_states, keep=keep).hidden
        hidden_states = hidden_states[:, P:, :]  # [B, N, D]
    gap = float((hidden_states[:, 0] - ours).abs().max())
    print(f"seed 000's loop (with a 4-D mask) vs our DeepPrompt encoder: [CLS] max |diff| {gap:.1e}")
    assert gap < 1e-5


seed_000_loop()


# %% [markdown]
# **The mistake: a 2-D mask handed to a single layer** (pitfall 7, explained and measured in
# [lesson 07 §4](07_deep_prompts.ipynb#4.-Seed-000's-mask-mistake:-a-2-D-mask-where-the-layer-needs-4-D-(pitfall-7))):
# it extends the padding mask to `[B, P+N]` and passes it to `layer(...)`, trusting that "the
# transformers library internally creates the 4D attention mask". Its own lines, at its B=16 and at B=1:

# %%
def seed_000_two_d_mask(P=4, N=6, H=2):
    torch.manual_seed(0)
    for B in (16, 1):
        attention_mask = torch.ones(B, N)
        attention_mask[0, -2:] = 0  # example 0 ends with two pads
        prompt_attention_mask = torch.ones(B, P)  # seed 000's two lines
        extended_attention_mask = torch.cat([prompt_attention_mask, attention_mask], dim=1)  # [B, P+N]
        scores = torch.randn(B, H, P + N, P + N)  # what the layer's attention computes, [B, H, P+N, P+N]
        try:
            probs = (scores + extended_attention_mask).softmax(-1)  # what it does with the mask
        except RuntimeError as e:
            print(f"B={B:>2}: RuntimeError: {str(e).splitlines()[0]}")
            continue
        none = scores.softmax(-1)
        share = lambda p: float(p[..., -2:].sum(-1).mean())  # noqa: E731
        print(f"B={B:>2}: it runs; the 2 pad keys get {share(probs):.3f} of the attention (no mask at all: "
              f"{share(none):.3f}; a 4-D mask: 0)")
        assert 0.01 < share(probs) < share(none)


seed_000_two_d_mask()


# %% [markdown]
# ## 3. Seed 001: an MLP D wide, and queries with a prefix
#
# Seed 001 is a short P-Tuning v2 explainer: the attention formula and a BERT model with a
# prefix MLP.
#
# - **The MLP's output is D wide, not `L*2*D`.** Its `PrefixEncoder` maps `[P, D]` to `[P, D]`:
#   one input prompt. A P-Tuning v2 (prefix-tuning) MLP has to produce every layer's keys and
#   values, `[P, L*2*D]`. Below, its class as written next to our `KVPrefix(projection=True)`,
#   at BERT-base sizes (L=12, D=768), on the meta device (shapes and counts, no memory).
# - **Q prefixed in the formula** (pitfall 3, explained in
#   [lesson 08 §2](08_kv_prefixes.ipynb#2.-Q-is-never-prefixed-(pitfall-3))): run below with its own
#   order `[X W; P]`.

# %%
class Seed001PrefixEncoder(nn.Module):
    """Seed 001's PrefixEncoder, as written: "Use MLP to generate prefix embeddings"."""

    def __init__(self, prefix_length, hidden_size):
        super().__init__()
        self.embedding = nn.Embedding(prefix_length, hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, hidden_size))

    def forward(self, batch_size):
        prefix_tokens = torch.arange(self.embedding.num_embeddings).to(self.embedding.weight.device)
        prefix_embeds = self.embedding(prefix_tokens)  # [m, d]
        prefix_embeds = self.mlp(prefix_embeds)
        return prefix_embeds.unsqueeze(0).expand(batch_size, -1, -1)  # [B, m, d]


def seed_001_mlp_width(P=20, B=16):
    cfg = preset("bert-base")
    D, L = cfg.hidden_size, cfg.num_hidden_layers
    with torch.device("meta"):  # shapes and counts only: nothing is allocated
        seed = Seed001PrefixEncoder(P, D)
        theirs = seed(B)  # [B, P, D]: one prompt, for the input
        prefix = KVPrefix(cfg, P, projection=True)
        ours = prefix.flat()  # [P, L*2*D]: K and V for every layer and head
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"seed 001's MLP: {count(seed):,} parameters -> {list(theirs.shape)} per batch = [B, P, D]: "
          f"{theirs[0].numel():,} numbers, all at the input")
    print(f"prefix MLP:     {count(prefix):,} parameters -> {list(ours.shape)} = [P, L*2*D]: {ours.numel():,} "
          f"numbers, P keys and P values for every layer and head")
    assert theirs.shape == (B, P, D) and ours.shape == (P, L * 2 * D)


seed_001_mlp_width()


# %%
def seed_001_prefixed_queries(B=2, H=4, N=7, P=5, d=6):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, B, H, N, d)  # X W_Q, X W_K, X W_V, split into heads
    pq, pk, pv = torch.randn(3, B, H, P, d)  # P_Q, P_K, P_V
    K, V = torch.cat([k, pk], 2), torch.cat([v, pv], 2)  # [X W_K; P_K], [X W_V; P_V]: [B, H, N+P, d]
    attend = lambda q_: torch.softmax(q_ @ K.transpose(-1, -2) / d ** 0.5, -1) @ V  # noqa: E731
    theirs = attend(torch.cat([q, pq], 2))  # [X W_Q; P_Q]: [B, H, N+P, d]
    kv_only = attend(q)  # [B, H, N, d]
    x = torch.randn(B, N, H * d)  # the residual stream [B, N, D]
    try:
        x + theirs.transpose(1, 2).flatten(2)
        raise AssertionError("N+P rows cannot be added to N")
    except RuntimeError as e:
        print(f"seed 001's formula: {list(theirs.shape)} = [B, H, N+P, d]; x + attention: {str(e).splitlines()[0]}")
    gap = float((theirs[:, :, :N] - kv_only).abs().max())
    print(f"its N real rows vs K/V-only attention: max |diff| {gap:.1e}: the P prefix queries changed nothing")
    assert gap <= 1e-6


seed_001_prefixed_queries()


# %% [markdown]
# ## 4. Seed 001: its model is a shallow prompt
#
# Its text says prefixes go "into the input of each Transformer layer"; its model concatenates
# the MLP output to the word embeddings once and calls `BertModel(inputs_embeds=...)`. That is
# shallow prompt tuning (P-tuning v1 style, with an MLP), not P-Tuning v2. We run its forward
# with our encoder standing in for `BertModel`, spelling out what `BertModel` does to
# `inputs_embeds` (adds token type 0 and positions 0..P+N-1 to every row, then LayerNorm), and
# find three consequences of that one line:
#
# - the prompt enters once: the forward equals our `SoftPrompt(positions="shifted")`, whose trace
#   has one `shallow.prompt` row and no per-layer `inject` (pitfall 7,
#   [lesson 07 §5](07_deep_prompts.ipynb#5.-Seed-001's-mistake:-every-layer-in-the-text,-one-layer-in-the-code-(pitfall-7)));
# - the real tokens sit at P..P+N-1, so the longest input is the position table's length minus
#   P (pitfall 1, [lesson 06 §1](06_shallow_prompt_tuning.ipynb#1.-Where-the-prompt-goes,-and-where-the-real-tokens-sit-(pitfall-1)));
# - `last_hidden_state[:, 0]` is the first virtual token, not [CLS] (pitfall 2,
#   [lesson 06 §2](06_shallow_prompt_tuning.ipynb#2.-Pool-after-slicing-(pitfall-2))).

# %%
def seed_001_forward(model: BertEncoder, prefix_encoder: Seed001PrefixEncoder, input_ids, attention_mask):
    """Seed 001's PTuningV2Model.forward up to `last_hidden_state` [B, P+N, D]."""
    batch_size = input_ids.size(0)
    e = model.embeddings
    inputs_embeds = e.word_embeddings(input_ids)  # [B, N, D]
    prefix_embeds = prefix_encoder(batch_size)  # [B, P, D]
    inputs_embeds = torch.cat([prefix_embeds, inputs_embeds], dim=1)  # [B, P+N, D]
    prefix_mask = torch.ones(batch_size, prefix_embeds.shape[1])
    attention_mask = torch.cat([prefix_mask, attention_mask], dim=1)  # [B, P+N]
    # what BertModel(inputs_embeds=..., attention_mask=...) does with them:
    positions = torch.arange(inputs_embeds.shape[1])[None]  # [1, P+N]: 0..P+N-1 for every row
    x = e.finish(inputs_embeds + e.token_type_embeddings.weight[0] + e.position_embeddings(positions))
    keep = build_keep(attention_mask.bool(), x.shape[1])  # [B, 1, 1, P+N]
    for layer in model.layers:
        x = layer(x, keep=keep).hidden
    return x  # [B, P+N, D]; the seed classifies x[:, 0]


# %%
@torch.no_grad()
def seed_001_is_shallow(P=3, N=6, B=2):
    cfg = preset("bert-tiny")
    torch.manual_seed(0)
    model = BertEncoder(cfg).eval()
    encoder = Seed001PrefixEncoder(P, cfg.hidden_size)
    ids = torch.randint(1, cfg.vocab_size, (B, N))  # [B, N]
    mask = torch.ones(B, N)
    mask[-1, -2:] = 0
    theirs = seed_001_forward(model, encoder, ids, mask)  # [B, P+N, D]
    model.attach(SoftPrompt(cfg, P, init=encoder(1)[0], positions="shifted"))
    with ShapeTrace() as tr:
        ours = model(ids, attention_mask=mask).last_hidden_state  # [B, N, D]
    gap = float((theirs[:, P:] - ours).abs().max())
    entries = (tr.names().count("shallow.prompt"), sum(n.endswith(".inject") for n in tr.names()))
    print(f"seed 001's forward vs our SoftPrompt(positions='shifted'): real rows max |diff| {gap:.1e}; "
          f"the prompt joins the input {entries[0]}x, the layers {entries[1]}x")
    assert gap < 1e-5 and entries == (1, 0)
    row0 = float((theirs[:, 0] - ours[:, 0]).abs().max())
    print(f"its last_hidden_state[:, 0] is a virtual token: {row0:.2f} away from [CLS] (row P: "
          f"{float((theirs[:, P] - ours[:, 0]).abs().max()):.1e})")
    assert row0 > 0.1
    limit = cfg.max_position_embeddings  # 64 here, 512 on BERT
    for n in (limit - P, limit - P + 1):
        try:
            seed_001_forward(model, encoder, torch.randint(1, cfg.vocab_size, (1, n)), torch.ones(1, n))
            print(f"N={n}: runs (positions 0..{n + P - 1})")
            assert n + P <= limit
        except IndexError as e:
            print(f"N={n}: IndexError: {e} (the position table has {limit} rows; P+N = {n + P})")
            assert n + P > limit
    model.detach_prompt()


seed_001_is_shallow()


# %% [markdown]
# ## 5. Seed 002: a reshape that crashes, no head axis, and an index without a device
#
# Seed 002, a P-Tuning v2 note in Russian, gets the idea right: K and V get the prefix, Q does
# not. Its `PTuningV2Prefix` class does not run:
#
# - **The `repeat` crashes.** After `permute(...).unsqueeze(1)` the tensor has 5 axes;
#   `.repeat(1, batch_size, 1, 1)` gives 4 sizes and raises. Given 5, the batch lands *before*
#   the K/V axis, `[L, B, 2, P, d_kv]`, not after it as its comment says.
# - **`view(n, L, 2, d_kv)` has no head axis.** Attention needs `[B, H, P, d]` per layer: the
#   D axis must still be split into heads, as (H, d), the order the layer splits its own keys;
#   `(d, H)` has the same shape, raises nothing, and scatters the numbers over the wrong heads.
#   (If `d_kv` means the head size d, the MLP makes H times too few numbers.)
# - **`repeat` over the batch**: B copies where `expand` makes a view (pitfall 5,
#   [lesson 08 §5](08_kv_prefixes.ipynb#5.-Compute-once,-then-expand-(pitfall-5),-measured)).
# - **`torch.arange(n)` without a device.** The indices are built on the CPU whatever device the
#   weights are on; on a GPU the lookup then fails ("Expected all tensors to be on the same
#   device"). This machine may have no GPU, so we show the cause: the class built on the `meta`
#   device, where its weights go, while the index it builds stays on the CPU (and, with a GPU,
#   the crash itself). `KVPrefix` builds no index at all: it reads its weight, so everything
#   follows the weight's device (`tests/test_cuda.py` runs it on a GPU when there is one).

# %%
class Seed002Prefix(nn.Module):
    """Seed 002's PTuningV2Prefix, as written."""

    def __init__(self, num_virtual_tokens, num_layers, d_model, d_kv):
        super().__init__()
        self.prompt_embed = nn.Embedding(num_virtual_tokens, d_model)
        self.prefix_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.Tanh(),
                                        nn.Linear(d_model, 2 * num_layers * d_kv))
        self.num_layers = num_layers
        self.d_kv = d_kv

    def forward(self, batch_size):
        n = self.prompt_embed.num_embeddings
        prompts = self.prompt_embed(torch.arange(n))
        prompts = self.prefix_mlp(prompts)
        prompts = prompts.view(n, self.num_layers, 2, self.d_kv)
        prompts = prompts.permute(1, 2, 0, 3).unsqueeze(1).repeat(1, batch_size, 1, 1)
        return prompts  # [L, 2 (K/V), B, n, d_kv]


# %%
@torch.no_grad()
def seed_002_prefix(P=5, B=4):
    cfg = preset("bert-tiny")  # D=24, L=3, H=4, d=6
    D, L, H = cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads
    torch.manual_seed(0)
    try:
        Seed002Prefix(P, L, D, D)(batch_size=B)
        raise AssertionError("seed 002's repeat has too few sizes")
    except RuntimeError as e:
        print(f"seed 002's forward: RuntimeError: {str(e).splitlines()[0]}")
    prefix = KVPrefix(cfg, P)
    flat = prefix.flat()  # [P, L*2*D]: an MLP output with d_kv = D, laid out (l two d) as the seed's view
    theirs = flat.view(P, L, 2, D).permute(1, 2, 0, 3).unsqueeze(1)  # [L, 1, 2, P, D]
    repeated = theirs.repeat(1, B, 1, 1, 1)  # with 5 sizes: [L, B, 2, P, D]
    expanded = theirs.expand(-1, B, -1, -1, -1)  # the same values, a view
    print(f"with 5 sizes it is {list(repeated.shape)} = [L, B, 2, P, D], not the commented [L, 2, B, P, D]; "
          f"repeat {repeated.untyped_storage().nbytes():,} bytes, expand {expanded.untyped_storage().nbytes():,}")
    assert repeated.shape == (L, B, 2, P, D) and torch.equal(repeated, expanded)
    assert repeated.untyped_storage().nbytes() == B * expanded.untyped_storage().nbytes()
    right = rearrange(theirs[:, 0], "l two p (h d) -> l two h p d", h=H)  # [L, 2, H, P, d]
    wrong = rearrange(theirs[:, 0], "l two p (d h) -> l two h p d", h=H)  # same shape, wrong heads
    kv = prefix.layer_kv()  # [L, 2, H, P, d]: what our layers read
    print(f"split D as (H, d): equals KVPrefix.layer_kv() {list(kv.shape)}: {torch.equal(right, kv)}; "
          f"as (d, H): {torch.equal(wrong, kv)}")
    assert torch.equal(right, kv) and not torch.equal(wrong, kv)


seed_002_prefix()


# %%
def seed_002_index_device(P=5):
    cfg = preset("bert-tiny")
    D, L = cfg.hidden_size, cfg.num_hidden_layers
    with torch.device("meta"):  # stands in for a GPU: weights built there, nothing allocated
        seed = Seed002Prefix(P, L, D, D)
        ours = KVPrefix(cfg, P).kv_prefix(2)[0][0]  # [B, H, P, d]
    index = torch.arange(seed.prompt_embed.num_embeddings)  # the index its forward builds
    print(f"seed 002: weights on {seed.prompt_embed.weight.device}, its index on {index.device}; "
          f"our prefix keys on {ours.device}, the weight's device")
    assert index.device.type == "cpu" != seed.prompt_embed.weight.device.type and ours.device.type == "meta"
    if torch.cuda.is_available():
        try:
            Seed002Prefix(P, L, D, D).cuda()(batch_size=2)
        except RuntimeError as e:
            print(f"on {torch.cuda.get_device_name()}: RuntimeError: {str(e).splitlines()[0]}")
    else:
        print("no GPU here: on one, the embedding lookup of a CPU index with CUDA weights raises")


seed_002_index_device()


# %% [markdown]
# ## 6. Seed 002: "hard to implement for bidirectional models (BERT)"
#
# It is the easy case: the prefix is the same concatenation onto K and V, and the encoder's
# keep-mask is one row shared by all queries, `[B, 1, 1, P+N]`, where a decoder needs the causal
# `[B, 1, N, P+N]`. Below, both masks for P=2 prefix keys and N=4 tokens (the last one a pad),
# and every layer of our bidirectional encoder reading its prefix.

# %%
@torch.no_grad()
def bidirectional_is_the_easy_case(P=2, N=4):
    keys = keys_in_front(torch.tensor([[True] * (N - 1) + [False]]), P)  # [1, P+N]: last token padded
    show = lambda m: " | ".join("".join(str(int(v)) for v in row) for row in m[0, 0])  # noqa: E731
    encoder_keep = build_keep(keys, N)  # [1, 1, 1, P+N]
    decoder_keep = build_keep(keys, N, causal=True)  # [1, 1, N, P+N]
    print(f"keep-mask, encoder {list(encoder_keep.shape)}: {show(encoder_keep)}   (one row for every query)")
    print(f"keep-mask, decoder {list(decoder_keep.shape)}: {show(decoder_keep)}")
    cfg = preset("bert-tiny")
    torch.manual_seed(0)
    model = BertEncoder(cfg, prompt=KVPrefix(cfg, P)).eval()
    ids = torch.randint(1, cfg.vocab_size, (1, N))  # [1, N]
    mass = attention_maps(model, {"input_ids": ids, "attention_mask": keys[:, P:].long()}).mass()  # [L, H]
    print(f"our bidirectional encoder with a K/V prefix: share of attention on the prefix per layer "
          f"{[round(float(m), 2) for m in mass.mean(1)]}")
    assert encoder_keep.shape == (1, 1, 1, P + N) and (mass > 0).all()


bidirectional_is_the_easy_case()


# %% [markdown]
# ## 7. Seed 003: a `[2, 10]` initialisation, `repeat`, and a pickled prompt
#
# Seed 003 is a blog post on prompt, prefix and P-tuning; its soft-prompt code is a mixin for
# HF's GPT-2.
#
# - **`initialize_soft_prompt` builds a `[2, 10]` tensor** whatever `n_tokens` and the
#   embedding size (pitfall 6, [lesson 06 §3](06_shallow_prompt_tuning.ipynb#3.-Seed-003's-initialisation-bug-(pitfall-6))).
#   Below with its own lines, at GPT-2's D=768, n_tokens=20.
# - **`repeat` over the batch** for the soft prompt: B copies of `[P, D]` (pitfall 5,
#   [lesson 08 §5](08_kv_prefixes.ipynb#5.-Compute-once,-then-expand-(pitfall-5),-measured)).
# - **It saves the prompt with `torch.save` and loads it with `torch.load`**: a pickle of the
#   whole `nn.Embedding` module. Since PyTorch 2.6, `torch.load` refuses it by default
#   (`weights_only=True`); forcing `weights_only=False` runs whatever calls the file contains
#   (below, a harmless `print` smuggled into a file).
#   A prompt is a tensor: we store tensors with safetensors (names, shapes, dtypes and raw
#   numbers, nothing to execute), as lesson 10's checkpoint does.

# %%
def seed_003_init_and_repeat(n_tokens=20, n_embd=768, B=8, N=5):
    soft_prompt = nn.Embedding(n_tokens, n_embd)  # initialize_soft_prompt, as written
    init_prompt_value = torch.FloatTensor(2, 10).uniform_(-0.5, 0.5)
    soft_prompt.weight = nn.parameter.Parameter(init_prompt_value)
    print(f"after initialize_soft_prompt(n_tokens={n_tokens}): num_embeddings={soft_prompt.num_embeddings}, "
          f"weight {list(soft_prompt.weight.shape)}, no error")
    inputs_embeds = torch.randn(B, N, n_embd)  # [B, N, D]
    try:
        torch.cat([soft_prompt.weight.repeat(B, 1, 1), inputs_embeds], dim=1)  # _cat_learned_embedding_to_input
        raise AssertionError("a [2, 10] prompt cannot join [B, N, D] embeddings")
    except RuntimeError as e:
        print(f"first forward: RuntimeError: {str(e).splitlines()[0]}")
    weight = torch.empty(n_tokens, n_embd)  # a prompt of the right size, [P, D]
    repeated, expanded = weight.repeat(B, 1, 1), weight.unsqueeze(0).expand(B, -1, -1)  # [B, P, D] each
    print(f"[B, P, D] for B={B}: repeat {repeated.untyped_storage().nbytes():,} bytes, "
          f"expand {expanded.untyped_storage().nbytes():,} (a view of the [P, D] weight)")
    assert repeated.untyped_storage().nbytes() == B * expanded.untyped_storage().nbytes()


seed_003_init_and_repeat()


# %%
def seed_003_pickle_vs_safetensors(P=20, D=768):
    prompt = nn.Embedding(P, D)
    buf = io.BytesIO()
    torch.save(prompt, buf)  # save_soft_prompt: the whole module, pickled
    buf.seek(0)
    try:
        torch.load(buf, map_location=torch.device("cpu"))  # set_soft_prompt_embeds
        raise AssertionError("torch.load must refuse a pickled module by default")
    except Exception as e:  # pickle.UnpicklingError
        print(f"torch.load of the pickled module: {type(e).__name__}: {str(e).splitlines()[0][:60]}...")
    class Payload:  # what a pickle can carry besides tensors: a call, made while loading
        def __reduce__(self):
            return print, ("  (printed by torch.load itself: unpickling this file called print)",)
    buf = io.BytesIO()
    torch.save({"soft_prompt": Payload()}, buf)
    buf.seek(0)
    print("torch.load(weights_only=False) of a file holding a pickled call:")
    loaded = torch.load(buf, weights_only=False)  # runs the call: here a harmless print
    assert loaded == {"soft_prompt": None}  # the object came back as what the call returned
    data = save_safetensors({"soft_prompt.weight": prompt.weight.detach()})  # bytes: header + numbers
    back = load_safetensors(data)["soft_prompt.weight"]  # [P, D]
    print(f"safetensors: {len(data):,} bytes, {list(back.shape)} back, equal: {torch.equal(back, prompt.weight)}")
    assert torch.equal(back, prompt.weight)


seed_003_pickle_vs_safetensors()


# %% [markdown]
# ## 8. Seed 003: a forward that drops the cache and the positions
#
# **Its `forward` drops `past_key_values`, `position_ids` and `token_type_ids`** ("for now").
# Training still works, since it needs none of them. Generation does not:
#
# - after the first step a generator passes only the newest token plus the cache; the mixin
#   throws the cache away and prepends the soft prompt again, so every later token is predicted
#   from the prompt and *one* token;
# - a generator passes `position_ids` that count real tokens only, so that a left-padded row
#   (lesson 12, section 3) sees the positions it would see alone. Dropped, the model numbers the
#   pads too, and the padded row computes something else.
#
# We run both on a random GPT-2 (the tiny one, weights N(0, 0.2) as in lesson 12) with the soft
# prompt under positions="shifted": GPT-2 given P+N `inputs_embeds` numbers them 0..P+N-1,
# which is what the mixin gets. (Not a mistake, a difference: it labels the prompt rows -100
# over P+N logits, we slice the logits to N; the losses differ by one term per row, lesson 06,
# section 4.)

# %%
def random_gpt2_with_soft_prompt(P: int, seed: int = 0) -> GPT2Decoder:
    """The tiny GPT-2 (D=24, H=4, d=6, L=3, V=130), weights N(0, 0.2), and a soft prompt."""
    torch.manual_seed(seed)
    cfg = preset("gpt2-tiny")
    model = GPT2Decoder(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    return model.attach(SoftPrompt(cfg, P, positions="shifted").eval())


@torch.no_grad()
def seed_003_drops_the_cache(P=7, N=9, steps=6):
    model = random_gpt2_with_soft_prompt(P)
    torch.manual_seed(1)
    ids = torch.randint(1, model.config.vocab_size, (1, N))  # [1, N]
    out = model(ids, use_cache=True)
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # [1, 1]
    cached = model(nxt, past=out.cache).logits[:, -1]  # [1, V]: prompt + N tokens in the cache
    full = model(torch.cat([ids, nxt], 1)).logits[:, -1]  # [1, V]: everything recomputed
    forgetful = model(nxt).logits[:, -1]  # [1, V]: seed 003's step, the cache dropped
    print(f"next-token logits, cached vs recomputed: max |diff| {(cached - full).abs().max():.1e}; "
          f"cache dropped vs recomputed: {(forgetful - full).abs().max():.2f}")
    assert torch.allclose(cached, full, atol=1e-5) and not torch.allclose(forgetful, full, atol=1e-2)
    right = model.generate(ids, steps)[0, N:].tolist()
    seq, tok = [], out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(steps):  # every step sees [soft prompt | last token] only
        seq.append(int(tok))
        tok = model(tok).logits[:, -1].argmax(-1, keepdim=True)
    print(f"greedy, {steps} tokens: with the cache {right}; cache dropped {seq} "
          f"(each token now depends on the one before it only)")
    assert right != seq


seed_003_drops_the_cache(steps=8)


# %%
@torch.no_grad()
def seed_003_drops_the_positions(P=7, pad=3):
    model = random_gpt2_with_soft_prompt(P)
    torch.manual_seed(2)
    short, long = torch.randint(1, model.config.vocab_size, (5,)), torch.randint(1, model.config.vocab_size, (5 + pad,))
    ids = torch.stack([torch.cat([torch.zeros(pad, dtype=torch.long), short]), long])  # [2, N], row 0 left-padded
    mask = torch.ones_like(ids)
    mask[0, :pad] = 0
    alone = model(short[None]).logits[0, -1]  # [V]: the row on its own
    counted = (mask.cumsum(-1) - 1).clamp(min=0) + P  # real tokens only, after the prompt (what generate passes)
    kept = model(ids, attention_mask=mask, position_ids=counted).logits[0, -1]
    dropped = model(ids, attention_mask=mask).logits[0, -1]  # position_ids dropped: the pads are numbered too
    print(f"left-padded row vs the same row alone, last-token logits: positions passed "
          f"{(kept - alone).abs().max():.1e}, positions dropped {(dropped - alone).abs().max():.2f}")
    assert torch.allclose(kept, alone, atol=1e-5) and (dropped - alone).abs().max() > 1e-2


seed_003_drops_the_positions()


# %% [markdown]
# ## 9. Seed 004: P-tuning v1 is input-only, and the parameter claims
#
# Seed 004 is a course module on prompt tuning and P-tuning.
#
# - **It says P-Tuning (v1) inserts prompts "at multiple layers".** P-tuning v1 is input-only:
#   its prompt comes from a small LSTM or MLP encoder and joins the input embeddings once.
#   Prompts at every layer are P-Tuning v2's deep prompts (lessons 07-08). Below, the traces of
#   both count where the prompt enters.
# - **"The fewest trainable parameters of all PEFT methods", "as few as 0.001%".** A soft
#   prompt with P=20 on BERT-base is 0.014%; P-tuning v1's LSTM encoder is about a quarter of
#   BERT-base while it trains; a prefix MLP about 9% (it can be dropped after training,
#   lesson 08, section 4). A plain K/V prefix with P=20 trains more numbers than rank-8 LoRA
#   on W_Q and W_V (arithmetic below; LoRA is not part of this package). And 0.001% is a
#   statement about model size: `P*D` / total parameters reaches 1e-5 only for models of
#   billions of parameters.
# - **"Tiny checkpoints ... only a few kilobytes."** Not at BERT-base in float32 (as safetensors
#   writes them): a P=20 soft prompt is 62 KB, and the deep prompts the same module recommends
#   are 737 KB (hidden-state, `[L, P, D]`) and 1.5 MB (a K/V prefix, `[P, L*2*D]`). Small next to
#   the 438 MB backbone, but not a few kilobytes.
# - A notation clash, not an error: it writes the sequence length as L and the embedding size
#   as d; here L is the number of layers, N the sequence length, D the hidden size and d the
#   head size (lesson 01).

# %%
@torch.no_grad()
def seed_004_v1_is_input_only(P=3, N=5):
    cfg = preset("bert-tiny")
    ids = torch.randint(1, cfg.vocab_size, (1, N))  # [1, N]
    for name in ("ptuning-lstm", "deep"):
        torch.manual_seed(0)
        model = BertEncoder(cfg, prompt=make_method(name, cfg, P)).eval()
        with ShapeTrace() as tr:
            model(ids)
        at_input = tr.names().count("shallow.prompt")
        in_layers = sum(n.endswith(".inject") for n in tr.names())
        print(f"{name:<13} prompt joins the input {at_input}x, the layers {in_layers}x (L={cfg.num_hidden_layers})")
        assert (at_input, in_layers) == ((1, 0) if name == "ptuning-lstm" else (0, cfg.num_hidden_layers))


seed_004_v1_is_input_only()


# %%
def seed_004_parameter_shares(P=20, lora_rank=8):
    cfg = preset("bert-base")
    rows = parameter_report(cfg, P, ["soft", "ptuning-mlp", "ptuning-lstm", "deep", "prefix", "prefix-mlp"])
    print(f"BERT-base, P={P}:")
    print(format_report(rows))
    share = {r["method"]: r["percent"] for r in rows}
    n = {r["method"]: r["trainable"] for r in rows}
    D, L = cfg.hidden_size, cfg.num_hidden_layers
    lora = L * 2 * lora_rank * (D + D)  # A [r, D] and B [D, r] on W_Q and W_V, in every layer
    print(f"rank-{lora_rank} LoRA on W_Q, W_V (arithmetic): {lora:,} = {100 * lora / rows[0]['backbone']:.3f}%; "
          f"the K/V prefix above: {n['prefix']:,}")
    for width in (768, 4096):  # share = P * D / total parameters
        print(f"a P={P} soft prompt is 0.001% of a model of width D={width} only at "
              f"{P * width / 1e-5 / 1e9:.1f}B parameters")
    assert share["soft"] < 0.02 and 20 < share["ptuning-lstm"] < 30 and 8 < share["prefix-mlp"] < 10
    assert n["prefix"] > lora and P * 768 / 1e-5 > 1e9
    sizes = {name: len(save_safetensors({"w": torch.zeros(shape)})) for name, shape in
             (("soft [P, D]", (P, D)), ("deep [L, P, D]", (L, P, D)), ("prefix [P, L*2*D]", (P, L * 2 * D)))}
    print("checkpoint sizes (float32 safetensors): " + ", ".join(f"{k} {v / 1e3:,.0f} KB" for k, v in sizes.items())
          + f"; the backbone: {4 * rows[0]['backbone'] / 1e6:.0f} MB")
    assert 50e3 < sizes["soft [P, D]"] < 70e3 and sizes["deep [L, P, D]"] > 700e3 and sizes["prefix [P, L*2*D]"] > 1e6
    return rows


shares = seed_004_parameter_shares()


# %% [markdown]
# ## 10. The shapes, recorded: seed 003's generation step, with and without the cache
#
# Tiny GPT-2 (D=24, H=4, d=6, L=3, V=130, feed-forward width 96), layer 0 shown, B=5, N=9 prompt
# tokens, P=7 soft prompt rows (every letter a different size). With the cache, one new token
# queries T = P+N = 16 cached keys plus its own: `k_with_prefix [B, H, T+1, d]`. With the cache
# dropped, the same token is a fresh sequence of one, behind the prompt: keys `[B, H, P+1, d]`.
# The nine real tokens are simply gone.

# %%
def trace_example(B=5, N=9, P=7):
    model = random_gpt2_with_soft_prompt(P)
    cfg = model.config
    torch.manual_seed(1)
    ids = torch.randint(1, cfg.vocab_size, (B, N))  # [B, N]
    with torch.no_grad():
        out = model(ids, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
        with ShapeTrace(dims={**dims_for(cfg, B=B), "T": P + N, "T+1": P + N + 1}, layers=(0,)) as cached:
            model(nxt, past=out.cache, use_cache=True)
        with ShapeTrace(dims={**dims_for(cfg, B=B, P=P), "P+1": P + 1}, layers=(0,)) as dropped:
            model(nxt)
    return cached, dropped


cached, dropped = trace_example()
print(side_by_side(cached, dropped, ("step with the cache", "cache dropped (seed 003)")))


# %% [markdown]
# ## What to remember
#
# - Check a tutorial's example ids with the tokenizer it names: word pieces, special tokens,
#   and which position each label sits on ([CLS] and [SEP] get -100, so do non-first pieces).
# - A layer needs the 4-D mask; the model builds it. Row 0 is [CLS] only after the prompt rows
#   are sliced off.
# - A P-Tuning v2 prefix MLP outputs `[P, L*2*D]`; an MLP that outputs `[P, D]` feeds the input
#   only, and prompts joined to the input embeddings are shallow, whatever the text says.
#   Split D into heads as (H, d), the layer's own order.
# - Run the code: a `repeat` with too few sizes, an index tensor on the wrong device, a
#   `[2, 10]` init all fail the first time they meet real inputs.
# - A wrapper that drops `past_key_values` trains fine and generates from the prompt and one
#   token; one that drops `position_ids` breaks left padding. Test cached decoding against full
#   recomputation, and a padded row against the row alone.
# - Save tensors (safetensors), not pickled modules.
# - P-tuning v1 is input-only; "fewest parameters" depends on the method, P and the model:
#   measure it (`python -m minigpt_ptv2 params`).
#
# ## Check your understanding
#
# 1. Seed 000's NER labels are `[1, 2, 0, 0, 3, 0, 4, 0, -100]` for `[CLS] w1 ... w7 [SEP]`.
#    Which token does the label of "Sundar" sit on, and what is the correct label row under
#    first-piece labelling when "Sundar" and "Pichai" each split in two?
#
#    <details><summary>Answer</summary>
#
#    On [CLS]: the 8 word tags fill positions 0-7, [CLS] first, so each sits one token early
#    (and its ids hold only 7 tokens between [CLS] and [SEP] for 8 words). Correct:
#    `[-100, B-PER, -100, I-PER, -100, O, O, B-ORG, O, B-LOC, O, -100]` for
#    `[CLS] sun ##dar pic ##hai works for google in california . [SEP]`: 12 positions.
#
#    </details>
#
# 2. Seed 002's `.repeat(1, batch_size, 1, 1)` crashes. Why, and what shape would
#    `.repeat(1, batch_size, 1, 1, 1)` give for L=12, B=16, P=20, d_kv=768?
#
#    <details><summary>Answer</summary>
#
#    After `permute(1, 2, 0, 3).unsqueeze(1)` the tensor is `[L, 1, 2, P, d_kv]`, 5 axes, and
#    `repeat` needs at least as many sizes as axes. With 5 it is `[12, 16, 2, 20, 768]`: the batch
#    before the K/V axis, not `[L, 2, B, P, d_kv]` as the comment says, and still no head axis.
#
#    </details>
#
# 3. Seed 001 classifies from `last_hidden_state[:, 0]`. With P=20 prompt rows, which row holds
#    [CLS], and what is the longest input its model accepts on BERT-base?
#
#    <details><summary>Answer</summary>
#
#    Row P = 20: its prompt rows come first and nothing slices them off. BERT numbers all P+N
#    rows, so P+N must fit the 512 positions: N <= 492.
#
#    </details>
#
# 4. Seed 003's wrapper drops `past_key_values`. During greedy generation with a cache, what
#    does its model see at the third new token?
#
#    <details><summary>Answer</summary>
#
#    The soft prompt and the second new token only: a generator feeds just the newest token
#    (the rest is supposed to be in the cache), the wrapper discards the cache and prepends the
#    prompt again. The N prompt tokens and the first new token are gone (section 10's trace:
#    keys `[B, H, P+1, d]`).
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/14_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. Tokenise "Ada Lovelace visited Kensington Palace ." (pre-split at spaces) with
#    `WordPiece.from_model_dir()` and label it with `encode_words` (tags
#    `B-PER I-PER O B-LOC I-LOC O`): which words split, and where do the -100s go? [`try_1`]
# 2. In `seed_003_drops_the_cache`, attach a fresh `SoftPrompt` after the prompt step and then
#    take the cached step (`model(nxt, past=out.cache)`): does the cached step notice the new
#    prompt? [`try_2`]
# 3. `python -m minigpt_ptv2 params --config minilm --P 8`, next to the same with
#    `--config bert-base`: how do the shares change on the smaller model, and why do they grow
#    by less than the backbone shrinks? [`try_3`]
# 4. Fix seed 002's forward: keep its MLP, build the index on the weight's device, split D into
#    (H, d) and `expand` over the batch so that it returns L pairs (K, V) of `[B, H, P, d]`; check
#    them against `KVPrefix(config, P, projection=True, hidden=D).kv_prefix(B)` holding the same
#    weights (its MLP has the same shape as the seed's). [`try_4`]
