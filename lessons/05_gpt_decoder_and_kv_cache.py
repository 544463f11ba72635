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
#
# The letters: **B** batch size, **N** tokens in the sequence, **D** hidden size, **L** layers,
# **H** attention heads of size **d** = D/H, **V** vocabulary size, **P** prefix length, and one
# new letter, **T**: the number of tokens whose keys and values are already in the cache.

# %%
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from _course import RUNS, print_speech
from minigpt_ptv2 import GPT2Decoder, ShapeTrace, preset
from minigpt_ptv2.core.capture import Capture
from minigpt_ptv2.core.masks import build_keep
from minigpt_ptv2.data.bpe import ByteLevelBPE
from minigpt_ptv2.trace import dims_for, side_by_side
from minigpt_ptv2.training.lm import load_decoder
from minigpt_ptv2.training.pretrain import decoder_dir
from minigpt_ptv2.training.steer import speak
from minigpt_ptv2.viz import save_figure



# %% [markdown]
# ## 0. A random GPT-2, initialised the way GPT-2 is
#
# PyTorch's default `nn.Embedding` init draws N(0, 1), which with a tied head gives logits in
# the hundreds. GPT-2 draws its weight matrices from N(0, 0.02); then a fresh model predicts
# roughly uniformly and its loss starts near ln V, as a real one does before training (section 4
# measures it). We use GPT-2's real shapes (D=768, H=12, d=64, V=50,257) with 4 of its 12 layers.

# %%
def random_gpt2(cfg) -> GPT2Decoder:
    model = GPT2Decoder(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.02)
    return model


torch.manual_seed(0)
model = random_gpt2(preset("gpt2").replace(num_hidden_layers=4))
B, N, steps = 2, 16, 8
ids = torch.randint(0, model.config.vocab_size, (B, N))  # [B, N]
c = model.config
print(f"GPT-2 shapes: D={c.hidden_size}, L={c.num_hidden_layers}, H={c.num_attention_heads}, "
      f"d={c.head_dim}, V={c.vocab_size}; a batch of B={B} sequences of N={N} tokens")


# %% [markdown]
# ## 1. The head is the embedding table, transposed
#
# GPT-2 *ties* its output layer to the token embedding: logits = `ln_f(h) @ wte^T`. There is
# no separate `lm_head` weight to load, train or forget.

# %%
def tied_head(model: GPT2Decoder, ids: torch.Tensor):
    last = f"layer{len(model.layers) - 1}.out"
    with torch.no_grad(), ShapeTrace(keep=(last,)) as tr:
        logits = model(ids).logits  # [B, N, V]
        mine = model.ln_f(tr.tensors[last]) @ model.wte.weight.T  # [B, N, D] @ [D, V] -> [B, N, V]
    print(f"logits {list(logits.shape)} = ln_f(h) @ wte^T: max |diff| = {(mine - logits).abs().max():.1e}")
    assert torch.allclose(mine, logits, atol=1e-5)


tied_head(model, ids)


# %% [markdown]
# ## 2. The causal mask, with a prefix and with a cache
#
# `build_keep(key_mask, n_query, causal=True)` lays keys out as `[earlier keys | new tokens]`
# and lets query i see every earlier key plus new keys up to itself. "Earlier keys" can be a
# prefix of P trained vectors or a cache of T computed ones: the mask cannot tell them apart.
# Below, 1 means "may attend": with a prefix, the first P columns are all ones; with a cache
# and one new token, the single query row sees all T+1 keys.

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
    assert torch.equal(plain, torch.ones(N, N, dtype=torch.bool).tril()), "query i sees keys 0..i"
    assert prefix[:, :P].all() and torch.equal(prefix[:, P:], plain), "the whole prefix, then causal"
    assert cache.all(), "the newest token sees the whole cache and itself"
    return plain, prefix, cache


def plot_masks(masks, P=2):
    from matplotlib.figure import Figure
    plain, prefix, cache = masks
    fig = Figure(figsize=(11, 3.4))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [5, 7, 5]})
    panels = ((plain, f"causal, N={plain.shape[0]}:\nquery i sees tokens 0..i", "key (token)", "query (token)"),
              (prefix, f"K/V prefix P={P} + N={prefix.shape[0]}:\nevery query sees the whole prefix",
               f"key (first {P}: prefix, then tokens)", "query (token)"),
              (cache, f"cache T={cache.shape[1] - 1} + 1 new token:\nthe new token sees every key",
               f"key (first {cache.shape[1] - 1}: cache, then the new token)", "query (new token)"))
    for ax, (m, title, xlabel, ylabel) in zip(axes, panels):
        ax.imshow(m.int(), cmap="Greens", vmin=0, vmax=1.4)
        for (i, j), v in zip(torch.cartesian_prod(torch.arange(m.shape[0]), torch.arange(m.shape[1])).tolist(),
                             m.flatten().int().tolist()):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xticks=range(m.shape[1]), yticks=range(m.shape[0]))
        ax.title.set_fontsize(9)
    fig.suptitle("Causal keep-masks: 1 = the query may attend to the key", fontsize=10)
    fig.tight_layout()
    save_figure(fig, "05_causal_masks.png")


masks = causal_masks()
plot_masks(masks)


# %% [markdown]
# ## 3. Causal means: the future cannot change the past
#
# Change the last token of a sequence: the logits at every earlier position stay exactly put
# (bit for bit), while the last position's logits move.

# %%
def future_cannot_change_past(model: GPT2Decoder, ids: torch.Tensor):
    other = ids.clone()
    other[:, -1] = (ids[:, -1] + 1) % model.config.vocab_size
    with torch.no_grad():
        a, b = model(ids).logits, model(other).logits  # [B, N, V] each
    earlier, last = (a - b)[:, :-1].abs().max().item(), (a - b)[:, -1].abs().max().item()
    print(f"change the last token: earlier logits move by {earlier:.1e}, the last one by {last:.2f}")
    assert torch.equal(a[:, :-1], b[:, :-1]) and last > 1e-3


future_cannot_change_past(model, ids)


# %% [markdown]
# ## 4. The loss: position t predicts token t+1
#
# With `labels=input_ids`, the model compares the logits at 0..N-2 with the tokens at 1..N-1:
# `B*(N-1)` terms, since the last position has no next token. Positions labelled -100 are
# ignored; lesson 06 uses that for prompts. An untrained model that predicts uniformly scores
# ln V; ours starts within a few tenths of it.

# %%
def next_token_loss(model: GPT2Decoder, ids: torch.Tensor):
    with torch.no_grad():
        out = model(ids, labels=ids)
    mine = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())  # B*(N-1) terms
    ln_v = math.log(model.config.vocab_size)
    print(f"loss {out.loss:.4f} = cross_entropy(logits[:, :-1], ids[:, 1:]) = {mine:.4f} over "
          f"{ids[:, 1:].numel()} terms  (ln V = {ln_v:.4f})")
    assert torch.allclose(out.loss, mine, atol=1e-6) and abs(out.loss.item() - ln_v) < 0.5


next_token_loss(model, ids)


# %% [markdown]
# ## 5. The KV cache: same tokens, a fraction of the work
#
# ![The KV cache as a longer prefix, one key and value a step](../../figures/kv_cache.png)
#
# Without a cache, step t recomputes all N+t rows. With it, step t feeds one row and attends to
# the T = N+t-1 cached keys and values. Same function, so greedy decoding must pick the same
# tokens, and the logits of a cached step must equal those of a full recomputation (up to
# rounding: the sums run in another order). We count the query rows each way by listening to
# the `embeddings.out` capture point, once per forward call. The last new token is returned
# but never fed back, hence N + steps - 1 rows with the cache.

# %%
class RowCounter(Capture):
    """Adds up the rows fed through the model: the N axis of every `embeddings.out`."""

    def __init__(self):
        self.rows, self.calls = 0, 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name == "embeddings.out":  # [B, rows, D], once per forward call
            self.rows, self.calls = self.rows + tensor.shape[1], self.calls + 1


def kv_cache(model: GPT2Decoder, ids: torch.Tensor, steps: int):
    with torch.no_grad():
        with RowCounter() as cached_rows:
            with_cache = model.generate(ids, steps, use_cache=True)
        with RowCounter() as full_rows:
            without = model.generate(ids, steps, use_cache=False)
        assert torch.equal(with_cache, without), "the cache must not change the tokens"
        full = model(with_cache).logits[:, -1]  # [B, V]: everything recomputed
        first = model(with_cache[:, :-1], use_cache=True)
        step = model(with_cache[:, -1:], past=first.cache).logits[:, -1]  # [B, V]: one new row
    gap = (full - step).abs().max().item()
    print(f"greedy, {steps} new tokens: identical with and without the cache; last-step logits "
          f"cached vs recomputed: max |diff| = {gap:.1e}")
    assert torch.allclose(full, step, rtol=1e-4, atol=1e-5)
    N = ids.shape[1]
    print(f"query rows through the model in {full_rows.calls} calls: {full_rows.rows} without the cache "
          f"(N + (N+1) + ... + (N+{steps - 1})), {cached_rows.rows} with it (N, then 1 per step)")
    assert full_rows.rows == sum(N + t for t in range(steps)) and cached_rows.rows == N + steps - 1
    return full_rows.rows, cached_rows.rows


rows = kv_cache(model, ids, steps)


# %% [markdown]
# ## 6. The shapes, recorded: a prompt step, then one cached step
#
# The tiny GPT-2 (D=24, H=4, d=6, V=130, L=3, layer 0 shown), B=5, N=7: every letter a different
# size. The first call runs the N prompt tokens (causal mask `[B, 1, N, N]`) and returns a
# cache of per-layer keys and values `[B, H, N, d]`. The second call feeds one token: its query
# is `[B, H, 1, d]`, and the cache of T = N keys shows up exactly where a K/V prefix would, as
# `prefix_k` / `prefix_v` `[B, H, T, d]`, extending keys to `[B, H, T+1, d]`.

# %%
def trace_example(B=5, N=7, layers=3):
    torch.manual_seed(0)
    cfg = preset("gpt2-tiny").replace(num_hidden_layers=layers)
    model = random_gpt2(cfg)
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    with torch.no_grad():
        with ShapeTrace(dims=dims_for(cfg, B=B, N=N), layers=(0,)) as prompt_step:
            out = model(ids, use_cache=True, output_attentions=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
        with ShapeTrace(dims={**dims_for(cfg, B=B), "T": N, "T+1": N + 1}, layers=(0,)) as cached_step:
            model(nxt, past=out.cache, output_attentions=True)
    return prompt_step, cached_step


prompt_step, cached_step = trace_example()
print(side_by_side(prompt_step, cached_step, ("prompt step", "one cached step (T = N)")))


# %% [markdown]
# ## 7. A decoder that speaks
#
# Random weights write random token ids. The package can pretrain a small decoder from scratch,
# offline, on the SST-2 sample's 3,000 sentences (`python -m minigpt_ptv2 pretrain`, one sentence
# a line, the newline as the start and end of a sentence). The first lesson that needs it builds
# it, **about a minute of CPU once**, into `runs/decoder` beside the lessons; after that it loads
# in a blink. It is a LLaMA-style decoder (RMSNorm, RoPE, SwiGLU; lesson 15 takes it apart), not
# a GPT-2, but the cache and the causal mask are the same. With 4 layers of D=64 and a held-out
# perplexity of about 300 per token, it writes SST-2-sounding words, not fluent English.
#
# `steer.speak` starts from a newline and a few words and writes up to 12 tokens four ways:
# greedy and sampled (top 40, temperature 1, seed 0), each with and without the KV cache. The
# texts must be equal with and without the cache, as in section 5: the cache only saves work.

# %%
folder = decoder_dir(RUNS / "decoder")  # built the first time (about a minute), then read from runs/decoder
decoder, tok = load_decoder(folder), ByteLevelBPE.from_model_dir(folder)
c = decoder.config
print(f"{type(decoder).__name__}: L={c.num_hidden_layers}, D={c.hidden_size}, H={c.num_attention_heads}, "
      f"V={c.vocab_size}, {sum(p.numel() for p in decoder.parameters()):,} parameters")


def what_it_writes(decoder, tok, starts: list[str]) -> dict:
    said = {start: speak(decoder, tok, start, max_new_tokens=12, n=3, seed=0) for start in starts}
    for start, texts in said.items():
        print(f"after '{start}':")
        print_speech(texts)
        assert texts["greedy"] == texts["greedy, no cache"], "the cache must not change the greedy text"
        assert texts["sampled"] == texts["sampled, no cache"], "nor the sampled ones (same seed)"
    return said


said = what_it_writes(decoder, tok, ["the film is", "it 's a"])


# %% [markdown]
# ## What to remember
#
# - GPT-2 blocks are pre-LN with the tanh GELU; the LM head is the token embedding, transposed.
# - The causal mask lets query i see every earlier key (prefix or cache) and new keys up to i,
#   so changing a token leaves every earlier position's logits exactly as they were.
# - The labels are the inputs: position t is scored on token t+1 (`B*(N-1)` terms); -100 means
#   "no loss here".
# - A KV cache stores `[B, H, T, d]` keys and values per layer. A new token's keys are simply
#   concatenated after them: the very same `concat_prefix` a K/V prefix goes through. Decoding
#   `steps` tokens feeds N + steps - 1 rows instead of N + (N+1) + ... + (N+steps-1).
# - A decoder with trained weights writes words, greedy or sampled, and the cache changes none of
#   them (`decoder_dir()` builds the course's small one once and caches it).
#
# ## Check your understanding
#
# 1. A decoder has a K/V prefix of P=3 and reads N=4 tokens. What is the shape of one example's
#    causal keep-mask, and how many of its entries are 1?
#
#    <details><summary>Answer</summary>
#
#    `[N, P+N]` = `[4, 7]`. Query i sees the 3 prefix keys and tokens 0..i, so the rows hold
#    3+1, 3+2, 3+3 and 3+4 ones: 22 in all (12 for the prefix, 10 for the causal triangle).
#
#    </details>
#
# 2. During generation the cache holds T=10 keys per layer. What are the shapes of the new
#    token's query, of the keys it is scored against, and of its scores, for one layer?
#
#    <details><summary>Answer</summary>
#
#    Query `[B, H, 1, d]`; keys `[B, H, T+1, d]` = `[B, H, 11, d]` (the 10 cached, then its own);
#    scores `[B, H, 1, T+1]` = `[B, H, 1, 11]`. The mask is all ones and can be skipped.
#
#    </details>
#
# 3. In section 3 the earlier logits did not move at all when the last token changed. Would the
#    same experiment on BERT (lesson 03) give the same result?
#
#    <details><summary>Answer</summary>
#
#    No. BERT's attention is bidirectional (no causal mask): every position attends to the last
#    token, so every position's output changes. Only the causal mask makes "the future cannot
#    change the past" true, and that is what lets one forward pass score all N-1 next-token
#    predictions at once.
#
#    </details>
#
# 4. With N=16 and 8 new tokens, the run counted 156 rows without the cache and 23 with it.
#    Where do 156 and 23 come from, and why 23 and not 24?
#
#    <details><summary>Answer</summary>
#
#    Without the cache, the 8 steps feed 16, 17, ..., 23 rows: `8*16` + (0+1+...+7) = 128 + 28 = 156.
#    With it, the first call feeds the 16 prompt rows and each later step one row. The 8th new
#    token is returned but never fed back (nothing asks for a 9th), so 16 + 7 = 23.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/05_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. Call `build_keep` as `causal_masks` does for the prefix case (P=2, N=5), but with a key mask
#    whose first prefix entry is masked (`key_mask[:, 0] = False`), and print the mask. Which
#    entries change? [`try_1`]
# 2. Decode 50 tokens with and without the cache on `gpt2` with 4 layers
#    (`random_gpt2(preset("gpt2").replace(num_hidden_layers=4))`, a prompt of N=16) and time both.
#    How many rows does each feed, and which is faster? [`try_2`]
# 3. Run `python -m minigpt_ptv2 trace --model decoder --config gpt2-tiny --method prefix --B 2 --N 5 --P 3`
#    and find the rows that look like the cached step of section 6. [`try_3`]
# 4. In `trace_example`, feed the cached step two tokens instead of one (`torch.cat([nxt, nxt], 1)`,
#    `[B, 2]`). What are the shapes of `mask.keep` and of layer 0's scores, and may the first of
#    the two new tokens attend to the second? [`try_4`]
