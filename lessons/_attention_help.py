"""Lesson 11's plumbing: where a real token's attention goes, counted part by part, and drawn.

The lesson reads these numbers; how they are counted is bookkeeping over `viz.attention_maps`
(`probs [L, B, H, Nq, Nk]`, the P prefix keys first), kept here so the lesson's cells stay short:

- `attention_parts(maps)` -> [L, H, 5]: the share on the prefix, [CLS], [SEP], the token itself
  and the other words (section 3);
- `value_norms(model, batch)` -> [L, 3]: how long the value vectors of [CLS], [SEP] and the words
  are (why the [CLS] sink is nearly a no-op);
- `plot_parts(tables, title)`: those shares as stacked bars per layer;
- `head_shares(maps, layer)` -> [H, 6] and `head_title(...)`: one layer's heads by role, for the
  titles of section 6's pictures.
"""
from __future__ import annotations

import torch
from matplotlib.figure import Figure

from minigpt_ptv2 import ShapeTrace

PARTS = ("prefix", "[CLS]", "[SEP]", "itself", "other words")
ROLES = ("prefix", "[CLS] sink", "[SEP] sink", "attends to itself", "previous token", "next token")


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


def value_norms(model, batch: dict) -> torch.Tensor:
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
