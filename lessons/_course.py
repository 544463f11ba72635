"""Plumbing the lessons share, kept out of their cells so each cell shows the idea it teaches.

Nothing here is part of what a lesson teaches: stopwatches, printing a table of measurements,
drawing a figure, importing an optional reference library quietly. A lesson names what it uses
(`from _course import best_time`), and reading this file is never needed to follow a lesson.

    best_time(fn, repeat)                 lessons 08, 09: the fastest of a few wall-clock runs
    interleaved_times(...)                lesson 09: best times of several methods, run in turn
    quiet_transformers()                  lesson 04: `transformers`, offline and silent, or None
    print_cost_table(rows, names)         lesson 08: FLOPs, memory and time per batch size
    plot_cost(rows, names, title, file)   lesson 08: the same three measures as a figure
    attention_parts(maps) [L, H, 5]       lesson 11: a real token's attention on the prefix, [CLS], [SEP],
                                          itself and the other words (PARTS), over real query rows
    value_norms(model, batch) [L, 3]      lesson 11: value-vector lengths of [CLS], [SEP] and the words
    plot_parts(tables, title)             lesson 11: those shares as stacked bars per layer
    head_shares(maps, layer) [H, 6]       lesson 11: one layer's heads by role (ROLES), and head_title
    RUNS, TINY_DECODER                    lessons 05, 12, 15, 16: where the pretrained decoder is cached, and
                                          the test suite's stand-in for it (quick.py: seconds to build)
    print_speech(said)                    lessons 05, 12, 15, 16: what steer.speak returns, one text a line
    sentence_batch(tok, sentences, n)     lessons 12, 16: sentences as a decoder reads them, padded, with labels
                                          (the package's, training/pretrain.py, named here for the lessons)
    quick_judge(steps)                    lesson 16: a K/V prefix on MiniLM trained on SST-2 for a few
                                          steps (lesson 10's step), as a function texts -> labels
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import torch

from minigpt_ptv2.catalog import PretrainConfig
from minigpt_ptv2.training.pretrain import sentence_batch  # noqa: F401  (lessons 12 and 16 import it from here)


def best_time(fn, repeat: int) -> float:
    """The fastest of `repeat` calls of fn(), in seconds: the least disturbed by other work."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def interleaved_times(run: dict, repeat: int = 3) -> dict:
    """{name: best seconds} of each `run[name]()`, the names taken in turn on every round, so a
    burst of load elsewhere on the machine hits all of them alike."""
    best = dict.fromkeys(run, float("inf"))
    for _ in range(repeat):
        for name, fn in run.items():
            best[name] = min(best[name], best_time(fn, 1))
    return best


def quiet_transformers():
    """The `transformers` module, set to read local folders only and print no progress bars;
    None (after saying so) when it is not installed: the comparison is then skipped."""
    for var, value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(var, value)  # a local folder: no network, no progress bars
    try:
        with warnings.catch_warnings():  # tqdm's notice in a notebook without ipywidgets: no bars are drawn here
            warnings.filterwarnings("ignore", message="IProgress not found")
            import transformers
    except ImportError:
        print("transformers is not installed: skipping the comparison (pip install transformers)")
        return None
    return transformers


# --- lesson 08: the cost of computing the prefix MLP once, per row, or repeated -----------------
# rows: [(B, flops {name: n}, bytes {name: n}, seconds {name: s}, max |difference|)], one per B
COST_PANELS = ((1, 1e-9, "GFLOP (counted)", "MLP FLOPs per forward\n(repeat = once + expand)"),
               (2, 2 ** -20, "MiB (result storage)", "memory the batch of prefixes takes\n(repeat = per row)"),
               (3, 1e3, "ms (best of a few)", "time, on this run\n(noisy: not asserted)"))


def print_cost_table(rows: list, names) -> None:
    """One line per way of computing, three column groups (FLOPs, memory, time), one column per B."""
    w = max(7 * len(rows), 20)  # one column group per measure
    head = "".join(f"{r[0]:>7}" for r in rows).rjust(w)
    print(f"{'':15}{'MLP GFLOP, B =':>{w}}   {'memory MiB, B =':>{w}}   {'ms on this run, B =':>{w}}")
    print(f"{'':15}{head}   {head}   {head}")
    for name in names:
        groups = ["".join(f"{r[k][name] * scale:>7.{digits}f}" for r in rows).rjust(w)
                  for (k, scale, _, _), digits in zip(COST_PANELS, (2, 1, 1))]
        print(f"{name:15}" + "   ".join(groups))
    print(f"values, max |once - per row|: {', '.join(f'B={r[0]} {r[4]:.1e}' for r in rows)}; once == repeat exactly")


def plot_cost(rows: list, names, title: str, file_name: str) -> None:
    """The three measures of `print_cost_table` against B, one panel each."""
    from matplotlib.figure import Figure

    from minigpt_ptv2.viz import save_figure
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    Bs = [r[0] for r in rows]
    styles = dict(zip(names, (("o", "-"), ("s", "--"), ("^", ":"))))
    for ax, (k, scale, ylabel, panel) in zip(axes, COST_PANELS):
        for name, (marker, line) in styles.items():
            ax.plot(Bs, [r[k][name] * scale for r in rows], marker=marker, linestyle=line, label=name,
                    markersize=7 if marker == "^" else 5)
        ax.set(xlabel="batch size B", ylabel=ylabel, title=panel, xticks=Bs, ylim=(0, None))
        ax.title.set_fontsize(9)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, file_name)


# --- lesson 11: where a real token's attention goes, counted part by part --------------------
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
    from minigpt_ptv2 import ShapeTrace
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


def plot_parts(tables: dict, title: str):
    """Stacked bars per layer, one panel per table ([L, 5] shares): a matplotlib Figure."""
    from matplotlib.figure import Figure
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


# --- the pretrained decoder (lessons 05, 12, 15, 16) -----------------------------------------------
RUNS = Path(__file__).resolve().parent.parent / "runs"  # beside the lessons' folder, wherever a lesson runs from
# the test suite's decoder (quick.py): one layer, 300 symbols, 3 steps; built in seconds, it writes noise
TINY_DECODER = PretrainConfig(layers=1, hidden=16, heads=2, vocab_size=300, context=32, batch_size=4, steps=3)


def print_speech(said: dict) -> None:
    """steer.speak's four ways, greedy then sampled, saying whether the cache changed any text."""
    same = said["greedy"] == said["greedy, no cache"] and said["sampled"] == said["sampled, no cache"]
    print(f"  greedy:  {said['greedy']}")
    for text in said["sampled"]:
        print(f"  sampled: {text}")
    print(f"  the same texts with and without the KV cache: {same}")


def quick_judge(steps: int = 30, P: int = 16, batch_size: int = 16, n_heldout: int = 200, seed: int = 0,
                expect: float | None = 0.7):
    """A small SST-2 judge: a K/V prefix and head on the frozen MiniLM, trained for `steps` batches
    of short training sentences exactly as lesson 10 writes the step. Returns (judge, held-out
    accuracy), judge(texts) -> ["positive" or "negative" per text]. A judge below `expect` on the
    held-out sentences is refused: a few steps at this learning rate can also land near chance
    (20 steps: 0.455, calling nearly everything negative; 30: 0.78)."""
    from minigpt_ptv2.data import SST2_LABELS, WordPiece, load_sst2_sample
    from minigpt_ptv2.training import build_task_model, task_loss
    torch.manual_seed(seed)
    tok = WordPiece.from_model_dir()
    rows = [e for e in load_sst2_sample("train") if len(e.text.split()) <= 20]  # short: a quick step
    train, heldout = rows[n_heldout:], rows[:n_heldout]
    model = build_task_model("sst2", "prefix", P)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        pick = [train[i] for i in torch.randint(len(train), (batch_size,), generator=g).tolist()]
        enc = tok.encode([e.text for e in pick], max_length=64)
        logits = model(enc["input_ids"], enc["attention_mask"], task="sst2")  # [B, 2]
        task_loss(logits, torch.tensor([e.label for e in pick])).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()

    @torch.no_grad()
    def judge(texts: list[str]) -> list[str]:
        labels = []
        for i in range(0, len(texts), 64):
            enc = tok.encode(texts[i:i + 64], max_length=64)
            labels += model(enc["input_ids"], enc["attention_mask"], task="sst2").argmax(-1).tolist()  # [B]
        return [SST2_LABELS[y] for y in labels]

    said = judge([e.text for e in heldout])
    accuracy = sum(s == SST2_LABELS[e.label] for s, e in zip(said, heldout)) / len(heldout)
    assert expect is None or accuracy >= expect, f"the judge reached {accuracy:.3f} held out, below {expect}"
    return judge, accuracy
