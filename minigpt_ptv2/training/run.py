"""One call from task + method to a trained, evaluated, saved prompt: what `train` runs.

    history, model = train_task("sst2", "prefix", P=16, epochs=1, max_train=2000, out_dir="runs/sst2")
"""
from __future__ import annotations

import time

from ..data import WordPiece
from ..pretrained import default_model_dir
from .checkpoint import save_checkpoint
from .evaluate import evaluate
from .tasks import build_task_model, get_task
from .trainer import TrainConfig, fit, set_seed

# Learning rates that work for each family on MiniLM (prompts want far larger steps than weights).
DEFAULT_LR = {"soft": 3e-2, "ptuning-mlp": 1e-3, "ptuning-lstm": 1e-3, "deep": 1e-2, "deep-mlp": 1e-3,
              "prefix": 1e-2, "prefix-mlp": 1e-3, "head-only": 5e-3, "full": 5e-5}


def load_splits(task, data_dir=None, max_train=None, max_dev=None, dev_split=None):
    t = get_task(task)
    train = t.load("train", data_dir, max_train)
    dev = t.load(dev_split or t.dev_split, data_dir, max_dev)
    if not train:
        raise ValueError(f"the {task} training set is empty (max_train={max_train})")
    return train, dev


def train_task(task: str, method: str, P: int = 16, epochs: int = 3, lr: float | None = None,
               batch_size: int = 32, max_train: int | None = None, max_dev: int | None = None,
               seed: int = 0, out_dir=None, data_dir=None, model_dir=None, device: str = "cpu",
               max_length: int = 128, progress: bool = True, method_kwargs: dict | None = None):
    """Train `method` on `task`, evaluate on dev after every epoch, save a checkpoint if out_dir."""
    t = get_task(task)
    set_seed(seed)
    model_dir = model_dir or default_model_dir()
    tok = WordPiece.from_model_dir(model_dir)
    train, dev = load_splits(task, data_dir, max_train, max_dev)
    train_loader = t.batches(train, tok, batch_size=batch_size, shuffle=True, seed=seed, max_length=max_length)
    dev_loader = t.batches(dev, tok, batch_size=64, shuffle=False, seed=seed, max_length=max_length)
    model = build_task_model(task, method, P, model_dir=model_dir, **(method_kwargs or {})).to(device)
    cfg = TrainConfig(epochs=epochs, lr=lr or DEFAULT_LR[method], seed=seed, device=device, progress=progress)
    start = time.perf_counter()
    history = fit(model, train_loader, cfg, evaluate=lambda m: evaluate(m, dev_loader, t, dev, device), task=task)
    summary = {"task": task, "method": method, "P": P, "train_examples": len(train), "dev_examples": len(dev),
               "seconds": time.perf_counter() - start, "history": history,
               "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
               "backbone": sum(p.numel() for n, p in model.named_parameters()
                               if n.startswith("encoder.") and not n.startswith("encoder.prompt."))}
    if out_dir is not None:
        summary["checkpoint"] = save_checkpoint(model, out_dir, task=task, method=method, P=P,
                                                method_kwargs=method_kwargs, labels=t.labels,
                                                extra={"train": {"epochs": epochs, "lr": cfg.lr, "seed": seed,
                                                                 "batch_size": batch_size}})
    return summary, model
