# %% [markdown]
# # Lesson 11 — Looking at attention on prefix tokens
#
# A K/V prefix can only act through attention: at every layer, each real token's query scores
# the P prefix keys alongside the N real keys, and the softmax decides how much of the token's
# update comes from the prefix values. So the natural question to ask of a trained prefix is:
#
#     how much attention do real tokens put on the prefix, in which layer, in which head?
#
# With a K/V prefix, a layer's probabilities are `[B, H, N, P+N]`: N real queries, P prefix
# keys then N real keys. The **prefix mass** of one query is the sum of its first P columns,
# a number in [0, 1]. `minigpt_ptv2.viz` extracts these numbers (no plotting) and draws them.

# %%
from __future__ import annotations

import os

import torch

from minigpt_ptv2 import BertEncoder, ShapeTrace, preset
from minigpt_ptv2.data import sst2_or_sample
from minigpt_ptv2.data import WordPiece
from minigpt_ptv2.prompts import DeepPrompt, KVPrefix, hidden_to_kv
from minigpt_ptv2.trace import dims_for
from minigpt_ptv2.viz import attention_maps, key_labels, prefix_mass, save_figure, token_mass

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")

SENTENCES = ["a warm , funny and moving film", "the plot makes no sense at all",
             "an absolute masterpiece", "tedious and far too long"]


# %% [markdown]
# ## 1. The probabilities, all layers at once
#
# `attention_maps(model, batch)` runs the model with `output_attentions=True` and stacks every
# layer: `probs [L, B, H, Nq, P+N]`, plus the masks needed to read them. Each real query row
# is a probability distribution over the P+N keys; padding keys get exactly 0.

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


# %% [markdown]
# ## 3. Zero is not off; masked is (pitfall 4, seen as attention)
#
# A prefix of zeros still has keys: every score against them is exactly 0, and exp(0) = 1 is a
# lot of weight next to real scores. The prefix takes attention and hands back zero values,
# diluting everything else. Masking the entries (`virtual_keep = False`) is the real "off".

# %%
def zero_vs_masked(model: BertEncoder, batch: dict, P: int):
    zero = KVPrefix(model.config, P).eval()
    torch.nn.init.zeros_(zero.embedding.weight)
    model.attach(zero)
    zero_mass = attention_maps(model, batch).mass()
    zero.virtual_keep[:] = False
    masked_mass = attention_maps(model, batch).mass()
    model.detach_prompt()
    print(f"zero prefix:   mass {zero_mass.mean():.3f} on average (max {zero_mass.max():.3f})")
    print(f"masked prefix: mass {masked_mass.abs().max():.1f} everywhere")
    assert float(zero_mass.min()) > 0 and float(masked_mass.abs().max()) == 0.0


# %% [markdown]
# ## 4. Hidden-state prompts, read the same way
#
# Deep prompts (lesson 07) inject P rows, so the layer returns `[B, H, P+N, P+N]`: the prompt
# rows are queries too. Their outputs are thrown away, so we read only the last N query rows
# (`maps.real`), whose first P columns are the prompt rows' keys. Through the bridge of lesson
# 09 the same prompt as a K/V prefix gives the very same numbers.

# %%
def deep_read_the_same_way(model: BertEncoder, batch: dict, P: int):
    torch.manual_seed(0)
    deep = DeepPrompt(model.config, P, init_std=1.0).eval()
    model.attach(deep)
    hidden = attention_maps(model, batch)
    model.attach(hidden_to_kv(model, deep).eval())
    as_kv = attention_maps(model, batch)
    model.detach_prompt()
    print(f"deep prompt: probs {list(hidden.probs.shape)}, real rows {list(hidden.real.shape)}; "
          f"as a K/V prefix: probs {list(as_kv.probs.shape)}")
    diff = (hidden.mass() - as_kv.mass()).abs().max()
    print(f"prefix mass, deep vs its bridged K/V prefix: max |difference| = {diff:.1e}")
    assert diff < 1e-5


# %% [markdown]
# ## 5. Before and after a short training run
#
# We train a K/V prefix (and a head) briefly on SST-2, as in lesson 10, and compare the mass
# at initialisation with the mass after. The figures show the `[L, H]` tables side by side on
# one colour scale, and one layer's full matrices for a few heads: columns p0..p{P-1} left of
# the white line are the prefix, the rest are the sentence's WordPiece tokens.
#
# Expect modest changes from a run this short: the fresh table starts at N(0, 1) and a few
# dozen Adam steps move each entry by a fraction of that. Which heads read the prefix is
# mostly decided by the frozen queries; training reshapes *what* they read (the values) at
# least as much as *how much*.

# %%
def train_prefix(model: BertEncoder, tok: WordPiece, batch: dict, P: int, n_train: int, batch_size: int):
    """Attach a fresh prefix + head, record the attention at initialisation, train one epoch.
    Returns (task model, maps at initialisation)."""
    from minigpt_ptv2.training import TrainConfig, build_task_model, fit, get_task, set_seed
    set_seed(0)
    train, _, _ = sst2_or_sample(None, n_train, max_dev=1)  # SST-2, or the embedded SST-2 sample
    task_model = build_task_model("sst2", "prefix", P, encoder=model).eval()
    before = attention_maps(model, batch)
    loader = get_task("sst2").batches(train, tok, batch_size=batch_size, shuffle=True, max_length=64)
    fit(task_model, loader, TrainConfig(epochs=1, lr=3e-2, progress=False), task="sst2")
    return task_model.eval(), before


def before_and_after(model: BertEncoder, tok: WordPiece, batch: dict, P: int, n_train: int, batch_size: int):
    from minigpt_ptv2.viz.plots import plot_attention_heads, plot_prefix_mass
    task_model, before = train_prefix(model, tok, batch, P, n_train, batch_size)
    after = attention_maps(model, batch)
    print(f"mean prefix mass: {before.mass().mean():.3f} at initialisation, {after.mass().mean():.3f} trained "
          f"({n_train} sentences, one epoch)")
    _, fig = plot_prefix_mass({"at initialisation": before.mass(), "trained": after.mass()}, None,
                              title=f"Attention mass on a P={P} K/V prefix, MiniLM")
    save_figure(fig, "11_prefix_mass.png", dpi=90)
    layer = int(after.mass().mean(1).argmax())
    heads = after.mass()[layer].argsort(descending=True)[:4].tolist()
    ids = batch["input_ids"][0][after.query_mask[0]]
    toks = tok.tokens(ids)
    _, fig = plot_attention_heads(after.matrix(layer, 0, heads), P, key_labels(P, toks), toks, None, heads,
                                  title=f"layer {layer}: the four heads that use the prefix most")
    save_figure(fig, "11_attention_heads.png", dpi=90)
    return task_model, after


# %% [markdown]
# ## 6. Which tokens lean on the prefix?
#
# `token_mass(maps, row)` averages over heads and keeps the tokens: `[L, n]` for one sentence.

# %%
def per_token(maps, tok: WordPiece, batch: dict, row: int = 0):
    tm = token_mass(maps, row)  # [L, n]
    toks = tok.tokens(batch["input_ids"][row][maps.query_mask[row]])
    print("token        " + " ".join(f"L{i:<4}" for i in range(tm.shape[0])))
    for j, t in enumerate(toks):
        print(f"{t:<12} " + " ".join(f"{float(v):.2f} " for v in tm[:, j]))


# %% [markdown]
# ## 7. The shapes, recorded
#
# The attention probabilities are a capture point of their own on the explicit path
# (`output_attentions=True`): `scores` and `probs` are `[B, H, N, P+N]`. Tiny BERT (D=24, H=4,
# d=6, L=3), layer 0 shown, B=2, N=7, P=5, the second row padded.

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


# %%
def main():
    P, n_train, batch_size = (4, 8, 8) if QUICK else (8, 256, 16)
    model = backbone()
    tok = WordPiece.from_model_dir()
    batch = tok.encode(SENTENCES)  # [B, N] each, the shorter rows padded
    with torch.no_grad():
        maps = first_look(model, batch, P)
        print()
        mass_by_hand(maps)
        print()
        zero_vs_masked(model, batch, P)
        print()
        deep_read_the_same_way(model, batch, P)
    print()
    _, after = before_and_after(model, tok, batch, P, n_train, batch_size)
    print()
    per_token(after, tok, batch)
    print()
    print(trace_example().table())


# %% [markdown]
# ## What to remember
#
# - A K/V prefix acts only through attention: per layer, `[B, H, N, P+N]` probabilities whose
#   first P columns are the prefix. Their row sum is the prefix mass, in [0, 1].
# - `attention_maps` -> `.mass()` gives one `[L, H]` table; averaging leaves out padding rows.
# - A zero prefix still takes attention (score 0 is not -inf); a masked one takes exactly none.
# - Hidden-state prompts are read the same way after dropping their own P query rows, and give
#   the same numbers as their bridged K/V prefix.
# - Attention mass says where the prefix is *read*, not what it *contributes*: a head can put
#   much weight on values that barely change the output. Treat the pictures as a map, not proof.
#
# ## Try this
#
# - `python -m minigpt_ptv2 figures` regenerates the committed figures (hidden-state vs K/V,
#   before vs after training) in a couple of minutes.
# - Mask half the trained prefix (`model.prompt.virtual_keep[: P // 2] = False`): where does
#   the freed attention go, to the other prefix entries or to the tokens?
# - Compare `token_mass` for [CLS] and [SEP] with the word tokens. Which rows lean on the prefix?

# %%
if __name__ == "__main__":
    main()
