"""Pictures of the ideas, drawn by code: the two deep styles side by side, the bridge between
them, the KV cache as a longer prefix, grouped K/V heads.

Each `draw_*()` returns a matplotlib Figure (no pyplot, no training, well under a second);
`save_diagrams(folder)` writes all four as PNGs. The `figures` command draws them beside its
attention figures, so the checked-in copies in figures/ are remade by one command:

    python -m minigpt_ptv2 figures --out figures --overwrite

Colours: prompt / prefix rows orange, real-token rows blue, frozen weights grey, rows thrown away
hatched. A tensor is drawn as a stack of rows (P prompt rows above N real rows), its shape
written beside it in the notation's letters.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

PROMPT, REAL, FROZEN, NEW = "#f4a259", "#7aa6d9", "#d9d9d9", "#2f5f9e"
ROW = 0.32  # height of one drawn row


def _axes(fig, where, title, xlim, ylim):
    """A blank panel in drawing units (equal in x and y), its title at the top left."""
    ax = fig.add_subplot(where)
    ax.set_axis_off()
    ax.set_aspect("equal")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=11, loc="left")
    return ax


def caption(ax, y, text):
    ax.text(0, y, text, fontsize=9, va="top")


def shape(ax, x, y, text, size=9):
    """A tensor's name and shape, in the monospace of the code, left-aligned at x."""
    ax.text(x, y, text, fontsize=size, va="center", family="monospace")


def rows(ax, x, y, n_prompt, n_real, label="", width=1.0, dropped=False):
    """A [.., rows, ..] tensor as a stack: n_prompt orange rows on top of n_real blue rows; its top
    edge at y. dropped: the prompt rows hatched (computed, then thrown away)."""
    for i in range(n_prompt + n_real):
        colour = PROMPT if i < n_prompt else REAL
        hatch = "////" if dropped and i < n_prompt else None
        ax.add_patch(Rectangle((x, y - (i + 1) * ROW), width, ROW, facecolor="white" if hatch else colour,
                               edgecolor=colour if hatch else "white", hatch=hatch, linewidth=1))
    if label:
        ax.text(x + width / 2, y - (n_prompt + n_real) * ROW - 0.15, label, ha="center", va="top", fontsize=9,
                family="monospace")


def box(ax, x, y, w, h, text, colour=FROZEN, size=9):
    ax.add_patch(Rectangle((x, y), w, h, facecolor=colour, edgecolor="#555555", linewidth=1))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)


def arrow(ax, x0, y0, x1, y1, text="", above=True):
    ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, color="#333333"))
    if text:
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + (0.12 if above else -0.12), text, ha="center",
                va="bottom" if above else "top", fontsize=8.5)


def draw_deep_styles() -> Figure:
    """Left: a deep hidden-state prompt at layer i (inject, process, slice). Right: a K/V prefix
    at layer i (keys and values concatenated; queries and outputs keep N rows)."""
    fig = Figure(figsize=(16, 5.6))
    P, N = 2, 4
    ax = _axes(fig, 121, "Deep hidden-state prompt, layer i: inject, process, slice",
               (-0.2, 10.6), (-0.8, 7.0))
    rows(ax, 0, 5.4, P, 0, "prompt_i [B, P, D]")
    rows(ax, 0, 3.6, 0, N, "x [B, N, D]")
    arrow(ax, 1.1, 3.2, 2.3, 3.2, "inject: cat")
    rows(ax, 2.4, 4.15, P, N, "[B, P+N, D]")
    arrow(ax, 3.5, 3.2, 4.3, 3.2)
    box(ax, 4.4, 2.1, 1.4, 2.2, "frozen\nlayer i\n(all P+N\nrows)")
    arrow(ax, 5.9, 3.2, 6.7, 3.2, "process")
    rows(ax, 6.8, 4.15, P, N, "[B, P+N, D]", dropped=True)
    arrow(ax, 7.9, 3.2, 9.0, 3.2, "slice [:, P:]")
    rows(ax, 9.1, 3.8, 0, N, "[B, N, D]\nto layer i+1")
    caption(ax, 0.2, "Only the prompt rows' keys and values are ever read (by the real rows, inside attention);\n"
            "their outputs are computed and thrown away (hatched). Trains L x [P, D].")

    ax = _axes(fig, 122, "K/V prefix (P-Tuning v2), layer i: concatenate keys and values",
               (-0.2, 14.2), (-1.3, 7.0))
    rows(ax, 0, 4.3, 0, N, "x [B, N, D]")
    stacks = ((6.6, "Q", 0, "Q = x W_Q   [B, H, N, d]"),
              (4.6, "K", P, "K = cat(prefix_K, x W_K)\n  [B, H_kv, P+N, d]"),
              (2.2, "V", P, "V = cat(prefix_V, x W_V)\n  [B, H_kv, P+N, d]"))
    for top, name, n_prefix, text in stacks:
        middle = top - (n_prefix + N) * ROW / 2
        arrow(ax, 1.1, 3.65, 2.3, middle)
        rows(ax, 2.4, top, n_prefix, N, width=0.9)
        shape(ax, 3.45, middle, text, size=8.5)
        arrow(ax, 8.4, middle, 8.9, 3.65)
    box(ax, 9.0, 2.85, 3.3, 1.6, "softmax(Q Kᵀ / √d) V\n\nscores\n[B, H, N, P+N]", colour="#eeeeee", size=8.5)
    arrow(ax, 12.4, 3.65, 12.9, 3.65)
    rows(ax, 13.0, 4.3, 0, N, "[B, N, D]\nno slice")
    caption(ax, -0.3, "Orange rows: prefix_K, prefix_V [B, H_kv, P, d]. Queries, scores' rows and outputs keep\n"
            "N rows: Q is never prefixed. Trains L x 2 x [P, H_kv d]: a key and a value per prompt row.")
    return fig


def draw_bridge() -> Figure:
    """h -> K = f(h) W_K, V = f(h) W_V: a deep prompt's rows, read by the real tokens, are a K/V
    prefix whose keys and values are tied through one h."""
    fig = Figure(figsize=(11, 4.6))
    title = "The bridge: a deep prompt is a K/V prefix whose K and V come from one h (h_i: layer i's prompt rows)"
    ax = _axes(fig, 111, title, (-0.2, 11.5), (-1.2, 4.5))
    P = 3
    rows(ax, 0, 3.0, P, 0, "h_i [P, D]")
    arrow(ax, 1.1, 2.5, 2.2, 2.5, "f", above=True)
    ax.text(1.65, 1.45, "f: what the layer does to\nits input before W_K, W_V\nBERT (post-LN): nothing\n"
            "GPT-2: LayerNorm ln_1\nLLaMA: RMSNorm", ha="center", va="top", fontsize=8)
    rows(ax, 2.3, 3.0, P, 0, "f(h) [P, D]")
    arrow(ax, 3.4, 2.6, 4.6, 3.5, "x W_K")
    arrow(ax, 3.4, 2.4, 4.6, 1.5, "x W_V", above=False)
    rows(ax, 4.7, 4.0, P, 0, width=0.9)
    rows(ax, 4.7, 2.0, P, 0, width=0.9)
    shape(ax, 5.8, 3.5, "K = f(h) W_K   -> [B, H_kv, P, d]\n(RoPE turns it too, on LLaMA)")
    shape(ax, 5.8, 1.5, "V = f(h) W_V   -> [B, H_kv, P, d]")
    caption(ax, -0.3, "Feed these K, V to the same layer as a K/V prefix and the real tokens' outputs are the same\n"
            "(lesson 09, to 1e-5: hidden_to_kv). A K/V prefix learns K and V freely, 2 x P x H_kv x d numbers\n"
            "a layer; a deep prompt only the P x D of h: every deep prompt is a prefix, not every prefix a deep prompt.")
    return fig


def draw_kv_cache() -> Figure:
    """Decoding step by step: every new token's query reads the P prefix keys, the T cached keys
    and its own; the cache is a prefix that grows by one row a step."""
    fig = Figure(figsize=(11, 4.6))
    ax = _axes(fig, 111, "The KV cache is a longer prefix: each step appends one key and value",
               (-0.5, 10.5), (-0.6, 4.3))
    P, start, steps = 3, 3, 4
    width = P + start + steps
    for s in range(steps):  # one line per decoding step: the keys the new token's query reads
        y = 3.2 - s * 0.7
        T = start + s
        for j in range(width):
            colour = PROMPT if j < P else REAL if j < P + T else NEW if j == P + T else "white"
            ax.add_patch(Rectangle((2.2 + j * 0.5, y), 0.48, 0.5, facecolor=colour, edgecolor="#bbbbbb"))
        ax.text(2.0, y + 0.25, f"step {s + 1}: new token", ha="right", va="center", fontsize=9)
        shape(ax, 2.2 + width * 0.5 + 0.2, y + 0.25, f"K, V [B, H_kv, P+{T}+1, d]")
    ax.text(2.2, 3.95, "prefix (P)", fontsize=9, color="#b86a1e")
    ax.text(2.2 + P * 0.5, 3.95, "cached tokens (T)", fontsize=9, color="#2f5f9e")
    caption(ax, 0.3, "The query of the new token is [B, H, 1, d]; it attends to all P+T+1 keys. A trained K/V prefix "
            "is simply\nthe first P entries of the cache (lesson 12); generating with or without the cache gives "
            "the same tokens (lesson 05).")
    return fig


def draw_grouped_heads(H: int = 8, H_kv: int = 2) -> Figure:
    """H query heads sharing H_kv key/value heads: query head h reads K/V head h // (H / H_kv)."""
    fig = Figure(figsize=(11, 4.4))
    ax = _axes(fig, 111, f"Grouped K/V heads: H = {H} query heads share H_kv = {H_kv} key/value heads",
               (-0.3, H * 1.2 + 3.4), (-1.6, 4.0))
    group = H // H_kv
    for h in range(H):
        box(ax, h * 1.2, 3.0, 0.9, 0.6, f"Q head {h}", colour=REAL, size=8)
    for g in range(H_kv):
        x = (g * group + (group - 1) / 2) * 1.2 - 0.15
        rows(ax, x, 2.0, 2, 3, f"K, V head {g}: P prefix\nrows + N rows", width=1.2)
        for h in range(g * group, (g + 1) * group):
            arrow(ax, h * 1.2 + 0.45, 2.95, x + 0.6, 2.05)
    shape(ax, H * 1.2 + 0.1, 3.3, "Q  [B, H, N, d]")
    shape(ax, H * 1.2 + 0.1, 1.2, "K, V  [B, H_kv, P+N, d]\nrepeat_kv -> [B, H, P+N, d]")
    caption(ax, -0.55, f"A K/V prefix has H_kv heads too, [B, H_kv, P, d]: at LLaMA 3.2 1B's shape (H = 32, H_kv = 8) "
            f"it is a quarter of what\nH heads would need (lesson 15). Query head h reads K/V head h // (H / H_kv), "
            f"as in transformers.")
    return fig


DIAGRAMS = {"deep_styles.png": draw_deep_styles, "bridge.png": draw_bridge, "kv_cache.png": draw_kv_cache,
            "grouped_heads.png": draw_grouped_heads}


def save_diagrams(folder, dpi: int = 110) -> list[Path]:
    """Draw every diagram into `folder` (created); returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in DIAGRAMS.items():
        draw().savefig(folder / name, dpi=dpi, bbox_inches="tight", facecolor="white")
        written.append(folder / name)
    return written
