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
from matplotlib.figure import Figure

from minigpt_ptv2 import BertEncoder, ShapeTrace, preset
from minigpt_ptv2.data import WordPiece, sst2_or_sample
from minigpt_ptv2.prompts import DeepPrompt, KVPrefix, hidden_to_kv
from minigpt_ptv2.trace import dims_for
from minigpt_ptv2.viz import attention_maps, key_labels, prefix_mass, save_figure, token_mass


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


P, n_train, batch_size = 8, 320, 8
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
# here", not "this head reads the sentence summary".
#
# A prefix is one more place to put weight. In layer 0, whose inputs the prefix does not touch,
# the softmax arithmetic is exact: the prefix's mass m is taken from every real key in
# proportion, each keeps its old share times (1 - m). So the prefix takes most from wherever
# most of the weight was: in layer 0 from the words (together), in every later layer from the
# [CLS] sink. (From layer 1 on the inputs differ, so the rule holds only roughly.)

# %%
PARTS = ("prefix", "[CLS]", "[SEP]", "itself", "other words")


def attention_parts(maps) -> torch.Tensor:
    """[L, H, 5]: the share of a real token's attention on each of PARTS, averaged over the real
    query rows of the batch. A [CLS] or [SEP] query's own column counts as [CLS] / [SEP]."""
    L, B = maps.probs.shape[:2]
    P = maps.P
    total, rows = 0, 0
    for row in range(B):
        n = int(maps.query_mask[row].sum())
        m = torch.stack([maps.matrix(layer, row) for layer in range(L)])  # [L, H, n, P+n]
        words = torch.arange(1, n - 1)  # the rows (and columns) of the sentence's own words
        itself = torch.zeros(m.shape[:3])  # [L, H, n]
        itself[..., words] = m[..., words, P + words]
        parts = torch.stack([m[..., :P].sum(-1), m[..., P], m[..., P + n - 1], itself], -1)  # [L, H, n, 4]
        parts = torch.cat([parts, 1 - parts.sum(-1, keepdim=True)], -1)  # [L, H, n, 5]: the rest is other words
        total, rows = total + parts.sum(2), rows + n
    return total / rows  # [L, H, 5]


def value_norms(model: BertEncoder, batch: dict) -> torch.Tensor:
    """[L, 3]: mean length of the value vectors of [CLS], [SEP] and the words, per layer."""
    lengths = batch["attention_mask"].sum(1)  # [B]
    with torch.no_grad(), ShapeTrace(keep=("attn.v",)) as tr:
        model(batch["input_ids"], attention_mask=batch["attention_mask"])
    out = []
    for i in range(model.config.num_hidden_layers):
        norms = tr.tensors[f"layer{i}.attn.v"].norm(dim=-1)  # [B, H, N]
        sep = torch.stack([norms[b, :, n - 1] for b, n in enumerate(lengths)])  # [B, H]
        words = torch.cat([norms[b, :, 1:n - 1].flatten() for b, n in enumerate(lengths)])
        out.append(torch.stack([norms[:, :, 0].mean(), sep.mean(), words.mean()]))
    return torch.stack(out)  # [L, 3]


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
    # Layer 0 sees the same inputs either way: the prefix mass m scales every real key by (1 - m).
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
    return plain, with_prefix


def plot_parts(tables: dict, title: str) -> Figure:
    """Stacked bars per layer, one panel per table ([L, 5] shares)."""
    fig = Figure(figsize=(4.2 * len(tables) + 1.4, 3.2), layout="constrained")
    axes = fig.subplots(1, len(tables), sharey=True, squeeze=False)[0]
    colours = ("tab:blue", "tab:red", "tab:orange", "tab:green", "0.7")
    for ax, (name, t) in zip(axes, tables.items()):
        bottom = torch.zeros(t.shape[0])
        for j, (part, colour) in enumerate(zip(PARTS, colours)):
            ax.bar(range(t.shape[0]), t[:, j].numpy(), bottom=bottom.numpy(), color=colour, label=part)
            bottom += t[:, j]
        ax.set_xticks(range(t.shape[0]), [f"L{i}" for i in range(t.shape[0])])
        ax.set_xlabel("layer")
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel("share of a real token's attention")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="key")
    fig.suptitle(title, fontsize=10)
    return fig


plain_parts, prefix_parts = attention_sink(model, batch, maps)
save_figure(plot_parts({"no prefix": plain_parts, f"fresh P={P} prefix": prefix_parts},
                       "Where real tokens' attention goes in MiniLM, by layer (mean over heads)"),
            "11_attention_parts.png", dpi=90)


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
# ## 6. Before and after a short training run
#
# We train a fresh K/V prefix (and a head) briefly on SST-2, as in lesson 10 (one epoch in
# batches of 8), and compare the attention at initialisation with the attention after. What to
# expect from a run this short: the table starts at N(0, 1) and Adam moves each entry by about
# the learning rate per step, so a few dozen steps change it by a small fraction. The run
# measures three things: how much the prefix mass moved, whether the same heads read the
# prefix (the correlation of the two `[L, H]` tables), and how far the table's keys and its
# values moved. With the sizes and seed here (and either data source) the correlation stays
# above 0.9, no (layer, head) moves by 0.2, and keys and values move by well under half their
# length (asserted): after a short run the same heads read the prefix about as much as at
# initialisation, where nothing but the frozen queries and the random table decided it.
#
# Two figures. The `[L, H]` tables side by side on one colour scale (rows: layers, columns:
# heads). And, for the layer with the most prefix mass, full matrices of four heads: the two
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
def train_prefix(model: BertEncoder, tok: WordPiece, batch: dict, P: int, n_train: int, batch_size: int):
    """Attach a fresh prefix + head, record the attention at initialisation, train one epoch.
    Returns (task model, maps at initialisation, the table at initialisation, training history)."""
    from minigpt_ptv2.training import TrainConfig, build_task_model, fit, get_task, set_seed
    set_seed(0)
    train, _, _ = sst2_or_sample(None, n_train, max_dev=1)  # SST-2, or the embedded SST-2 sample
    task_model = build_task_model("sst2", "prefix", P, encoder=model).eval()
    before = attention_maps(model, batch)
    start = model.prompt.embedding.weight.detach().clone()  # [P, L*2*D]
    loader = get_task("sst2").batches(train, tok, batch_size=batch_size, shuffle=True, max_length=48)
    history = fit(task_model, loader, TrainConfig(epochs=1, lr=3e-2, progress=False), task="sst2")
    return task_model.eval(), before, start, history


ROLES = ("prefix", "[CLS] sink", "[SEP] sink", "attends to itself", "previous token", "next token")


def head_shares(maps, layer: int) -> torch.Tensor:
    """[H, 6]: per head of `layer`, the share of the real queries' attention (over the batch) on
    each of ROLES: the prefix, [CLS], [SEP], the token itself, the previous and the next token."""
    P, total, rows = maps.P, 0, 0
    for row in range(maps.probs.shape[1]):
        m = maps.matrix(layer, row)  # [H, n, P+n]
        n = m.shape[1]
        i = torch.arange(n)
        shift = lambda k: torch.where((i + k >= 0) & (i + k < n), m[:, i, P + (i + k).clamp(0, n - 1)], 0)  # noqa: E731
        words = (i > 0) & (i < n - 1)  # a [CLS] or [SEP] query's own column counts as [CLS] / [SEP]
        parts = torch.stack([m[..., :P].sum(-1), m[..., P], m[..., P + n - 1], shift(0) * words,
                             shift(-1) * (i > 1), shift(1) * (i < n - 2)], -1)  # [H, n, 6]
        total, rows = total + parts.sum(1), rows + n
    return total / rows  # [H, 6]


def head_title(h: int, share: torch.Tensor, P: int) -> str:
    """'head 3: prefix 41% over 8 keys; [CLS] sink 30%': the prefix's share, then the largest
    other part (or "spread out" when none takes a quarter)."""
    j = int(share[1:].argmax()) + 1
    other = f"{ROLES[j]} {share[j]:.0%}" if share[j] >= 0.25 else "the rest spread out"
    return f"head {h}: prefix {share[0]:.0%} over {P} keys; {other}"


def before_and_after(model: BertEncoder, tok: WordPiece, batch: dict, P: int, n_train: int, batch_size: int,
                     check: bool = True):
    """Train a prefix, compare its attention before and after; `check=False` skips the asserts
    on how much it moved (a run of a step or two moves nothing)."""
    from minigpt_ptv2.viz.plots import plot_attention_heads, plot_prefix_mass
    task_model, before, start, history = train_prefix(model, tok, batch, P, n_train, batch_size)
    after = attention_maps(model, batch)
    a, b = before.mass(), after.mass()  # [L, H] each
    print(f"trained {n_train} sentences, one epoch; mean training loss {history[-1]['train_loss']:.3f}")
    print(f"mean prefix mass {a.mean():.3f} at initialisation, {b.mean():.3f} trained; the largest change "
          f"in one (layer, head): {(b - a).abs().max():.3f}")
    corr = float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
    print(f"correlation of the two [L, H] mass tables: {corr:.3f} (1 = the same heads read the prefix, as much)")
    L = model.config.num_hidden_layers
    kv0 = start.reshape(P, L, 2, -1)  # [P, L, 2, D]: keys, then values, of every layer
    kv1 = model.prompt.embedding.weight.detach().reshape(P, L, 2, -1)
    moved = [float((kv1[:, :, j] - kv0[:, :, j]).norm() / kv0[:, :, j].norm()) for j in (0, 1)]
    print(f"the table moved by {moved[0]:.1%} of its length in its keys, {moved[1]:.1%} in its values")
    if check:
        assert corr > 0.9 and (b - a).abs().max() < 0.2 and 0 < moved[0] < 0.5 and 0 < moved[1] < 0.5
    _, fig = plot_prefix_mass({"at initialisation": a, "trained": b}, None,
                              title=f"Attention mass real tokens put on a P={P} K/V prefix, MiniLM "
                                    f"(rows: layers, columns: heads)")
    save_figure(fig, "11_prefix_mass.png", dpi=90)
    layer = int(b.mean(1).argmax())
    share = head_shares(after, layer)  # [H, 6]
    on_prefix = share[:, 0].argsort(descending=True)[:2].tolist()
    on_cls = [h for h in share[:, 1].argsort(descending=True).tolist() if h not in on_prefix][:2]
    heads = on_prefix + on_cls
    titles = [head_title(h, share[h], P) for h in heads]
    print(f"layer {layer} (the most prefix mass), per head over the {len(SENTENCES)} sentences:")
    for h in range(share.shape[0]):
        print(f"  {head_title(h, share[h], P)}")
    assert float(share[on_cls, 1].min()) > float(share[on_cls, 0].max()) / P, "a [CLS] column outweighs a prefix one"
    ids = batch["input_ids"][0][after.query_mask[0]]
    toks = tok.tokens(ids)
    _, fig = plot_attention_heads(after.matrix(layer, 0, heads), P, key_labels(P, toks), toks, None, heads,
                                  title=f"Trained prefix, layer {layer}, first sentence: the two heads that read the "
                                        f"prefix most (top), the two that sit most on the [CLS] sink (bottom)",
                                  head_titles=titles)
    save_figure(fig, "11_attention_heads.png", dpi=90)
    return task_model, after


_, after = before_and_after(model, tok, batch, P, n_train, batch_size)


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
