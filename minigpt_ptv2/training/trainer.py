"""The training loop: AdamW over trainable parameters only, warm-up then linear decay, gradient
clipping, fixed seeds, evaluation after each epoch, and a progress bar with loss and throughput.

It works unchanged on CPU or CUDA and under `torchrun` (see distributed.py): the model passed in
may be wrapped in DistributedDataParallel, and the loader may use a DistributedSampler.

Several tasks over one prompt: a batch carrying a "task" key is routed to that head, so
`fit(model, Alternate({"sst2": a, "conll": b}), cfg)` trains both heads and the shared prompt,
one batch of each task in turn.

A run can be continued: `on_epoch(record, snapshot)` is called after every epoch's evaluation,
and `snapshot(extra)` returns the state (state.py) that `fit(..., start=state)` continues from.
A loss that is not finite, or far above where it started (divergence.py), stops the run before
the step is applied.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from ..data.grouping import LengthGroupedSampler
from ..errors import InputError, NonFiniteError
from ..progress import progress, write
from . import precision as amp
from . import state as run_state
from .distributed import current, global_sum, unwrap
from .divergence import LossWatch, non_finite_loss
from .heads import task_loss
from .recompute import enable_grad_checkpoint


@dataclass
class TrainConfig:
    epochs: int = 3
    lr: float = 1e-2
    warmup_ratio: float = 0.1  # fraction of all steps spent rising linearly to the peak lr (see warmup_decay)
    weight_decay: float = 0.0
    clip: float = 1.0  # max global gradient norm over all trainable parameters (0 = no clipping)
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    # Stop when the mean loss of the last `diverge_window` steps exceeds `diverge_factor` times the
    # run's starting loss (0 = never): a run that far above its start is not learning, and every
    # further step only moves the prompt further away. The rule, and why 3 and 10: divergence.py.
    diverge_factor: float = 3.0
    diverge_window: int = 10
    # Recompute each layer's activations in backward instead of keeping them (recompute.py): less
    # memory, one more forward pass per step, the same gradients. Stays on for the model after fit.
    grad_checkpoint: bool = False
    # "fp32" | "bf16" | "fp16": the forward passes (training and evaluation) under autocast in that
    # precision; parameters and the loss stay float32; fp16 scales the loss (precision.py).
    precision: str = "fp32"

    def __post_init__(self):
        amp.check_precision(self.precision)
        if self.epochs <= 0 or not 0 < self.lr < math.inf:  # also refuses NaN
            raise InputError(f"epochs and lr must be positive, got epochs={self.epochs}, lr={self.lr} (and lr "
                             f"finite)")
        if not 0 <= self.warmup_ratio < 1:
            raise InputError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.clip < 0:
            raise InputError(f"clip (max gradient norm) must be >= 0 (0 = no clipping), got {self.clip}")
        if not (self.diverge_factor == 0 or 1 <= self.diverge_factor < math.inf) or self.diverge_window <= 0:
            raise InputError(f"diverge_factor must be 0 (off) or a finite number >= 1 (below 1 a run that learns "
                             f"would be stopped as diverged), and diverge_window positive, got "
                             f"{self.diverge_factor} and {self.diverge_window}")


SEED_LIMIT = 2**32  # NumPy's generator takes seeds 0 .. 2**32 - 1


def set_seed(seed: int) -> None:
    """Seed every generator a run touches (Python, NumPy, torch on every device)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise InputError(f"seed must be an integer from 0 to {SEED_LIMIT - 1:,} (NumPy's generator takes 32 bits), "
                         f"got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_decay(optimizer, total_steps: int, warmup_ratio: float):
    """A triangle over steps s = 0..T-1 (T = total_steps, W = max(1, int(T * warmup_ratio))):

        lr_s = peak * min((s + 1) / W, (T - s) / (T - W + 1))

    up in W equal steps to the peak at s = W-1, then down in equal steps to 0 at s = T, one step
    after the last: neither the first nor the last step is spent at lr 0, and the peak is used
    once (warmup_ratio=0: peak, then straight down).
    """
    if total_steps <= 0:
        raise InputError(f"total_steps must be positive, got {total_steps}")
    warm = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        return max(0.0, min((step + 1) / warm, (total_steps - step) / (total_steps - warm + 1)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


EPOCH_SAMPLERS = (DistributedSampler, LengthGroupedSampler)  # they reshuffle from seed + epoch


def start_epoch(loader, epoch: int) -> None:
    """Tell `loader` that epoch `epoch` begins: the samplers that shuffle from seed + epoch
    (EPOCH_SAMPLERS) must hear it, or every epoch repeats the first one's order; a plain shuffle
    draws anew by itself. An Alternate passes it on to each task's loader."""
    if isinstance(loader, Alternate):
        loader.set_epoch(epoch)
    elif isinstance(getattr(loader, "sampler", None), EPOCH_SAMPLERS):  # a list of batches has none
        loader.sampler.set_epoch(epoch)


class Alternate:
    """Batches of several tasks in turn, each tagged with its task name for `fit` and TaskModel:

        Alternate({"sst2": a, "conll": b})  ->  a[0], b[0], a[1], b[1], ...  (until all run out)

    The epoch has len(a) + len(b) steps; a shorter loader simply stops contributing. Under DDP,
    wrap with find_unused=True: every step leaves the other tasks' heads without a gradient.
    """

    def __init__(self, loaders: dict):
        if not loaders:
            raise InputError("Alternate needs at least one task loader")
        self.loaders = dict(loaders)

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders.values())

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders.values():
            start_epoch(loader, epoch)

    def __iter__(self):
        iters = {name: iter(loader) for name, loader in self.loaders.items()}
        while iters:
            for name in list(iters):
                batch = next(iters[name], None)
                if batch is None:
                    del iters[name]
                else:
                    yield {**batch, "task": name}


def batch_to(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def fit(model, train_loader, cfg: TrainConfig, evaluate=None, task: str | None = None, is_main: bool = True,
        on_epoch=None, start=None, tokens_per_batch: float | None = None):
    """Train `model` (a TaskModel, possibly DDP-wrapped); returns a list of per-epoch records.

    evaluate: optional callable(model) -> dict of metrics, run after every epoch.
    task: the head to train; a batch with a "task" key (see Alternate) overrides it.
    on_epoch: optional callable(record, snapshot) -> str | None, after evaluate; snapshot(extra)
        gives (meta, tensors) to save for a resume; the text returned ends the epoch line.
    start: a (meta, tensors) state from snapshot (state.load) to continue from.
    tokens_per_batch: a token task's loss is its batch's summed loss divided by this constant
        instead of its batch's mean (heads.task_loss; train_task sets it for grouped batches). One
        constant for every token-task batch: under Alternate, two token tasks would share it.
    Under fp16 a step whose scaled gradients overflowed is skipped, as if its batch were not
    there: no update, and the schedule does not advance (the loss scale is halved instead). If
    the first FP16_GIVE_UP steps are all skipped, float16's range is the trouble, not the data or
    the learning rate: the run stops, saying so (precision.py).
    Raises NonFiniteError (with a diagnosis) or Diverged before a bad loss updates anything.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("nothing to train: no parameter requires gradients")
    if len(train_loader) == 0:
        raise InputError("the training set is empty (0 batches)")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_decay(opt, cfg.epochs * len(train_loader), cfg.warmup_ratio)
    scaler = amp.grad_scaler(cfg.precision, cfg.device)  # fp16 only, else None
    history, first, watch = [], 0, LossWatch(cfg.diverge_factor, cfg.diverge_window)
    taken, skipped = 0, 0  # optimizer updates applied by this call; fp16 steps skipped since the last one
    if cfg.grad_checkpoint:
        enable_grad_checkpoint(model)
    if start is not None:
        run_state.restore(model, opt, sched, train_loader, *start, scaler=scaler)
        meta = start[0]
        history, first = list(meta["history"]), meta["epochs_done"]
        watch = LossWatch(cfg.diverge_factor, cfg.diverge_window, meta["watch"])
    world = current().world_size
    for epoch in range(first, cfg.epochs):
        start_epoch(train_loader, epoch)
        model.train()
        start_time, seen, total = time.perf_counter(), 0, 0.0
        bar = progress(train_loader, f"epoch {epoch + 1}/{cfg.epochs}", enabled=cfg.progress and is_main)
        for step, batch in enumerate(bar):
            batch = batch_to(batch, cfg.device)
            where = f"epoch {epoch + 1}, step {step}"
            try:
                with amp.autocast(cfg.precision, cfg.device):
                    logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                                   task=batch.get("task", task))
            except NonFiniteError as e:  # a prompt that checks its own values as it runs
                raise NonFiniteError(f"at {where}: {e}") from None
            loss = task_loss(logits, batch["labels"], tokens_per_batch)  # float32, whatever the logits' dtype
            if not torch.isfinite(loss):
                raise non_finite_loss(unwrap(model), loss.item(), where, cfg.lr, cfg.precision,
                                      updated=taken > 0 or first > 0)
            # every rank judges the same number (the mean over ranks), so all of them stop together
            watch.check(global_sum(loss.item())[0] / world, logits.shape[-1], where)
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
            else:  # fp16: backward through loss * S, then the gradients divided by S before clipping
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            if cfg.clip > 0:  # one norm over all trainable tensors together, scaled down to `clip`
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            if scaler is None:
                opt.step()
                sched.step()
                taken += 1
            else:
                scale = scaler.get_scale()
                scaler.step(opt)  # skipped if a gradient holds inf/NaN
                scaler.update()  # ... and then S is halved
                if scaler.get_scale() >= scale:  # the step was taken
                    sched.step()
                    taken, skipped = taken + 1, 0
                else:
                    skipped += 1
                    if skipped >= amp.FP16_GIVE_UP and taken == 0 and first == 0:
                        raise amp.fp16_overflow(where, skipped, scaler.get_scale())
            seen += batch["input_ids"].shape[0]
            total += loss.item()
            bar.set_postfix(loss=f"{total / (step + 1):.4f}",
                            ex_s=f"{seen / (time.perf_counter() - start_time):.1f}")
        total, seen = global_sum(total, seen)  # over all ranks under torchrun (a no-op otherwise)
        record = {"epoch": epoch + 1, "train_loss": total / (len(train_loader) * world),
                  "seconds": time.perf_counter() - start_time, "examples": int(seen)}
        if evaluate is not None:
            model.eval()
            with amp.autocast(cfg.precision, cfg.device):
                record.update(evaluate(model))
        history.append(record)

        def snapshot(extra=None, done=epoch + 1):
            return run_state.capture(model, opt, sched, train_loader, done, history, watch.state(), extra or {},
                                     scaler=scaler)
        note = on_epoch(record, snapshot) if on_epoch is not None else None
        if is_main and cfg.progress:
            shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
            write(shown + (f"  {note}" if note else ""))
    return history


def config_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)
