"""P-Tuning v2's central claim, in miniature, on the frozen pretrained MiniLM.

Claim (Liu et al., 2022): deep prompts (at every layer) close most of the gap to full
fine-tuning, on hard sequence-labelling tasks too, while shallow prompt tuning lags on
small/medium models. Here: CoNLL-2003 NER and SST-2, six methods, one budget each.

    python benchmarks/claim.py                       # the README table and figures/claim.png
    python benchmarks/claim.py --quick               # a smoke run in a couple of minutes

Subsampling (stated in the output): a fixed number of training examples per task and a fixed
number of epochs, identical for every method; the first --max-dev dev examples are scored
(all 872 of SST-2; 1,000 of CoNLL-2003's 3,250 sentences).
Writes benchmarks/claim_results.json and figures/claim.png, prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from minigpt_ptv2.training.run import DEFAULT_LR, train_task

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["soft", "deep", "prefix", "prefix-mlp", "head-only", "full"]
LABELS = {"soft": "shallow prompt", "deep": "deep hidden-state", "prefix": "deep K/V prefix",
          "prefix-mlp": "deep K/V prefix + MLP", "head-only": "head only (probe)", "full": "full fine-tuning"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["conll", "sst2"], choices=["conll", "sst2"])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--P", type=int, default=16, help="prompt / prefix length")
    p.add_argument("--max-train", type=int, default=3000, help="training examples per task (subsample)")
    p.add_argument("--max-dev", type=int, default=1000, help="dev examples per task (SST-2 dev has 872)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64, help="truncate sentences to this many tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (64 train, 64 dev, 1 epoch)")
    p.add_argument("--replot", metavar="JSON", default=None,
                   help="redraw the table and figure from a saved results file, without training")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "claim_results.json"))
    p.add_argument("--figure", default=str(ROOT / "figures" / "claim.png"))
    return p.parse_args(argv)


def run(args) -> list[dict]:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for task in args.tasks:
        for method in args.methods:
            print(f"== {task} / {method}", flush=True)
            start = time.perf_counter()
            summary, _ = train_task(task, method, P=args.P, epochs=args.epochs, batch_size=args.batch_size,
                                    max_train=args.max_train, max_dev=args.max_dev, seed=args.seed,
                                    data_dir=args.data_dir, max_length=args.max_length, progress=True)
            metric = "f1" if task == "conll" else "accuracy"
            scores = [h[metric] for h in summary["history"]]
            rows.append({"task": task, "method": method, "label": LABELS[method], "metric": metric,
                         "final": scores[-1], "best": max(scores), "per_epoch": scores,
                         "trainable": summary["trainable"],
                         "percent": 100.0 * summary["trainable"] / summary["backbone"],
                         "seconds": time.perf_counter() - start, "lr": DEFAULT_LR[method],
                         "train_examples": summary["train_examples"], "dev_examples": summary["dev_examples"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows, args) -> str:
    lines = [f"| task | method | trainable params | % of backbone | dev metric (final) | wall time |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        name = "CoNLL-2003 F1" if r["task"] == "conll" else "SST-2 acc"
        lines.append(f"| {name} | {r['label']} | {r['trainable']:,} | {r['percent']:.3f}% | "
                     f"{100 * r['final']:.1f} | {r['seconds'] / 60:.1f} min |")
    sub = (f"{args.max_train} training examples per task, {args.epochs} epochs, P={args.P}, batch {args.batch_size}, "
           f"max length {args.max_length}, dev: {'all' if args.max_dev is None else args.max_dev} examples, seed {args.seed}")
    return "\n".join(lines) + f"\n\nSubsampling: {sub}."


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = sorted({r["task"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rs = [r for r in rows if r["task"] == task]
        bars = ax.bar(range(len(rs)), [100 * r["final"] for r in rs],
                      color=["#888" if r["method"] in ("head-only", "full") else "#3b7dd8" for r in rs])
        for b, r in zip(bars, rs):
            pct = f"{r['percent']:.0f}%" if r["percent"] >= 1 else f"{r['percent']:.2g}%"
            ax.annotate(pct, (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(rs)), [r["label"] for r in rs], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("dev entity F1" if task == "conll" else "dev accuracy")
        ax.set_title(("CoNLL-2003 NER" if task == "conll" else "SST-2") + " — frozen MiniLM (labels: % trained)")
        ax.set_ylim(0, 100)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def _rel(path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name


def main(argv=None):
    args = parse_args(argv)
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        print(markdown(saved["rows"], argparse.Namespace(**saved["args"])))
        plot(saved["rows"], args.figure)
        return
    if args.quick:
        args.max_train, args.max_dev, args.epochs = 64, 64, 1
    rows = run(args)
    table = markdown(rows, args)
    print("\n" + table)
    shown = {**vars(args), "json": _rel(args.json), "figure": _rel(args.figure)}  # no machine paths in results
    Path(args.json).write_text(json.dumps({"args": shown, "rows": rows, "markdown": table}, indent=2))
    plot(rows, args.figure)
    print(f"\nwrote {args.json} and {args.figure}")


if __name__ == "__main__":
    main()
