"""Attention figures from the tensors `attention_data` extracts, saved as small PNGs.

Figures are built with `matplotlib.figure.Figure` and written by its Agg canvas: no pyplot, no
global backend switch, no window, so this works the same in scripts, tests and notebooks
(a notebook can show the returned Figure, or open the saved file).

Every function takes plain tensors and writes one file (unless path is None), returning
(path, figure).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..errors import InputError

DPI = 160  # the figures/ PNGs and the lessons': 7-point labels stay readable at full width
PROMPT_LINE = dict(color="white", linewidth=2.0)  # the line between prompt and real-token columns


def _save(fig: Figure, path) -> tuple[Path | None, Figure]:
    if path is None:  # just the figure (e.g. to show in a notebook)
        return None, fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path, fig


def _check_2d(name: str, t: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t).detach().float().cpu()
    if t.dim() != 2:
        raise InputError(f"{name} must be a 2-D [L, H] table, got shape {list(t.shape)}")
    return t


def plot_prefix_mass(panels: dict, path, title: str | None = None, vmax: float | None = None,
                     annotate: bool = True):
    """Heatmaps of attention mass on the prompt, layers (rows) x heads (columns), one per panel.

    panels: name -> [L, H] tensor (e.g. from `prefix_mass`); all panels share one colour scale
    (0 .. vmax, default the largest value shown) so they can be compared by eye.
    """
    if not panels:
        raise InputError("plot_prefix_mass needs at least one panel")
    tables = {name: _check_2d(f"panel {name!r}", t) for name, t in panels.items()}
    top = vmax if vmax is not None else max(float(t.max()) for t in tables.values()) or 1.0
    ncols = min(len(tables), 2)
    nrows = (len(tables) + ncols - 1) // ncols
    L, H = next(iter(tables.values())).shape
    fig = Figure(figsize=(0.42 * H * ncols + 1.6, 0.42 * L * nrows + 0.9 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    image = None
    for ax, (name, t) in zip(axes.flat, tables.items()):
        image = ax.imshow(t.numpy(), cmap="viridis", vmin=0.0, vmax=top, aspect="auto")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(t.shape[1]), [f"h{h}" for h in range(t.shape[1])], fontsize=7)
        ax.set_yticks(range(t.shape[0]), [f"L{i}" for i in range(t.shape[0])], fontsize=7)
        ax.set_xlabel("head", fontsize=8)
        ax.set_ylabel("layer", fontsize=8)
        if annotate:
            for i in range(t.shape[0]):
                for j in range(t.shape[1]):
                    v = float(t[i, j])
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                            color="black" if v > 0.6 * top else "white")
    for ax in list(axes.flat)[len(tables):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="mass on prompt (numbers: %)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_attention_heads(mats, P: int, key_labels, query_labels, path, heads=None,
                         title: str | None = None, vmax: float = 1.0, hidden=None, head_titles=None):
    """Full attention matrices of a few heads: queries (rows) x [prompt | real tokens] (columns).

    mats: [h, n, P+n] probabilities (e.g. `AttentionMaps.matrix`); key_labels: P+n names
    (p0.. then tokens); query_labels: n names. A line separates the P prompt columns.
    hidden: optional bool [n, P+n], True where a query may not look (e.g. the causal mask's
    upper triangle): drawn grey, so "not allowed" is not confused with "allowed, but ~0".
    head_titles: optional h titles naming what each head does (default "head i").
    """
    mats = torch.as_tensor(mats).detach().float().cpu()
    if mats.dim() != 3:
        raise InputError(f"mats must be [h, n, P+n], got shape {list(mats.shape)}")
    h, n, k = mats.shape
    if len(key_labels) != k or len(query_labels) != n or not 0 <= P <= k:
        raise InputError(f"labels do not fit mats {list(mats.shape)}: {len(query_labels)} query labels "
                         f"(need {n}), {len(key_labels)} key labels (need {k}), P={P}")
    if hidden is not None and tuple(hidden.shape) != (n, k):
        raise InputError(f"hidden must be [n={n}, P+n={k}], got {list(hidden.shape)}")
    heads = list(range(h)) if heads is None else list(heads)
    if head_titles is not None and len(head_titles) != h:
        raise InputError(f"head_titles: {len(head_titles)} titles for {h} heads")
    ncols = min(h, 2)
    nrows = (h + ncols - 1) // ncols
    cell = 0.2
    fig = Figure(figsize=(ncols * (cell * k + 1.2) + 1.2, nrows * (cell * n + 1.1) + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    cmap = colormaps["magma"].with_extremes(bad="0.8")  # hidden cells: light grey
    image = None
    for idx, ax in enumerate(axes.flat):
        if idx >= h:
            ax.set_visible(False)
            continue
        data = mats[idx].numpy()
        if hidden is not None:
            data = np.ma.masked_array(data, mask=torch.as_tensor(hidden).bool().numpy())
        image = ax.imshow(data, cmap=cmap, vmin=0.0, vmax=vmax, aspect="equal")
        if P:
            ax.axvline(P - 0.5, **PROMPT_LINE)
        ax.set_title(head_titles[idx] if head_titles is not None else f"head {heads[idx]}", fontsize=9)
        ax.set_xticks(range(k), list(key_labels), rotation=90, fontsize=7)
        ax.set_yticks(range(n), list(query_labels), fontsize=7)
        ax.set_xlabel(f"key: prompt p0..p{P - 1} | real tokens" if P else "key", fontsize=8)
        ax.set_ylabel("query (real token)", fontsize=8)
        for tick in ax.get_xticklabels()[:P]:
            tick.set_color("tab:blue")
    label = "attention probability" + ("; grey: not allowed" if hidden is not None else "")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label=label)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
