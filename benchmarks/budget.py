"""The one training budget every comparison in benchmarks/claim.py and benchmarks/recipe.py uses,
and one trained-and-scored run under it.

Frozen pretrained MiniLM, P=16, batch 32; SST-2: the first 4,000 training sentences x 2 epochs
at 64 tokens; CoNLL-2003: the first 4,000 training sentences x 3 epochs at 128 tokens.
"""
from __future__ import annotations

import time

BUDGET = {"sst2": {"max_train": 4000, "epochs": 2, "max_length": 64},
          "conll": {"max_train": 4000, "epochs": 3, "max_length": 128}}
P, BATCH = 16, 32
METRIC = {"sst2": "accuracy", "conll": "f1"}


def describe(task: str) -> str:
    b = BUDGET[task]
    return f"{b['max_train']:,} examples x {b['epochs']} epochs at {b['max_length']} tokens, P={P}, batch {BATCH}"


def run_one(task: str, method: str, seed: int, settings: dict | None = None, holdout: int | None = None,
            data_dir=None, threads: int = 1, quick: bool = False) -> dict:
    """Train `method` on `task` under the budget (settings override the method's recipe: lr, warmup,
    init, P, or prefix_dropout; or train's batches), score the final epoch on dev (or on `holdout` held-out training
    examples), and say what it cost. quick: 64 examples x 1 epoch, for a smoke run."""
    import torch
    torch.set_num_threads(threads)
    from minigpt_ptv2.catalog import BATCHINGS, RECIPES
    from minigpt_ptv2.training.run import train_task
    kw = dict(settings or {})
    method_kwargs = {"dropout": kw.pop("prefix_dropout")} if "prefix_dropout" in kw else {}
    budget = dict(BUDGET[task], **({"max_train": 64, "epochs": 1} if quick else {}))
    start = time.perf_counter()
    summary, _ = train_task(task, method, P=kw.pop("P", P), batch_size=BATCH, seed=seed, holdout=holdout,
                            max_dev=64 if quick and holdout is None else None, data_dir=data_dir, progress=False,
                            method_kwargs=method_kwargs, **budget, **kw)
    metric = METRIC[task]
    recipe = RECIPES[method]
    return {"task": task, "method": method, "seed": seed, "settings": settings or {}, "metric": metric,
            "final": summary["history"][-1][metric], "per_epoch": [h[metric] for h in summary["history"]],
            "trainable": summary["trainable"], "percent": 100.0 * summary["trainable"] / summary["backbone"],
            "seconds": time.perf_counter() - start, "threads": threads, "holdout": holdout,
            "lr": (settings or {}).get("lr", recipe.lr), "warmup": (settings or {}).get("warmup", recipe.warmup),
            "init": (settings or {}).get("init", recipe.init),
            "batches": (settings or {}).get("batches", BATCHINGS[0]),
            "train_examples": summary["train_examples"], "dev_examples": summary["dev_examples"]}
