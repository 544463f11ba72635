# %% [markdown]
# # Lesson 11 — Looking at attention on prefix tokens
#
# A K/V prefix can only act through attention: at every layer, each real token's query scores
# the P prefix keys alongside the N real keys, and the softmax decides how much of the token's
# update comes from the prefix values. So the natural question to ask of a trained prefix is:
#
#     how much attention do real tokens put on the prefix, in which layer, in which head?
#
# The letters: B sentences, N real tokens each (the shorter sentences padded), P prefix
# entries, L layers, H heads of size d, D = `H*d` the hidden size; the pretrained MiniLM has
# L=6, H=12, d=32, D=384. With a K/V prefix, a layer's probabilities are `[B, H, N, P+N]`:
# N real queries (**Nq** = N query rows), and **Nk** = P+N keys, the P prefix keys first. The
# **prefix mass** of one query is the sum of its first P columns, a number in [0, 1].
# `minigpt_ptv2.viz` extracts these numbers (no plotting) and draws them.

# %%
from __future__ import annotations

import torch
from minigpt_ptv2 import BertEncoder, ShapeTrace, preset
from minigpt_ptv2.data import WordPiece, sst2_or_sample
from minigpt_ptv2.prompts import DeepPrompt, KVPrefix, hidden_to_kv
from minigpt_ptv2.trace import dims_for
from minigpt_ptv2.training import TrainConfig, build_task_model, fit, get_task, set_seed
from minigpt_ptv2.viz import attention_maps, key_labels, prefix_mass, save_figure, token_mass

from _course import PARTS, attention_parts, head_shares, head_title, plot_parts, value_norms  # counting: plumbing


SENTENCES = ["a warm , funny and moving film", "the plot makes no sense at all",
             "an absolute masterpiece", "tedious and far too long"]


# %% [markdown]
# ## 1. The probabilities, all layers at once
#
# `attention_maps(model, batch)` runs the model with `output_attentions=True` and stacks every
# layer: `probs [L, B, H, Nq, Nk]`, plus the masks needed to read them. Each real query row
# is a probability distribution over the P+N keys; padding keys get exactly 0. The prefix here
# is fresh: a table of N(0, 1) entries, as `KVPrefix` starts before training.

# %%
def backbone() -> BertEncoder:
    from minigpt_ptv2.pretrained import default_model_dir
    return BertEncoder.from_pretrained(default_model_dir()).eval()


def first_look(model: BertEncoder, batch: dict, P: int):
    torch.manual_seed(0)
    model.attach(KVPrefix(model.config, P).eval())  # fresh table, N(0, 1) entries
    maps = attention_maps(model, batch)
    L, B, H, N, K = maps.probs.shape
    print(f"probs {list(maps.probs.shape)} = [L, B, H, N, P+N] with P={P}, N={N}")
    sums = maps.real.sum(-1).permute(1, 3, 0, 2)[maps.query_mask]  # [real rows, L, H]
    print(f"every real row sums to 1 over P+N keys: max |sum - 1| = {(sums - 1).abs().max():.1e}")
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    by_key = maps.real.permute(1, 4, 0, 2, 3)  # [B, P+N, L, H, N]
    pad = by_key[~maps.key_mask]  # [padding keys, L, H, N]
    print(f"{pad.shape[0]} padding keys in the batch; the most attention any of them gets: {pad.max():.1f}")
    assert float(pad.max()) == 0.0
    return maps


P, n_train, n_dev, batch_size = 8, 1200, 200, 16
model = backbone()
tok = WordPiece.from_model_dir()
batch = tok.encode(SENTENCES)  # [B, N] each, the shorter rows padded
maps = first_look(model, batch, P)


# %% [markdown]
# ## 2. Prefix mass, by definition and by `prefix_mass`
#
# Sum the first P columns, then average over real (non-padding) query rows and the batch:
# one number per layer and head, `[L, H]`.

# %%
def mass_by_hand(maps):
    on_prefix = maps.real[..., :maps.P].sum(-1)  # [L, B, H, N]
    w = maps.query_mask[None, :, None, :].float()  # [1, B, 1, N]
    by_hand = (on_prefix * w).sum((1, 3)) / w.sum((1, 3))  # [L, H]
    mass = prefix_mass(maps.real, maps.P, maps.query_mask)  # [L, H]
    assert torch.allclose(mass, by_hand, atol=1e-6) and torch.equal(mass, maps.mass())
    print("layer  mean mass on the prefix  (min .. max over heads)")
    for i, row in enumerate(mass):
        print(f"  {i}    {row.mean():.3f}                     ({row.min():.3f} .. {row.max():.3f})")
    return mass


mass = mass_by_hand(maps)


# %% [markdown]
# ## 3. Where the rest goes: [CLS], [SEP] and the attention sink
#
# The prefix takes a part; where does the rest of a real token's attention go? We split each
# real query's row into the prefix, the [CLS] key, the [SEP] key, the token itself and every
# other word, and average per layer, without a prefix and with the fresh one.
#
# Without a prefix, MiniLM's heads send a large part of the attention to **[CLS]**: a third of
# it in layer 0, and more than half (up to two thirds) in every later layer, more than all the
# words together. This is the **attention sink**, seen in BERT by Clark et al. (2019, "What does BERT
# look at?"): a softmax must put its weight somewhere, and a head with nothing to find in a
# sentence puts it on a token every sentence has. It is nearly a no-op, because of what [CLS]
# holds: its value vectors are more than ten times shorter than a word's in layers 1-5
# (measured below), so the weight parked there adds almost nothing to the token's update. Read every
# attention picture with that in mind: a bright [CLS] column mostly means "this head is idle
# here", not "this head reads the sentence summary". (How the shares are counted, row by row,
# is bookkeeping: `attention_parts` and `value_norms` in `lessons/_course.py`.)

# %%
def attention_sink(model: BertEncoder, batch: dict, prefixed):
    prompt = model.detach_prompt()
    plain = attention_parts(attention_maps(model, batch)).mean(1)  # [L, 5], no prefix
    norms = value_norms(model, batch)  # [L, 3]
    model.attach(prompt)
    with_prefix = attention_parts(prefixed).mean(1)  # [L, 5]
    print("share of a real token's attention   " + "  ".join(f"{p:>11}" for p in PARTS))
    for i in range(plain.shape[0]):
        for name, row in (("no prefix", plain[i]), ("fresh prefix", with_prefix[i])):
            print(f"layer {i}  {name:<26}" + "  ".join(f"{float(v):>11.3f}" for v in row))
    print("value vector length     [CLS]  [SEP]  words")
    for i, (c, s, w) in enumerate(norms.tolist()):
        print(f"  layer {i}              {c:5.2f}  {s:5.2f}  {w:5.2f}   ([CLS] is {w / c:.0f} times shorter)")
    sink = plain[:, 1] + plain[:, 2]  # [L]: [CLS] + [SEP]
    assert float(plain[0, 1]) > 0.3 and float(plain[1:, 1].min()) > 0.5 and float(sink[1:].min()) > 0.5
    assert bool((plain[1:, 1] > plain[1:, 3] + plain[1:, 4]).all()), "[CLS] outweighs all the words after layer 0"
    assert bool((norms[1:, 0] < norms[1:, 2] / 10).all()), "[CLS] values are short in layers 1-5"
    return plain, with_prefix


plain_parts, prefix_parts = attention_sink(model, batch, maps)
save_figure(plot_parts({"no prefix": plain_parts, f"fresh P={P} prefix": prefix_parts},
                       "Where real tokens' attention goes in MiniLM, by layer (mean over heads)"),
            "11_attention_parts.png", dpi=90)


# %% [markdown]
# A prefix is one more place to put weight. In layer 0, whose inputs the prefix does not touch,
# the softmax arithmetic is exact: the prefix's mass m is taken from every real key in
# proportion, each keeps its old share times (1 - m). So the prefix takes most from wherever
# most of the weight was: in layer 0 from the words (together), in every later layer from the
# [CLS] sink. (From layer 1 on the inputs differ, so the rule holds only roughly.)

# %%
def taken_in_proportion(model: BertEncoder, batch: dict, prefixed, plain, with_prefix):
    """Layer 0 sees the same inputs either way: the prefix mass m scales every real key by (1 - m)."""
    q = prefixed.query_mask  # [B, N]
    prompt = model.detach_prompt()
    before = attention_maps(model, batch).real[0]  # [B, H, N, N]: layer 0, no prefix
    model.attach(prompt)
    after = prefixed.real[0]  # [B, H, N, P+N]
    m = after[..., :prefixed.P].sum(-1, keepdim=True)  # [B, H, N, 1]
    gap = float(((after[..., prefixed.P:] - before * (1 - m)).abs().amax(-1) * q[:, None]).max())  # real rows
    print(f"layer 0: every real key keeps its share times (1 - prefix mass), to {gap:.1e}")
    assert gap < 1e-5
    drop = plain[:, 1:] - with_prefix[:, 1:]  # [L, 4]: what [CLS], [SEP], itself, other words gave up
    print("the prefix's mass came mostly from: " + ", ".join(f"L{i} {PARTS[1 + int(j)]}"
                                                            for i, j in enumerate(drop.argmax(-1))))
    assert int(drop[0].argmax()) == 3 and bool((drop[1:].argmax(-1) == 0).all())


taken_in_proportion(model, batch, maps, plain_parts, prefix_parts)


# %% [markdown]
# ## 4. Zero is not off; masked is (pitfall 4, seen as attention)
#
# A prefix of zeros still has keys: every score against them is exactly 0, and exp(0) = 1 is a
# lot of weight next to real scores. The prefix takes attention and hands back zero values,
# diluting everything else: it behaves like an extra attention sink, a perfectly idle one.
# Masking the entries (`virtual_keep = False`) is the real "off".

# %%
def zero_vs_masked(model: BertEncoder, batch: dict, P: int):
    prompt = model.detach_prompt()
    zero = KVPrefix(model.config, P).eval()
    torch.nn.init.zeros_(zero.embedding.weight)
    model.attach(zero)
    zero_mass = attention_maps(model, batch).mass()
    zero.virtual_keep[:] = False
    masked_mass = attention_maps(model, batch).mass()
    model.attach(prompt)
    print(f"zero prefix:   mass {zero_mass.mean():.3f} on average (max {zero_mass.max():.3f})")
    print(f"masked prefix: mass {masked_mass.abs().max():.1f} everywhere")
    assert float(zero_mass.min()) > 0 and float(masked_mass.abs().max()) == 0.0
    return zero_mass


zero_mass = zero_vs_masked(model, batch, P)


# %% [markdown]
# ## 5. Hidden-state prompts, read the same way
#
# Deep prompts (lesson 07) inject P rows, so the layer returns `[B, H, P+N, P+N]`: the prompt
# rows are queries too. Their outputs are thrown away, so we read only the last N query rows
# (`maps.real`), whose first P columns are the prompt rows' keys. Through the bridge of lesson
# 09 the same prompt as a K/V prefix gives the very same numbers.

# %%
def deep_read_the_same_way(model: BertEncoder, batch: dict, P: int):
    prompt = model.detach_prompt()
    torch.manual_seed(0)
    deep = DeepPrompt(model.config, P, init_std=1.0).eval()
    model.attach(deep)
    hidden = attention_maps(model, batch)
    model.attach(hidden_to_kv(model, deep).eval())
    as_kv = attention_maps(model, batch)
    model.attach(prompt)
    print(f"deep prompt: probs {list(hidden.probs.shape)}, real rows {list(hidden.real.shape)}; "
          f"as a K/V prefix: probs {list(as_kv.probs.shape)}")
    diff = (hidden.mass() - as_kv.mass()).abs().max()
    print(f"prefix mass, deep vs its bridged K/V prefix: max |difference| = {diff:.1e}")
    assert diff < 1e-5


deep_read_the_same_way(model, batch, P)


# %% [markdown]
# ## 6. Before and after training, on a prefix that has learned
#
# Now a fresh K/V prefix (and a head) learns SST-2, as in lesson 10, and we compare the
# attention at initialisation with the attention after. A comparison is only worth reading if
# the prefix has learned something, so the run measures that first, on 200 dev sentences: the
# accuracy (0.5 is chance) and the mean cross-entropy (ln 2 = 0.693 is a coin flip), before and
# after. To learn in the seconds a lesson can spend, it trains on short sentences (the training
# sentences of at most 12 word pieces, [CLS] and [SEP] included; SST-2's training set is full of
# short phrases, and a batch of short rows is quick), one epoch in batches of 16 at lr 3e-2.
# Its dev sentences are the usual, longer ones.

# %%
def short_sentences(tok: WordPiece, n_train: int, n_dev: int, max_tokens: int = 12):
    """The first n_train training sentences of at most max_tokens word pieces, and n_dev dev ones."""
    train, dev, _ = sst2_or_sample(None, None, n_dev)  # SST-2, or the embedded SST-2 sample
    rows = tok.token_rows([e.text for e in train], max_length=128)  # word pieces, [CLS] and [SEP] included
    return [e for e, row in zip(train, rows) if len(row) <= max_tokens][:n_train], dev


@torch.no_grad()
def dev_score(task_model, dev_loader) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over the dev sentences."""
    task_model.eval()
    right, loss, n = 0, 0.0, 0
    for b in dev_loader:
        logits = task_model(b["input_ids"], b["attention_mask"], task="sst2")  # [B, 2]
        loss += float(torch.nn.functional.cross_entropy(logits, b["labels"], reduction="sum"))
        right, n = right + int((logits.argmax(-1) == b["labels"]).sum()), n + len(logits)
    return right / n, loss / n


def train_prefix(model: BertEncoder, tok: WordPiece, batch: dict, P: int, n_train: int, n_dev: int,
                 batch_size: int, check: bool = True):
    """Attach a fresh prefix + head, record the attention at initialisation, train one epoch.
    Returns (task model, maps at initialisation, the table at initialisation)."""
    set_seed(0)
    train, dev = short_sentences(tok, n_train, n_dev)
    task = get_task("sst2")
    dev_loader = task.batches(sorted(dev, key=lambda e: len(e.text)), tok, batch_size=64, max_length=48)
    task_model = build_task_model("sst2", "prefix", P, encoder=model).eval()
    before, start = attention_maps(model, batch), model.prompt.embedding.weight.detach().clone()  # [P, L*2*D]
    scores = [dev_score(task_model, dev_loader)]
    loader = task.batches(train, tok, batch_size=batch_size, shuffle=True, max_length=12)
    fit(task_model, loader, TrainConfig(epochs=1, lr=3e-2, progress=False), task="sst2")
    scores.append(dev_score(task_model, dev_loader))
    for name, (accuracy, loss) in zip(("at initialisation", "trained"), scores):
        print(f"{name:<17}: dev accuracy {accuracy:.3f}, dev loss {loss:.3f} (ln 2 = 0.693)")
    print(f"({len(train)} short training sentences, {len(loader)} steps; {len(dev)} dev sentences)")
    if check:
        assert scores[1][0] >= 0.62 and scores[1][1] <= 0.63, f"the prefix has not learned: {scores[1]}"
    return task_model.eval(), before, start


task_model, before, start = train_prefix(model, tok, batch, P, n_train, n_dev, batch_size)


# %% [markdown]
# It has learned: about 0.67 of the dev sentences right against 0.52 at initialisation, and a
# dev loss of about 0.58, well under the coin flip's 0.693. (A longer run does better; these
# seconds are enough to compare a prefix that knows something with one that knows nothing.)
#
# What training changed in the attention: how much prefix mass moved, whether the same heads
# read the prefix (the correlation of the two `[L, H]` tables, rows: layers, columns: heads,
# drawn side by side on one colour scale), and how far the table's keys and its values moved
# from where they started. Adam moves each entry by about the learning rate per step, so 75
# steps at 3e-2 move an N(0, 1) table by about a fifth of its length. The mean mass hardly
# changes (about 0.22 either way), but it is redistributed: some (layer, head) cells gain or
# lose about 0.2, and the correlation of the two tables drops to about 0.8. Which heads read the
# prefix is still mostly set by the frozen queries, and training moved the rest (asserted: a
# correlation between 0.5 and 0.95, keys and values moved by 10% to 50% of their length).

# %%
def mass_moved(model: BertEncoder, batch: dict, before, start: torch.Tensor, check: bool = True):
    """Compare the prefix mass at initialisation and trained; draw both tables."""
    from minigpt_ptv2.viz.plots import plot_prefix_mass
    after = attention_maps(model, batch)
    a, b = before.mass(), after.mass()  # [L, H] each
    print(f"mean prefix mass {a.mean():.3f} at initialisation, {b.mean():.3f} trained; the largest change "
          f"in one (layer, head): {(b - a).abs().max():.3f}")
    corr = float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
    print(f"correlation of the two [L, H] mass tables: {corr:.3f} (1 = the same heads read the prefix, as much)")
    P, L = before.P, model.config.num_hidden_layers
    kv0 = start.reshape(P, L, 2, -1)  # [P, L, 2, D]: keys, then values, of every layer
    kv1 = model.prompt.embedding.weight.detach().reshape(P, L, 2, -1)  # [P, L, 2, D]
    moved = [float((kv1[:, :, j] - kv0[:, :, j]).norm() / kv0[:, :, j].norm()) for j in (0, 1)]
    print(f"the table moved by {moved[0]:.1%} of its length in its keys, {moved[1]:.1%} in its values")
    if check:
        assert 0.5 < corr < 0.95 and all(0.1 < m < 0.5 for m in moved), (corr, moved)
    _, fig = plot_prefix_mass({"at initialisation": a, "trained": b}, None,
                              title=f"Attention mass real tokens put on a P={P} K/V prefix, MiniLM "
                                    f"(rows: layers, columns: heads)")
    save_figure(fig, "11_prefix_mass.png", dpi=90)
    return after


after = mass_moved(model, batch, before, start)


# %% [markdown]
# The second figure: for the layer with the most prefix mass, full matrices of four heads: the two
# that read the prefix most and the two that sit most on [CLS]. Rows are the query tokens of
# the first sentence, columns the keys: the prefix entries p0..p{P-1} left of the white line,
# the sentence's WordPiece tokens right of it. Each head's title gives, measured over the four
# sentences, its share on the prefix and the largest other part: "[CLS] sink" or "[SEP] sink"
# (the idle weight of section 3), "attends to itself", "previous token" or "next token" (a
# diagonal just off the main one), or "the rest spread out" when no part takes a quarter.
#
# The [CLS] sink is what catches the eye even in the heads that read the prefix most: the
# bright column just right of the white line is [CLS]. A prefix's share is spread over its P
# columns, while the sink's sits in one, so one [CLS] cell outshines every prefix cell in the
# [CLS]-sink heads. Compare shares in the titles, not brightness.

# %%
def trained_heads(after, tok: WordPiece, batch: dict):
    """The layer with the most prefix mass: every head's roles, and four heads drawn."""
    from minigpt_ptv2.viz.plots import plot_attention_heads
    P = after.P
    layer = int(after.mass().mean(1).argmax())
    share = head_shares(after, layer)  # [H, 6]
    on_prefix = share[:, 0].argsort(descending=True)[:2].tolist()
    on_cls = [h for h in share[:, 1].argsort(descending=True).tolist() if h not in on_prefix][:2]
    heads = on_prefix + on_cls
    print(f"layer {layer} (the most prefix mass), per head over the {len(SENTENCES)} sentences:")
    for h in range(share.shape[0]):
        print(f"  {head_title(h, share[h], P)}")
    assert float(share[on_cls, 1].min()) > float(share[on_cls, 0].max()) / P, "a [CLS] column outweighs a prefix one"
    toks = tok.tokens(batch["input_ids"][0][after.query_mask[0]])
    _, fig = plot_attention_heads(after.matrix(layer, 0, heads), P, key_labels(P, toks), toks, None, heads,
                                  title=f"Trained prefix, layer {layer}, first sentence: the two heads that read the "
                                        f"prefix most (top), the two that sit most on the [CLS] sink (bottom)",
                                  head_titles=[head_title(h, share[h], P) for h in heads])
    save_figure(fig, "11_attention_heads.png", dpi=90)


trained_heads(after, tok, batch)


# %% [markdown]
# ## 7. Which tokens lean on the prefix?
#
# `token_mass(maps, row)` averages over heads and keeps the tokens: `[L, n]` for one sentence
# of n real tokens. Read it with section 3 in mind: a query whose heads sit on [CLS] has less
# left for the prefix.

# %%
def per_token(maps, tok: WordPiece, batch: dict, row: int = 0):
    tm = token_mass(maps, row)  # [L, n]
    toks = tok.tokens(batch["input_ids"][row][maps.query_mask[row]])
    print("token        " + " ".join(f"L{i:<4}" for i in range(tm.shape[0])))
    for j, t in enumerate(toks):
        print(f"{t:<12} " + " ".join(f"{float(v):.2f} " for v in tm[:, j]))
    return tm


by_token = per_token(after, tok, batch)


# %% [markdown]
# ## 8. The shapes, recorded
#
# The attention probabilities are a capture point of their own on the explicit path
# (`output_attentions=True`): `scores` and `probs` are `[B, H, N, P+N]`. Tiny BERT (D=24, H=4,
# d=6, L=3, feed-forward width D_ff=40, vocabulary V=120), layer 0 shown, B=2, N=7, P=5, the
# second row padded by 2.

# %%
def trace_example(B=2, N=7, P=5, layers=3) -> ShapeTrace:
    torch.manual_seed(0)
    cfg = preset("bert-tiny").replace(num_hidden_layers=layers)
    model = BertEncoder(cfg, prompt=KVPrefix(cfg, P)).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)
    mask[-1, -2:] = 0
    with ShapeTrace(dims=dims_for(cfg, B=B, N=N, P=P), keep=("attn.probs",), layers=(0,)) as tr:
        maps = attention_maps(model, {"input_ids": ids, "attention_mask": mask})
    assert torch.equal(tr.tensors["layer0.attn.probs"], maps.probs[0])
    return tr


print(trace_example().table())


# %% [markdown]
# ## What to remember
#
# - A K/V prefix acts only through attention: per layer, `[B, H, N, P+N]` probabilities whose
#   first P columns are the prefix. Their row sum is the prefix mass, in [0, 1].
# - `attention_maps` -> `.mass()` gives one `[L, H]` table; averaging leaves out padding rows.
# - Most of MiniLM's attention sits on [CLS], whose value vectors are tiny: an attention sink,
#   where idle heads park their weight. A prefix takes its mass from every real key in
#   proportion (exactly so in layer 0), so after layer 0 mostly from the sink.
# - A zero prefix still takes attention (score 0 is not -inf); a masked one takes exactly none.
# - Hidden-state prompts are read the same way after dropping their own P query rows, and give
#   the same numbers as their bridged K/V prefix.
# - Attention mass says where the prefix is *read*, not what it *contributes*: a head can put
#   much weight on values that barely change the output ([CLS] is the proof). Treat the
#   pictures as a map, not proof.
#
# ## Check your understanding
#
# 1. With P=8 and sentences padded to N=9, what shape does `attention_maps(...).probs` have for
#    MiniLM and B=4, and what would it be under a deep prompt?
#
#    <details><summary>Answer</summary>
#
#    [L, B, H, N, P+N] = [6, 4, 12, 9, 17] for the K/V prefix. A deep prompt's rows are queries
#    too: [6, 4, 12, 17, 17]; `maps.real` keeps the last N query rows, [6, 4, 12, 9, 17].
#
#    </details>
#
# 2. In layer 0, a query gave 30% of its attention to [CLS] without a prefix. A prefix now takes
#    40% of that query's attention. What share does [CLS] get now, and why is that exact in
#    layer 0 only?
#
#    <details><summary>Answer</summary>
#
#    30% * (1 - 0.4) = 18%. The softmax divides every exp(score) by one sum; adding P prefix keys
#    adds to that sum and changes no real key's score, so every real key's share scales by the same
#    factor. In layer 0 the real keys' scores are the same with and without the prefix; from layer 1
#    on the inputs already carry the prefix's effect, so the scores themselves change.
#
#    </details>
#
# 3. A head puts 60% of every token's attention on [CLS]. Why is it wrong to conclude that the
#    head "reads the sentence summary"?
#
#    <details><summary>Answer</summary>
#
#    What a head adds is the attention-weighted sum of the values, and [CLS]'s value vectors are
#    more than ten times shorter than a word's in MiniLM's layers 1-5: 60% of the weight on [CLS] adds less
#    than a few percent of the weight on a word would. The head is parked on a sink, close to idle.
#
#    </details>
#
# 4. Why does a zero prefix take attention at all, and what does it add to the output?
#
#    <details><summary>Answer</summary>
#
#    Its keys are zero, so each score against them is 0 and each contributes exp(0) = 1 to the
#    softmax's sum, as much as a real key with score 0: it takes a share. Its values are zero too,
#    so it adds nothing; it only shrinks what the real keys give, an idle sink of its own.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/11_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. Attach a fresh prefix again (`maps = first_look(model, batch, P)`), mask half of it
#    (`model.prompt.virtual_keep[: P // 2] = False`) and take `attention_maps` again: where does
#    the freed attention go, to the other prefix entries or to the tokens? Check layer 0 first.
#    [`try_1`]
# 2. With that fresh prefix, compare `token_mass(maps, row)` of [CLS] and [SEP] with the words'
#    in each of the four sentences: which rows lean on the prefix least, and which most? [`try_2`]
# 3. Attach a zero prefix (section 4) with P = 1, 8 and 32: how does the mean prefix mass grow
#    with P, and why does it not grow in proportion? [`try_3`]
# 4. Take `attention_parts(attention_maps(model, batch))` without any prefix
#    (`model.detach_prompt()` first): which layer leans on [CLS] the most, and which head of it?
#    [`try_4`]
