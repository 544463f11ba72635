"""P-Tuning v2's central claim at a real budget, on the frozen pretrained MiniLM, over seeds.

Claim (Liu et al., 2022): deep prompts (at every layer) close most of the gap to full
fine-tuning, on hard sequence labelling too, where a shallow prompt lags on small and medium
models. Here: SST-2 and CoNLL-2003 NER, each method with `train`'s defaults (its recipe,
catalog.RECIPES, chosen on held-out training data by benchmarks/recipe.py), under one budget
(budget.py), each cell over several seeds.

    python benchmarks/claim.py                        # the README table and benchmarks/claim.png (CELLS)
    python benchmarks/claim.py --tasks sst2 --methods soft deep   # more cells, added to the same table
    python benchmarks/claim.py --quick                # a smoke run in a few minutes (to runs/claim-quick/)
    python benchmarks/claim.py --replot               # table and figure again from the saved results

Scored on the full dev sets (872 SST-2 sentences, 3,250 CoNLL-2003 sentences), final epoch, no
selection on dev. Runs go one at a time on all cores (--workers); a cell's wall time is one
run's: training and a dev evaluation after every epoch. Each finished run is written to the results file at
once; a rerun with the same settings skips the runs already there, so an interrupted table resumes.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
from pathlib import Path

from budget import BUDGET, describe, run_one

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["soft", "deep", "prefix", "prefix-mlp", "head-only", "full"]
# The table's cells, in the order they run: full fine-tuning and the K/V prefix on both tasks
# (how close P-Tuning v2 comes), the shallow and deep hidden-state prompts on CoNLL (the
# sequence-labelling claim). About 31 minutes over 3 seeds on 2 cores (107 on random batches).
CELLS = [("sst2", "full"), ("conll", "full"), ("sst2", "prefix"), ("conll", "prefix"), ("conll", "deep"),
         ("conll", "soft")]
LABELS = {"soft": "shallow prompt", "deep": "deep hidden-state", "prefix": "deep K/V prefix",
          "prefix-mlp": "deep K/V prefix + MLP", "head-only": "head only (probe)", "full": "full fine-tuning"}
NAMES = {"sst2": "SST-2 accuracy", "conll": "CoNLL-2003 F1"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=None, choices=sorted(BUDGET),
                   help="with --methods: every task x method cell (default: the table's cells, CELLS)")
    p.add_argument("--methods", nargs="+", default=None, choices=METHODS,
                   help="run in this order, on every --tasks task (prefix-mlp and head-only are not in the table)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=1,
                   help="runs at a time, sharing the cores (on 2 cores one run with both is quicker than two)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quick", action="store_true", help="smoke run: 64 training examples, 1 epoch, 64 dev, 1 seed")
    p.add_argument("--replot", action="store_true", help="only redraw the table and figure from --json")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "claim_results.json"))
    p.add_argument("--figure", default=str(ROOT / "benchmarks" / "claim.png"))
    return p.parse_args(argv)


def _job(job):
    task, method, seed, data_dir, quick, threads = job
    return run_one(task, method, seed, data_dir=data_dir, quick=quick, threads=threads)


def run(args, runs: list[dict], save) -> list[dict]:
    done = {(r["task"], r["method"], r["seed"]) for r in runs}
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    # cell by cell, each run in a fresh process (maxtasksperchild=1): it reads the recipe as it is
    # when the run starts
    if args.tasks is None and args.methods is None:
        wanted = CELLS
    else:
        wanted = [(t, m) for m in args.methods or METHODS for t in args.tasks or sorted(BUDGET)]
    jobs = [(t, m, s, args.data_dir, args.quick, threads) for t, m in wanted for s in args.seeds
            if (t, m, s) not in done]
    print(f"{len(jobs)} runs to go ({len(done)} already in the results)", flush=True)
    with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        for r in pool.imap_unordered(_job, jobs):
            runs.append(r)
            save(runs)
            print(f"{r['task']:6} {r['method']:11} seed {r['seed']}: {100 * r['final']:.1f} "
                  f"({r['seconds'] / 60:.1f} min)", flush=True)
    return runs


def cells(runs: list[dict]) -> list[dict]:
    """One row per (task, method) in the results: the seeds' scores, their mean, sample std, min, max."""
    out = []
    for task in sorted({r["task"] for r in runs}, key=list(NAMES).index):
        for method in sorted({r["method"] for r in runs}, key=METHODS.index):  # the table's order
            rs = sorted((r for r in runs if r["task"] == task and r["method"] == method), key=lambda r: r["seed"])
            if not rs:
                continue
            s = [100 * r["final"] for r in rs]
            out.append({"task": task, "method": method, "label": LABELS[method], "scores": s,
                        "seeds": [r["seed"] for r in rs], "mean": statistics.mean(s),
                        "std": statistics.stdev(s) if len(s) > 1 else 0.0, "min": min(s), "max": max(s),
                        "trainable": rs[0]["trainable"], "percent": rs[0]["percent"],
                        "minutes": statistics.mean(r["seconds"] for r in rs) / 60,
                        "lr": rs[0]["lr"], "warmup": rs[0]["warmup"], "init": rs[0]["init"],
                        "batches": rs[0].get("batches", "random")})  # runs before train grouped batches
    return out


def markdown(rows: list[dict], quick: bool = False) -> str:
    lines = ["| task | method | trainable params (% of backbone) | recipe: lr / warm-up / init / batches | "
             "dev, mean ± sd over seeds | min–max | wall time per run |",
             "|---|---|---:|---|---:|---:|---:|"]
    for r in rows:
        share = f"{r['percent']:.3f}%" if r["percent"] < 1 else f"{r['percent']:.1f}%"
        spread = f" ± {r['std']:.1f}" if len(r["scores"]) > 1 else ""  # no spread from one seed
        lines.append(f"| {NAMES[r['task']]} | {r['label']} | {r['trainable']:,} ({share}) | "
                     f"{r['lr']:g} / {r['warmup']:g} / {r['init']} / {r['batches']} | {r['mean']:.1f}{spread} "
                     f"(n={len(r['scores'])}) | {r['min']:.1f}–{r['max']:.1f} | {r['minutes']:.1f} min |")
    budgets = "; ".join(f"{NAMES[t].split()[0]}: {describe(t)}" for t in dict.fromkeys(r["task"] for r in rows))
    if quick:
        budgets = "smoke run, 64 training examples x 1 epoch, 64 dev examples (not the claim's budget)"
    return "\n".join(lines) + f"\n\nBudget: {budgets}."


def plot(rows: list[dict], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rs = [r for r in rows if r["task"] == task]
        x = range(len(rs))
        colors = ["#888" if r["method"] in ("head-only", "full") else "#3b7dd8" for r in rs]
        ax.bar(x, [r["mean"] for r in rs], color=colors, alpha=0.55)
        for i, r in enumerate(rs):  # every seed as a dot, the min-max range as a bar
            ax.plot([i] * len(r["scores"]), r["scores"], "o", color="black", markersize=3)
            ax.vlines(i, r["min"], r["max"], color="black", linewidth=1)
            share = f"{r['percent']:.0f}%" if r["percent"] >= 1 else f"{r['percent']:.2g}%"
            ax.annotate(f"{r['mean']:.1f}\n{share}", (i, r["max"]), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(list(x), [r["label"] for r in rs], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("dev entity F1" if task == "conll" else "dev accuracy (%)")
        ax.set_title(f"{NAMES[task].split()[0]}, frozen MiniLM: mean, seeds (dots), % trained", fontsize=9)
        low = min(r["min"] for r in rs)
        ax.set_ylim(max(0, low - 10), 100)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.json)
    saved = json.loads(out.read_text()) if out.is_file() else {}
    runs = saved.get("runs", [])
    if args.quick:
        args.seeds = args.seeds[:1]
        runs = []  # a smoke run never mixes with (or overwrites) the real table
        out = ROOT / "runs" / "claim-quick" / "claim_results.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        args.figure = str(out.with_suffix(".png"))

    def save(rs):
        rows = cells(rs)
        out.write_text(json.dumps({"budget": BUDGET, "runs": rs, "cells": rows, "markdown": markdown(rows, args.quick)},
                                  indent=1))
    if not args.replot:
        runs = run(args, runs, save)
    rows = cells(runs)
    if not rows:
        raise SystemExit(f"no runs in {out}: run without --replot first")
    table = markdown(rows, args.quick)
    print("\n" + table)
    save(runs)
    plot(rows, args.figure)
    print(f"\nwrote {out} and {args.figure}")


if __name__ == "__main__":
    main()
