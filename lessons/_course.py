"""Plumbing the lessons share, kept out of their cells so each cell shows the idea it teaches.

Nothing here is part of what a lesson teaches: stopwatches, printing a table of measurements,
drawing a figure, importing an optional reference library quietly. A lesson names what it uses
(`from _course import best_time`), and reading this file is never needed to follow a lesson.

    best_time(fn, repeat)                 lessons 08, 09: the fastest of a few wall-clock runs
    interleaved_times(...)                lesson 09: best times of several methods, run in turn
    quiet_transformers()                  lesson 04: `transformers`, offline and silent, or None
    print_cost_table(rows, names)         lesson 08: FLOPs, memory and time per batch size
    plot_cost(rows, names, title, file)   lesson 08: the same three measures as a figure
"""
from __future__ import annotations

import os
import time
import warnings


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
