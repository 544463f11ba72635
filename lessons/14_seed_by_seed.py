# %% [markdown]
# # Lesson 14 — Seed by seed: what each tutorial gets wrong
#
# This project started from five popular tutorials on P-Tuning v2 and prompt tuning, the
# *seeds*, numbered 000 to 004 (`lessons/README.md` says what each one is). Lesson 13 lists
# the eight general pitfalls; here we go through the seeds one at a time and put every
# mistake next to the lesson that shows it, in our own words. Where a mistake was not run
# anywhere else and a counter-example is cheap, it runs here.
#
# The seeds get a lot right, too: seed 000's shape walk is exactly what lesson 07 traces, and
# seed 002's attention formula prefixes only K and V. A mistake in a tutorial is a fine
# teacher as long as someone points at it.

# %%
from __future__ import annotations

import io
import os

import torch
from einops import rearrange
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from minigpt_ptv2 import GPT2Decoder, BertEncoder, ShapeTrace, preset
from minigpt_ptv2.data import CONLL_LABELS, WordPiece
from minigpt_ptv2.core.masks import build_keep
from minigpt_ptv2.core.prompt_rows import keys_in_front
from minigpt_ptv2.prompts import KVPrefix, SoftPrompt, format_report, make_method, parameter_report
from minigpt_ptv2.trace import dims_for, side_by_side
from minigpt_ptv2.viz import attention_maps

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")

# %% [markdown]
# ## Seed 000: a P-Tuning v2 walkthrough (deep prompts on BERT-base)
#
# Its tensor walk (B=16, N=128, P=20, D=768: inject, process, slice at every layer) is right,
# and lessons 06-08 reproduce it row by row. Its mistakes are in the examples and in one line
# of code:
#
# - **The sentiment example's `input_ids` are garbled.** The list contains the literal text
#   `23 masterpiece`, its 7595 is a different word, and the final "." is missing (the mask
#   has 8 ones for what should be 9 tokens). Below: what the uncased vocabulary gives.
# - **The NER example does not fit the uncased vocabulary.** Its ids decode to other words;
#   "Sundar" and "Pichai" are not single word pieces (each splits in two, so the sentence has
#   10 pieces plus [CLS] and [SEP], not 7 plus 2); and its labels are shifted by one: [CLS]
#   carries B-PER although the note underneath says special tokens get -100. Below, with our
#   tokenizer and first-piece labelling.
# - **A 2-D mask handed to a single layer**: lesson 07, section 4 (pitfall 7).
# - **Pooling row 0** is *right* here, and only because the loop slices after every layer,
#   the last included: lesson 07, section 3 runs that loop by hand and matches our encoder.
#   The same line after a shallow prompt reads a virtual token (seed 001, pitfall 2). It feeds
#   the raw [CLS] state to the head, while our heads read `pooler_output` (BERT's dense + tanh
#   over the real [CLS]); both are common, but compare like with like.

# %%
SEED_000_SENTIMENT_NUMBERS = [101, 1996, 3185, 2001, 2019, 7595, 102]  # its list, minus the text
SEED_000_NER_IDS = [101, 24167, 25895, 2552, 2005, 8224, 1999, 3408, 102]
SEED_000_NER_LABELS = [1, 2, 0, 0, 3, 0, 4, 0, -100]
SEED_000_NER_NAMES = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-ORG", 4: "LOC", -100: "-100"}  # its own scheme
SUNDAR_WORDS = ["Sundar", "Pichai", "works", "for", "Google", "in", "California", "."]
SUNDAR_TAGS = ["B-PER", "I-PER", "O", "O", "B-ORG", "O", "B-LOC", "O"]


def seed_000_sentiment_ids(tok: WordPiece) -> list[int]:
    ours = tok.encode(["The movie was an absolute masterpiece."])["input_ids"][0].tolist()  # [N]
    print(f"seed 000's numbers decode to {tok.tokens(SEED_000_SENTIMENT_NUMBERS)} (+ the text '23 masterpiece')")
    print(f"the uncased vocabulary gives {len(ours)} ids: {ours}")
    print(f"                             {tok.tokens(ours)}")
    assert ours == [101, 1996, 3185, 2001, 2019, 7619, 17743, 1012, 102]
    return ours


def seed_000_ner_example(tok: WordPiece) -> dict:
    pairs = lambda ts, ls: "  ".join(f"{t}:{n}" for t, n in zip(ts, ls))  # noqa: E731
    seed_names = [SEED_000_NER_NAMES[x] for x in SEED_000_NER_LABELS]
    print(f"seed 000: {pairs(tok.tokens(SEED_000_NER_IDS), seed_names)}")
    ours = tok.encode_words([SUNDAR_WORDS], [[CONLL_LABELS.index(t) for t in SUNDAR_TAGS]])
    labels = ours["labels"][0].tolist()  # [N]: -100 on [CLS], [SEP] and non-first pieces
    names = [CONLL_LABELS[x] if x >= 0 else "-100" for x in labels]
    print(f"ours:     {pairs(tok.tokens(ours['input_ids'][0].tolist()), names)}")
    assert ours["input_ids"][0].tolist() == [101, 3103, 7662, 27263, 10932, 2573, 2005, 8224, 1999, 2662, 1012, 102]
    assert labels == [-100, 1, -100, 2, -100, 0, 0, 3, 0, 5, 0, -100]
    return ours


# %% [markdown]
# ## Seed 001: a short P-Tuning v2 explainer (BERT, a prefix MLP)
#
# - **Q prefixed in the formula.** It concatenates the prefix to the queries as well as the
#   keys and values: lesson 08, section 2 (pitfall 3).
# - **"Every layer" in the text, the input in the code.** Its model concatenates the prefix to
#   the input embeddings once and calls BERT: shallow prompt tuning, lesson 07, section 5
#   (pitfall 7). Two consequences follow from that same line: BERT numbers the P+N rows
#   0..P+N-1, so the real tokens sit at P..P+N-1 and the longest input becomes 512 - P
#   (pitfall 1); and `last_hidden_state[:, 0]` is the first virtual token, not [CLS]
#   (pitfall 2, lesson 06, section 2).
# - **The MLP's output is D wide, not L*2*D.** Its `PrefixEncoder` maps `[P, D]` to `[P, D]`:
#   one input prompt. A P-Tuning v2 (prefix-tuning) MLP has to produce every layer's keys and
#   values, `[P, L*2*D]`. Below, the two side by side on BERT-base sizes.

# %%
def seed_001_mlp_width(P=20):
    cfg = preset("bert-base")
    D, L = cfg.hidden_size, cfg.num_hidden_layers
    with torch.device("meta"):  # shapes and counts only: nothing is allocated
        seed_mlp = nn.Sequential(nn.Embedding(P, D), nn.Linear(D, D), nn.Tanh(), nn.Linear(D, D))
        theirs = seed_mlp(torch.arange(P))  # [P, D]: one prompt, for the input
        prefix = KVPrefix(cfg, P, projection=True)
        ours = prefix.flat()  # [P, L*2*D]: K and V for every layer and head
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"seed 001's MLP: {count(seed_mlp):,} parameters -> {list(theirs.shape)} = {theirs.numel():,} "
          f"numbers, all at the input")
    print(f"prefix MLP:     {count(prefix):,} parameters -> {list(ours.shape)} = {ours.numel():,} "
          f"numbers: P keys and P values for every layer and head")
    assert theirs.shape == (P, D) and ours.shape == (P, L * 2 * D)


# %% [markdown]
# ## Seed 002: a P-Tuning v2 note in Russian (K/V prefixes from an MLP)
#
# It gets the idea right: K and V get the prefix, Q does not. The code around it does not run:
#
# - **`view(n, L, 2, d_kv)` has no head axis, and the `repeat` crashes.** After
#   `permute(...).unsqueeze(1)` the tensor has 5 axes; `.repeat(1, batch_size, 1, 1)` gives 4
#   sizes and raises. Given 5, the batch lands *before* the K/V axis, not after it as the
#   comment says. And attention needs `[B, H, P, d]` per layer: the D axis must still be split
#   into heads, as (H, d), the order the layer splits its own keys; `(d, H)` has the same
#   shape, raises nothing, and scatters the numbers over the wrong heads. (If `d_kv` means the
#   head size d, the MLP makes H times too few numbers.) Below, the crash and the correct split.
# - **`repeat` over the batch**: B copies where `expand` makes a view (pitfall 5, lesson 13,
#   section 5).
# - **`torch.arange(n)` without a device.** The indices are built on the CPU; once the model
#   is on a GPU, the embedding lookup fails with a device mismatch. `KVPrefix` builds no index
#   tensor at all (it reads its weight directly), so everything follows the weight's device;
#   `tests/test_cuda.py` checks that no forward pass makes a tensor on a fixed device, and
#   compares GPU runs with CPU runs when there is a GPU.
# - **"Hard to implement for bidirectional models (BERT)."** It is the easy case: the prefix
#   is the same concatenation onto K and V, and the encoder's keep-mask is one row shared by
#   all queries, `[B, 1, 1, P+N]`, where a decoder needs the causal `[B, 1, N, P+N]`. Below,
#   both masks, and every layer of our bidirectional encoder reading its prefix.

# %%
def seed_002_view_and_repeat(P=5, B=2):
    cfg = preset("bert-tiny")  # D=24, L=3, H=4, d=6
    D, L, H = cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads
    torch.manual_seed(0)
    prefix = KVPrefix(cfg, P)
    flat = prefix.flat().detach()  # [P, L*2*D]: an MLP output with d_kv = D
    theirs = flat.view(P, L, 2, D).permute(1, 2, 0, 3).unsqueeze(1)  # [L, 1, 2, P, D]
    try:
        theirs.repeat(1, B, 1, 1)  # seed 002's call
    except RuntimeError as e:
        print(f"seed 002's repeat on {list(theirs.shape)}: RuntimeError: {str(e).splitlines()[0]}")
    fixed = theirs.expand(-1, B, -1, -1, -1)  # [L, B, 2, P, D]: B before K/V, not [L, 2, B, P, D]
    print(f"with 5 sizes (or expand) it is {list(fixed.shape)}: [L, B, 2, P, D], not the commented [L, 2, B, P, D]")
    right = rearrange(theirs[:, 0], "l two p (h d) -> l two h p d", h=H)  # [L, 2, H, P, d]
    wrong = rearrange(theirs[:, 0], "l two p (d h) -> l two h p d", h=H)  # same shape, wrong heads
    kv = prefix.layer_kv().detach()  # [L, 2, H, P, d]
    print(f"split D as (H, d): equals KVPrefix.layer_kv() {list(kv.shape)}: {torch.equal(right, kv)}; "
          f"as (d, H): {torch.equal(wrong, kv)}")
    assert torch.equal(right, kv) and not torch.equal(wrong, kv)


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
    print(f"our bidirectional encoder with a K/V prefix: attention on the prefix per layer "
          f"{[round(float(m), 2) for m in mass.mean(1)]}")
    assert (mass > 0).all()


# %% [markdown]
# ## Seed 003: a blog post on prompt, prefix and P-tuning (a GPT-2 soft-prompt mixin)
#
# - **`initialize_soft_prompt` builds a `[2, 10]` tensor** whatever the number of tokens and
#   the embedding size: lesson 06, section 3 (pitfall 6).
# - **`repeat` over the batch** for the soft prompt: pitfall 5, lesson 13, section 5.
# - **Its `forward` drops `past_key_values`, `position_ids` and `token_type_ids`** ("for
#   now"). Training still works, since it never needs them. Cached generation does not: after
#   the first step a generator passes only the newest token plus the cache; the mixin throws
#   the cache away and prepends the soft prompt again, so every later token is predicted from
#   the prompt and *one* token. Below, that step against the cached one and a full
#   recomputation, on a random GPT-2. (Dropping `position_ids` also breaks left padding,
#   lesson 12, section 3.)
# - **It saves the prompt with `torch.save` and loads it with `torch.load`**: a pickle of the
#   whole `nn.Embedding` module. Since PyTorch 2.6, `torch.load` refuses it by default
#   (`weights_only=True`); forcing `weights_only=False` runs whatever code the file contains.
#   A prompt is a tensor: we store tensors with safetensors (names, shapes, dtypes and raw
#   numbers, nothing to execute), as lesson 10's checkpoint does. Below, both.
# - Not a mistake, a difference: it labels the prompt rows -100 over P+N logits, we slice the
#   logits to N; the losses differ by one term per row (lesson 06, section 4).

# %%
def random_gpt2_with_soft_prompt(P: int, seed: int = 0) -> GPT2Decoder:
    """The tiny GPT-2 (D=24, H=4, d=6, L=3, V=130), weights N(0, 0.2) as in lesson 12."""
    torch.manual_seed(seed)
    cfg = preset("gpt2-tiny")
    model = GPT2Decoder(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    return model.attach(SoftPrompt(cfg, P).eval())


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


def seed_003_pickle_vs_safetensors(P=20, D=768):
    prompt = nn.Embedding(P, D)
    buf = io.BytesIO()
    torch.save(prompt, buf)  # seed 003: the whole module, pickled
    buf.seek(0)
    try:
        torch.load(buf)
    except Exception as e:  # pickle.UnpicklingError
        print(f"torch.load of a pickled module: {type(e).__name__}: {str(e).splitlines()[0][:60]}...")
    data = save_safetensors({"soft_prompt.weight": prompt.weight.detach()})  # bytes: header + numbers
    back = load_safetensors(data)["soft_prompt.weight"]  # [P, D]
    print(f"safetensors: {len(data):,} bytes, {list(back.shape)} back, equal: {torch.equal(back, prompt.weight)}")
    assert torch.equal(back, prompt.weight)


# %% [markdown]
# ## Seed 004: a course module on prompt tuning and P-tuning
#
# - **It says P-Tuning (v1) inserts prompts "at multiple layers".** P-tuning v1 is input-only:
#   its prompt comes from a small LSTM or MLP encoder and joins the input embeddings once.
#   Prompts at every layer are P-Tuning v2's deep prompts (lessons 07-08). Below, the traces
#   of both count where the prompt enters.
# - **"The fewest trainable parameters of all PEFT methods", "as few as 0.001%".** A soft
#   prompt with P=20 on BERT-base is 0.014%; P-tuning v1's LSTM encoder is about a quarter of
#   BERT-base while it trains; a prefix MLP about 9% (it can be dropped after training,
#   lesson 08, section 4). A plain K/V prefix with P=20 trains more numbers than rank-8 LoRA
#   on W_Q and W_V (arithmetic below; LoRA is not part of this package). And 0.001% is a
#   statement about model size: P*D / total parameters reaches 1e-5 only for models of
#   billions of parameters.
# - A notation clash, not an error: it writes the sequence length as L and the embedding size
#   as d; here L is the number of layers, N the sequence length, D the hidden size and d the
#   head size (lesson 01).

# %%
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
    assert share["soft"] < 0.02 and share["ptuning-lstm"] > 20 and n["prefix"] > lora


# %% [markdown]
# ## The shapes, recorded: seed 003's generation step, with and without the cache
#
# Tiny GPT-2 (D=24, H=4, d=6, L=3, V=130), layer 0 shown, B=2, N=9 prompt tokens, P=7 soft
# prompt rows. With the cache, one new token queries T = P+N = 16 cached keys plus its own:
# `k_with_prefix [B, H, T+1, d]`. With the cache dropped, the same token is a fresh sequence
# of one, behind the prompt: keys `[B, H, P+1, d]`. The nine real tokens are simply gone.

# %%
def trace_example(B=2, N=9, P=7):
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


# %%
def main():
    tok = WordPiece.from_model_dir()
    print("seed 000")
    seed_000_sentiment_ids(tok)
    seed_000_ner_example(tok)
    print("\nseed 001")
    seed_001_mlp_width()
    with torch.no_grad():
        print("\nseed 002")
        seed_002_view_and_repeat()
        bidirectional_is_the_easy_case()
        print("\nseed 003")
        seed_003_drops_the_cache(steps=4 if QUICK else 8)
    seed_003_pickle_vs_safetensors()
    print("\nseed 004")
    with torch.no_grad():
        seed_004_v1_is_input_only()
    seed_004_parameter_shares()
    print()
    cached, dropped = trace_example()
    print(side_by_side(cached, dropped, ("step with the cache", "cache dropped (seed 003)")))


# %% [markdown]
# ## What to remember
#
# - Check a tutorial's example ids with the tokenizer it names: word pieces, special tokens,
#   and which position each label sits on ([CLS] and [SEP] get -100, so do non-first pieces).
# - Row 0 is [CLS] only after the prompt rows are sliced off.
# - A P-Tuning v2 prefix MLP outputs `[P, L*2*D]`; an MLP that outputs `[P, D]` feeds the input
#   only. Split D into heads as (H, d), the layer's own order.
# - Run the code: a `repeat` with too few sizes, an index tensor on the wrong device, a
#   `[2, 10]` init all fail the first time they meet real inputs.
# - A wrapper that drops `past_key_values` trains fine and generates from the prompt and one
#   token. Test cached decoding against full recomputation.
# - Save tensors (safetensors), not pickled modules.
# - P-tuning v1 is input-only; "fewest parameters" depends on the method, P and the model:
#   measure it (`python -m minigpt_ptv2 params`).
#
# ## Try this
#
# - Tokenise a sentence of your own with `WordPiece.from_model_dir()` and label it with
#   `encode_words`: which words split, and where do the -100s go?
# - In `seed_003_drops_the_cache`, pass `past=out.cache` but re-attach a fresh prompt first:
#   does the cached step notice?
# - `python -m minigpt_ptv2 params --config minilm --P 8`: how do the shares change on a
#   smaller model?

# %%
if __name__ == "__main__":
    main()
