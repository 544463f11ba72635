"""The training loop: AdamW over trainable parameters only, warm-up then linear decay, gradient
clipping, fixed seeds, evaluation after each epoch, and a progress bar with loss and throughput.

It works unchanged on CPU or CUDA and under `torchrun` (see distributed.py): the model passed in
may be wrapped in DistributedDataParallel, and the loader may use a DistributedSampler.
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .distributed import current, global_sum
from .heads import task_loss


@dataclass
class TrainConfig:
    epochs: int = 3
    lr: float = 1e-2
    warmup_ratio: float = 0.1  # fraction of all steps spent warming up linearly from 0
    weight_decay: float = 0.0
    clip: float = 1.0  # max gradient norm (0 = no clipping)
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        if self.epochs <= 0 or self.lr <= 0:
            raise ValueError(f"epochs and lr must be positive, got epochs={self.epochs}, lr={self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


def set_seed(seed: int) -> None:
    """Seed every generator a run touches (Python, NumPy, torch on every device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_decay(optimizer, total_steps: int, warmup_ratio: float):
    """Linear warm-up to the base lr, then linear decay to 0 at `total_steps`."""
    warm = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batch_to(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def fit(model, train_loader, cfg: TrainConfig, evaluate=None, task: str | None = None, is_main: bool = True):
    """Train `model` (a TaskModel, possibly DDP-wrapped); returns a list of per-epoch records.

    evaluate: optional callable(model) -> dict of metrics, run after every epoch.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter requires gradients")
    if len(train_loader) == 0:
        raise ValueError("the training set is empty (0 batches)")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_decay(opt, cfg.epochs * len(train_loader), cfg.warmup_ratio)
    history = []
    for epoch in range(cfg.epochs):
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # a new shuffle per epoch under DistributedSampler
        model.train()
        start, seen, total = time.perf_counter(), 0, 0.0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and is_main),
                   dynamic_ncols=True, leave=False)
        for step, batch in enumerate(bar):
            batch = batch_to(batch, cfg.device)
            logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), task=task)
            loss = task_loss(logits, batch["labels"])
            if not torch.isfinite(loss):
                raise RuntimeError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step}: "
                                   f"lower the learning rate (now {cfg.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            sched.step()
            seen += batch["input_ids"].shape[0]
            total += loss.item()
            bar.set_postfix(loss=f"{total / (step + 1):.4f}", ex_s=f"{seen / (time.perf_counter() - start):.1f}")
        total, seen = global_sum(total, seen)  # over all ranks under torchrun (a no-op otherwise)
        record = {"epoch": epoch + 1, "train_loss": total / (len(train_loader) * current().world_size),
                  "seconds": time.perf_counter() - start, "examples": int(seen)}
        if evaluate is not None:
            model.eval()
            record.update(evaluate(model))
        history.append(record)
        if is_main and cfg.progress:
            shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
            tqdm.write(shown)
    return history


def config_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)
