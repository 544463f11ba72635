"""One call from task + method to a trained, evaluated, saved prompt: what `train` runs.

    history, model = train_task("sst2", "prefix", P=16, epochs=1, max_train=2000, out_dir="runs/sst2")

The same call works in one process or in each of the processes torchrun starts (see
distributed.py): `batch_size` is the global batch, and only rank 0 evaluates and saves.
"""
from __future__ import annotations

import time

from torch import nn

from ..attention import MultiHeadAttention
from ..catalog import DEFAULT_LR
from ..data import WordPiece
from ..errors import InputError
from ..pretrained import default_model_dir
from . import distributed
from .checkpoint import backbone_info, save_checkpoint
from .evaluate import evaluate
from .tasks import build_task_model, get_task
from .trainer import TrainConfig, fit, set_seed


def load_splits(task, data_dir=None, max_train=None, max_dev=None, dev_split=None):
    t = get_task(task)
    train = t.load("train", data_dir, max_train)
    dev = t.load(dev_split or t.dev_split, data_dir, max_dev)
    if not train:
        raise InputError(f"the {task} training set is empty (max_train={max_train})")
    return train, dev


def disable_dropout(model: nn.Module) -> None:
    """Every dropout off (backbone, attention, prompt, head): training becomes a deterministic
    function of the data order, e.g. to compare a run over 2 processes with a run over 1."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        elif isinstance(m, MultiHeadAttention):
            m.dropout = 0.0


def train_task(task: str, method: str, P: int = 16, epochs: int = 3, lr: float | None = None,
               batch_size: int = 32, max_train: int | None = None, max_dev: int | None = None,
               seed: int = 0, out_dir=None, data_dir=None, model_dir=None, device: str = "cpu",
               max_length: int = 128, progress: bool = True, method_kwargs: dict | None = None,
               dropout: bool = True):
    """Train `method` on `task`, evaluate on dev after every epoch, save a checkpoint if out_dir.

    dropout=True trains with the backbone's dropout on, as P-Tuning v2 does (model.train()).
    """
    t = get_task(task)
    if batch_size <= 0:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    info = distributed.current()
    set_seed(seed)  # same initial prompt and head on every rank (DDP also broadcasts rank 0's)
    model_dir = model_dir or default_model_dir()
    tok = WordPiece.from_model_dir(model_dir)
    train, dev = load_splits(task, data_dir, max_train, max_dev)
    train_loader = distributed.shard_loader(
        t.batches(train, tok, batch_size=batch_size, max_length=max_length), batch_size, info, seed)
    dev_loader = t.batches(dev, tok, batch_size=64, shuffle=False, seed=seed, max_length=max_length)
    model = build_task_model(task, method, P, model_dir=model_dir, **(method_kwargs or {})).to(device)
    backbone = backbone_info(model.encoder)  # before training: "full" changes the weights it hashes
    if not dropout:
        disable_dropout(model)
    cfg = TrainConfig(epochs=epochs, lr=lr or DEFAULT_LR[method], seed=seed, device=device, progress=progress)
    # A token head never reads the pooler: under "full" it gets no gradient, which DDP must be told.
    unused = t.kind == "token" and any(p.requires_grad for p in model.encoder.pooler.parameters())
    wrapped = distributed.wrap(model, info, device, find_unused=unused)
    set_seed(seed + info.rank)  # independent dropout masks per rank (rank 0 = a single process)

    def evaluate_main(m):
        return evaluate(distributed.unwrap(m), dev_loader, t, dev, device) if info.is_main else {}

    start = time.perf_counter()
    history = fit(wrapped, train_loader, cfg, evaluate=evaluate_main, task=task, is_main=info.is_main)
    summary = {"task": task, "method": method, "P": P, "train_examples": len(train), "dev_examples": len(dev),
               "seconds": time.perf_counter() - start, "history": history,
               "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
               "backbone": sum(p.numel() for n, p in model.named_parameters()
                               if n.startswith("encoder.") and not n.startswith("encoder.prompt."))}
    if info.enabled:
        summary["distributed"] = {"world_size": info.world_size,
                                  "max_rank_difference": distributed.max_rank_difference(model)}
    if out_dir is not None and info.is_main:
        summary["checkpoint"] = save_checkpoint(
            model, out_dir, task=task, method=method, P=P, method_kwargs=method_kwargs, labels=t.labels,
            extra={"backbone": backbone,
                   "train": {"epochs": epochs, "lr": cfg.lr, "seed": seed, "batch_size": batch_size,
                             "max_length": max_length, "dropout": dropout, "world_size": info.world_size,
                             "train_examples": len(train)}})
    return summary, model
