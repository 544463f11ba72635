# %% [markdown]
# # Lesson 12 — Generation with a prefix
#
# On a decoder, a K/V prefix and a KV cache are the same object. Generation keeps, per layer,
# the keys and values of everything seen so far, `[B, H, T, d]`: B rows of the batch, H heads of
# d features each, and **T** keys already cached. P-Tuning v2 simply puts its P trained entries
# at the front of that list before the first real token arrives:
#
#     cache after the prompt step:  [ prefix K/V (P) | prompt tokens (N) ]          T = P + N
#     after each new token:         [ prefix K/V (P) | prompt tokens (N) | new ... ]
#
# ![The KV cache: a prefix that grows one entry a step](../../figures/kv_cache.png)
#
# So nothing special happens at decoding time: the first step attends to the prefix like any
# forward pass, returns a cache that already contains it, and every later step reads it from
# there. We check that the cache really starts with the prefix, that cached decoding equals
# full recomputation, and that left padding does not change what a row generates.
#
# The other letters: N prompt tokens per row, L layers, D hidden size (D = H * d), V vocabulary
# size (the logits are `[B, N, V]`). No pretrained GPT-2 can be fetched offline, so sections
# 0-6 use random weights: the tokens are meaningless, but every equality is exact behaviour,
# not luck. Section 7 then trains a prefix on the course's small pretrained decoder and shows
# what it writes, in words.

# %%
from __future__ import annotations

import torch

from _course import RUNS, print_speech, sentence_batch
from minigpt_ptv2 import GPT2Decoder, ShapeTrace, preset
from minigpt_ptv2.data import load_sst2_sample
from minigpt_ptv2.data.bpe import ByteLevelBPE
from minigpt_ptv2.prompts import KVPrefix
from minigpt_ptv2.trace import dims_for, side_by_side
from minigpt_ptv2.training.lm import load_decoder
from minigpt_ptv2.training.pretrain import decoder_dir
from minigpt_ptv2.training.steer import speak



# %% [markdown]
# ## 0. A random GPT-2 with a prefix
#
# GPT-2's shape with 2 layers (D=768, H=12, d=64, V=50,257), and
# a `KVPrefix` with a N(0, 0.5) table. The weights are drawn from N(0, 0.2), ten times GPT-2's
# own init (lesson 05): with GPT-2's N(0, 0.02), a random model's greedy decoding soon repeats
# one token, which would make "the same tokens" below an easy test to pass. Counted here.

# %%
def model_with_prefix(cfg, P: int, seed: int = 0, positions: str = "real", std: float = 0.2) -> GPT2Decoder:
    torch.manual_seed(seed)
    model = GPT2Decoder(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, std)
    return model.attach(KVPrefix(cfg, P, init_std=0.5, positions=positions).eval())


def greedy_variety(cfg, P: int, ids: torch.Tensor, steps: int, model: GPT2Decoder) -> dict:
    """Distinct tokens among `steps` greedy tokens of row 0, for GPT-2's init and for ours."""
    small = model_with_prefix(cfg, P, std=0.02)
    counts = {std: len(set(m.generate(ids, steps)[0, -steps:].tolist())) for std, m in ((0.02, small), (0.2, model))}
    print(f"distinct tokens among {steps} greedy ones: weights N(0, 0.02) {counts[0.02]}, N(0, 0.2) {counts[0.2]}")
    assert counts[0.02] <= 2 < counts[0.2]  # GPT-2's init: one or two tokens, repeated
    return counts


cfg = preset("gpt2").replace(num_hidden_layers=2)
P, N, steps = 16, 16, 8
model = model_with_prefix(cfg, P)
torch.manual_seed(1)
ids = torch.randint(1, cfg.vocab_size, (2, N))  # [B, N], B = 2
print(f"D={cfg.hidden_size}, L={cfg.num_hidden_layers}, H={cfg.num_attention_heads}, d={cfg.head_dim}, "
      f"V={cfg.vocab_size}; P={P}, N={N}, B=2")
variety = greedy_variety(cfg, P, ids, steps, model)


# %% [markdown]
# ## 1. The cache starts from the prefix
#
# After the prompt step, each layer's cached keys are `[B, H, P+N, d]`, and their first P
# entries are *exactly* the prefix keys of that layer: `concat_prefix` put them there. The
# cache's key mask marks them as visible, and the next position is N, because real tokens
# count from 0 whatever P is (positions="real"). Under positions="shifted" (PEFT's convention)
# the same cache continues from P+N.

# %%
@torch.no_grad()
def cache_starts_from_prefix(model: GPT2Decoder, ids: torch.Tensor):
    P = model.prompt.num_virtual
    out = model(ids, use_cache=True, logits_to_keep=1)
    kv = model.prompt.layer_kv()  # [L, 2, H, P, d]
    B, N = ids.shape
    print(f"prompt step: N={N} tokens, cache length T={out.cache.length} = P + N = {P} + {N}")
    for i, (k, v) in enumerate(out.cache.layers):
        assert k.shape == (B, model.config.num_attention_heads, P + N, model.config.head_dim)
        assert torch.equal(k[:, :, :P], kv[i, 0].expand(B, -1, -1, -1))
        assert torch.equal(v[:, :, :P], kv[i, 1].expand(B, -1, -1, -1))
    visible = bool(out.cache.key_mask[:, :P].all())
    print(f"layer 0 cached K {list(out.cache.layers[0][0].shape)} = [B, H, P+N, d]: first P entries == the "
          f"prefix K in every layer; key mask over the prefix all True: {visible}")
    print(f"next position, positions='real':    {out.cache.next_position.tolist()} (N: the prefix has no position)")
    assert visible and out.cache.next_position.tolist() == [N] * B
    real = model.prompt
    same = KVPrefix(model.config, P, positions="shifted")  # the same table under PEFT's convention
    same.load_state_dict(real.state_dict())
    shifted = model.attach(same)(ids, use_cache=True, logits_to_keep=1).cache.next_position.tolist()
    model.attach(real)
    print(f"next position, positions='shifted': {shifted} (P+N)")
    assert shifted == [P + N] * B
    return out


cache = cache_starts_from_prefix(model, ids)


# %% [markdown]
# ## 2. Cached decoding equals full recomputation
#
# `generate(..., use_cache=False)` recomputes the whole sequence (prefix included) at every
# step; `use_cache=True` feeds one token per step. Same function, so the same greedy tokens,
# and at every step the same logits up to float rounding. (`logits_to_keep=1` asks only for the
# last row of logits: the `[D, V]` head is the largest product of a step, and a step reads one row.)

# %%
@torch.no_grad()
def cached_equals_full(model: GPT2Decoder, ids: torch.Tensor, steps: int):
    cached = model.generate(ids, steps, use_cache=True)  # [B, N + steps]
    full = model.generate(ids, steps, use_cache=False)
    assert torch.equal(cached, full)
    worst, scale, out = 0.0, 0.0, model(ids, use_cache=True, logits_to_keep=1)
    for t in range(ids.shape[1], cached.shape[1]):  # step by step, compare the logits
        recomputed = model(cached[:, :t], logits_to_keep=1).logits[:, -1]  # [B, V]
        worst = max(worst, float((out.logits[:, -1] - recomputed).abs().max()))
        scale = max(scale, float(recomputed.abs().max()))
        out = model(cached[:, t:t + 1], past=out.cache, use_cache=True)
    print(f"{steps} greedy tokens: identical with and without the cache; largest logit difference "
          f"over the steps {worst:.1e}, for logits as large as {scale:.1f}")
    assert worst <= 1e-4 * max(scale, 1.0), "float rounding only"
    return cached


tokens = cached_equals_full(model, ids, steps)


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
@torch.no_grad()
def left_padding(model: GPT2Decoder, short: torch.Tensor, long: torch.Tensor, steps: int):
    P, pad = model.prompt.num_virtual, long.shape[0] - short.shape[0]
    ids = torch.stack([torch.cat([torch.zeros(pad, dtype=torch.long), short]), long])  # [2, N]
    mask = torch.ones_like(ids)
    mask[0, :pad] = 0
    keys = model(ids, attention_mask=mask, use_cache=True, logits_to_keep=1).cache.key_mask  # [2, P+N]
    print(f"row 0's key mask: prefix {keys[0, :P].int().tolist()}, then {keys[0, P:].int().tolist()}")
    assert keys[:, :P].all() and not keys[0, P:P + pad].any() and keys[0, P + pad:].all()
    batched = model.generate(ids, steps, attention_mask=mask)  # [2, N + steps]
    alone = model.generate(short[None], steps)  # [1, len(short) + steps]
    assert torch.equal(batched[0, pad:], alone[0]) and torch.equal(
        batched[1], model.generate(long[None], steps)[0])
    print(f"row 0 left-padded by {pad}: generates {batched[0, -steps:].tolist()}, alone "
          f"{alone[0, -steps:].tolist()}")
    naive = model(ids, attention_mask=mask, position_ids=torch.arange(ids.shape[1]).expand(2, -1))
    right = model(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    gap = float((naive.logits[0, -1] - right.logits[0, -1]).abs().max())
    print(f"positions counting the pads instead: last-token logits of row 0 move by {gap:.2e}")
    assert gap > 1e-2


left_padding(model, ids[0, N // 2:], ids[1], steps)


# %% [markdown]
# ## 4. Sampling, reproducibly
#
# Greedy picks the argmax; sampling draws from softmax(logits / temperature), optionally
# restricted to the top k. Pass a `torch.Generator` and the draw is reproducible: the same seed
# gives the same tokens, another seed (here) other tokens, and every first draw is one of the k
# most likely tokens of the prompt step.

# %%
@torch.no_grad()
def sampling(model: GPT2Decoder, ids: torch.Tensor, steps: int, k: int = 20):
    draws = [model.generate(ids, steps, do_sample=True, top_k=k, temperature=1.0,
                            generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    first_top = model(ids, logits_to_keep=1).logits[:, -1].topk(k).indices  # [B, k]
    in_top = all(int(d[b, ids.shape[1]]) in first_top[b].tolist() for d in draws for b in range(ids.shape[0]))
    print(f"sampled (top_k={k}, seed 1): {draws[0][0, -steps:].tolist()}; seed 1 again: same; "
          f"seed 2: {draws[2][0, -steps:].tolist()}; first draws among the top {k}: {in_top}")
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2]) and in_top


sampling(model, ids, steps)


# %% [markdown]
# ## 5. The shapes, recorded
#
# Tiny GPT-2 (D=24, H=4, d=6, V=130, L=3, feed-forward width D_ff=96), layer 0 shown, B=8, N=7,
# P=5 (every letter a different size). The prompt step looks like an encoder with a prefix, plus
# the causal keep-mask `[B, 1, N, P+N]`. The cached step feeds one token: the cache of
# T = P+N = 12 entries arrives as `prefix_k`/`prefix_v` `[B, H, T, d]`, where the prefix was
# one step before. The prefix table is not read again.

# %%
def trace_example(B=8, N=7, P=5, layers=3):
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


prompt_step, cached_step = trace_example()
print(side_by_side(prompt_step, cached_step, ("prompt step", "one cached step (T = P+N)")))


# %% [markdown]
# ## 6. One backbone, several prefixes in one batch
#
# Prompt tuning's practical promise: one frozen model, many tasks, each a prefix of a few
# kilobytes. Since a prefix is just the first entries of every row's keys, *each row of a batch
# can have its own*. `MixedPrompts` holds M trained prefixes (M members, each with its own P_m)
# and, told which member each row uses, gives the model one `[B, H, P, d]` prefix per layer with
# P = max P_m: member m's P_m entries right-aligned, the P - P_m in front of them masked for that
# row. A masked key gets softmax weight exactly 0, so each row computes what its own prefix
# computes alone. Here two "tasks" with P and P // 3 entries generate in one left-padded batch,
# rows alternating, and every row's tokens equal its prefix's run alone.
# (`training/mixed.py` does the same for encoder checkpoints with their task heads:
# `python -m minigpt_ptv2 predict runs/sst2-prefix --also runs/conll-prefix --file tagged.txt`.)

# %%
@torch.no_grad()
def two_prefixes_one_batch(model: GPT2Decoder, ids: torch.Tensor, steps: int):
    from minigpt_ptv2.prompts.mixed import MixedPrompts
    cfg, P = model.config, model.prompt.num_virtual
    torch.manual_seed(7)
    members = {"long": model.detach_prompt(), "short": KVPrefix(cfg, max(1, P // 3), init_std=0.5).eval()}
    rows = ["long", "short"] * ids.shape[0]  # B = 2 x the rows of ids: every row under both prefixes
    batch = ids.repeat_interleave(2, dim=0)  # [B, N]
    mask = torch.ones_like(batch)
    mask[:2, :2] = 0  # the first two rows left-padded by 2
    alone = {n: model.attach(m).generate(batch, steps, attention_mask=mask) for n, m in members.items()}
    mixed_prompt = MixedPrompts(cfg, members).use_rows(rows)
    mixed = model.attach(mixed_prompt).generate(batch, steps, attention_mask=mask)  # [B, N + steps]
    keys = model(batch, attention_mask=mask, use_cache=True, logits_to_keep=1).cache.key_mask  # [B, P+N]
    print(f"P_m = {members['long'].num_virtual} and {members['short'].num_virtual}: row 1 ('short') key mask, "
          f"prefix part {keys[1, :P].int().tolist()}")
    same = all(torch.equal(mixed[i], alone[n][i]) for i, n in enumerate(rows))
    differ = sum(not torch.equal(alone["long"][i], alone["short"][i]) for i in range(len(rows)))
    print(f"every row of the mixed batch generates what its prefix generates alone: {same}; "
          f"rows where the two prefixes disagree: {differ} of {len(rows)}")
    assert same and differ > 0 and keys[1, :P - members["short"].num_virtual].logical_not().all()
    model.attach(members["long"])  # the lesson's model as it was
    return mixed


rows = two_prefixes_one_batch(model, ids, steps)


# %% [markdown]
# ## 7. A prefix on a decoder that speaks
#
# Everything above holds for any weights. Now the same on the course's small pretrained decoder
# (lesson 05, section 7: a LLaMA-style L=4, D=64 decoder trained from scratch on the SST-2
# sample's sentences; `decoder_dir()` builds it, about a minute of CPU, if no earlier lesson has).
# We train a K/V prefix of P=10 entries on the sample's *positive* sentences with the decoder
# frozen: lesson 10's step with the next-token loss of lesson 05 (`labels` = the tokens, -100 on
# padding), a sentence read as `newline, sentence, newline` as in pretraining. This is what
# `python -m minigpt_ptv2 train lm prefix --text-file positive.txt` does at a larger budget.

# %%
def train_prefix(decoder, tok, sentences: list[str], P: int, steps: int, lr: float = 1e-2, seed: int = 0):
    torch.manual_seed(seed)
    prefix = KVPrefix(decoder.config, P)  # table [P, L*2*H_kv*d]
    decoder.requires_grad_(False).attach(prefix)  # the decoder frozen, the prefix trains
    optimizer = torch.optim.AdamW(prefix.parameters(), lr=lr)
    limit = decoder.config.max_position_embeddings  # a sentence longer than the positions is cut
    held = sentence_batch(tok, sentences[:64], limit)  # ids, mask, labels [64, N]: never trained on
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        before = decoder(held[0], attention_mask=held[1], labels=held[2]).loss
    for step in range(steps):
        pick = torch.randint(64, len(sentences), (16,), generator=g).tolist()
        ids, mask, labels = sentence_batch(tok, [sentences[i] for i in pick], limit)  # [16, N] each
        loss = decoder(ids, attention_mask=mask, labels=labels).loss  # next-token loss, one number
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        after = decoder(held[0], attention_mask=held[1], labels=held[2]).loss
    print(f"{steps} steps, P={P} ({prefix.num_trainable():,} numbers trained, decoder frozen): held-out "
          f"loss {before:.3f} -> {after:.3f} nats per token")
    return prefix.eval(), before.item(), after.item()


folder = decoder_dir(RUNS / "decoder")  # the course's pretrained decoder (lesson 05)
decoder, tok = load_decoder(folder), ByteLevelBPE.from_model_dir(folder)
positive = [e.text for e in load_sst2_sample("train") if e.label == 1]
print("no prefix, after 'the film is':")
print_speech(speak(decoder, tok, "the film is", n=3, seed=0))
prefix, before, after = train_prefix(decoder, tok, positive, P=10, steps=60)


# %% [markdown]
# The held-out loss falls a little: the prefix has learned something about how the positive
# sentences are written. What does the decoder write with it attached? The prefix is the first
# P entries of the cache (section 1), so the cached and the recomputed texts must still be equal.

# %%
def writes_with_prefix(decoder, tok, start: str) -> dict:
    said = speak(decoder, tok, start, n=3, seed=0)  # the prefix is attached
    print(f"with the trained prefix (P={decoder.prompt.num_virtual}), after '{start}':")
    print_speech(said)
    assert said["greedy"] == said["greedy, no cache"] and said["sampled"] == said["sampled, no cache"]
    return said


said = writes_with_prefix(decoder, tok, "the film is")


# %% [markdown]
# ## What to remember
#
# - On a decoder, a K/V prefix *is* the first P entries of the KV cache: after the prompt step
#   the cache is `[B, H, P+N, d]` per layer and its first P entries are the prefix, exactly.
# - Cached decoding and full recomputation are the same function; test one against the other.
# - Left padding needs two things: pads masked (the prefix never is) and positions counting
#   real tokens only. Then a row generates the same tokens padded in a batch as alone.
# - Under positions="real" the prefix takes no position: real tokens start at 0, the next token
#   at N, and the position table's full length stays available (lesson 13, pitfall 1).
# - Rows of one batch can carry different prefixes (different tasks, different P): pad each to
#   the longest, right-aligned, and mask the padding per row. One frozen backbone then serves
#   many tasks in one forward pass, and each row is what its task's prefix gives alone.
# - On a pretrained decoder, a prefix trained by next-token loss on some sentences changes what
#   the frozen model writes, and the cache still changes nothing. Whether it writes *positive*
#   text is a question for a judge: lesson 16.
#
# ## Check your understanding
#
# 1. GPT-2 small (L=12, H=12, d=64) with a P=20 prefix reads a prompt of N=30 tokens, B=4. What
#    is the shape of each layer's cached K after the prompt step, and after 5 more tokens have
#    been fed one at a time?
#
#    <details><summary>Answer</summary>
#
#    `[4, 12, 50, 64]` = [B, H, P+N, d] after the prompt step, then `[4, 12, 55, 64]`: each fed
#    token adds one key per layer and head. The prefix is in there from the start (T = P + N).
#
#    </details>
#
# 2. Same model, positions="real": which position does the first token fed after the prompt
#    get? And under positions="shifted"?
#
#    <details><summary>Answer</summary>
#
#    30 (= N): real tokens count from 0 and the prefix has no position. Under "shifted" the
#    prompt sat at P..P+N-1 = 20..49, so the next token gets 50 (= P+N), and the longest text
#    shrinks by P (1024 - 20 positions for GPT-2).
#
#    </details>
#
# 3. A row is left-padded with 3 pads. Why must its pads be masked but not the prefix, and what
#    goes wrong if its positions count the pads?
#
#    <details><summary>Answer</summary>
#
#    Pads are not part of the text, so no query may read them; the prefix is the trained
#    context every row shares, so every query must read it. With pads counted, the first real
#    token sits at position 3 instead of 0: GPT-2 adds another row of its position table to
#    every real token, so the row computes a different function (section 3: logits move by far
#    more than rounding) and generates other tokens than it would alone.
#
#    </details>
#
# 4. `generate(ids, 12, use_cache=False)` after a prompt of N=16 tokens: how many token rows go
#    through the layers in total, and how many with the cache?
#
#    <details><summary>Answer</summary>
#
#    Without the cache, 12 forward passes of 16, 17, ..., 27 rows (the twelfth token is returned,
#    never fed back): `12*16` + (0+1+...+11) = 192 + 66 = 258 rows. With the cache, 16 rows, then
#    11 steps of one row: 27. The P prefix keys add keys to every step, never rows.
#
#    </details>
#
# 5. A batch mixes a P=16 and a P=4 prefix. How many prefix keys does each row's attention
#    see, how many of them does a P=4 row read, and why must the P=4 entries be the *last* four
#    under rotary positions (lesson 15) but may sit anywhere under GPT-2's learned positions?
#
#    <details><summary>Answer</summary>
#
#    Every row has 16 prefix keys per layer and head (P = max P_m); a P=4 row's mask keeps 4 of
#    them, the other 12 get weight exactly 0. GPT-2's prefix entries carry no position, so their
#    order among the masked ones changes nothing. Under RoPE a turned prefix key is at position
#    -P..-1 (real) just before the text; right-aligned, a P=4 member's keys sit at -4..-1 in the
#    mixed batch too, exactly where they sit alone.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/12_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. Attach the prefix with `positions="shifted"` (PEFT's convention) to the model of section 0
#    (`model_with_prefix(cfg, P, positions="shifted")`), print `cache.next_position` after the
#    prompt step and generate greedily: where do the real tokens start now, and are the tokens
#    the same as under "real"? [`try_1`]
# 2. Mask the prefix (`model.prompt.virtual_keep[:] = False`) and check that generation equals
#    the plain model's (`model.detach_prompt()`). How long is the cache after the prompt step?
#    [`try_2`]
# 3. Count the token rows that enter the layers (the first axis after B of `embeddings.out`, in a
#    `ShapeTrace`) while generating 32 tokens after a 16-token prompt, with and without the cache,
#    on `preset("gpt2")` with 2 layers; time both. [`try_3`]
# 4. `python -m minigpt_ptv2 trace --model decoder --config gpt2-tiny --method prefix --B 2 --N 5 --P 3`:
#    which rows carry P+N, and why is the keep-mask `[B, 1, N, P+N]` here when an encoder's is
#    `[B, 1, 1, P+N]`? [`try_4`]
# 5. Give the two members of section 6 `positions="shifted"` with different P: what does
#    `MixedPrompts` say, and why? Then give both the same P and check each row still generates
#    what its prefix generates alone. [`try_5`]
