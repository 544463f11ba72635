"""One call from task + method to a trained, evaluated, saved prompt: what `train` runs.

    summary, model = train_task("sst2", "prefix", P=16, epochs=1, max_train=2000, out_dir="runs/sst2")
    summary, model = train_task(**saved_arguments("runs/sst2"), out_dir="runs/sst2", resume=True)

The output folder is checked before anything is loaded (runfolder.py) and locked for the whole
run (lock.py). After every epoch the best epoch so far is kept as the checkpoint and the resume
state is saved (keeper.py, state.py); a finished run leaves only checkpoint.json and
checkpoint.safetensors. The returned model is the last epoch's; the checkpoint holds the best.

The same call works in one process or in each of the processes torchrun starts (see
distributed.py): `batch_size` is the global batch, and only rank 0 evaluates and saves.

`train lm` (lm.py, a decoder's prompt on a text file) shares all of this: each kind of run only
prepares its model, data, evaluation and checkpoint (a `Prepared`), and `run_claimed` does the rest.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from ..core.attention import MultiHeadAttention
from ..catalog import BATCHINGS, INITS, LM_TASK, RECIPES
from ..data import WordPiece
from ..data.grouping import tokens_per_batch
from .. import outdir
from ..errors import InputError, NonFiniteError
from . import distributed, runfolder
from . import state as run_state
from .checkpoint import (META, backbone_id, backbone_info, backbone_of, check_resumed_backbone, read_checkpoint,
                         save_checkpoint)
from .divergence import Diverged
from .evaluate import evaluate
from .keeper import Interrupted, Keeper, interrupted_note
from .tasks import TRAIN_METHODS, build_task_model, get_task, start_text
from .trainer import SEED_LIMIT, TrainConfig, fit, set_seed


def load_splits(task, data_dir=None, max_train=None, max_dev=None, dev_split=None, holdout=None):
    """(train, dev). holdout=n: "dev" is instead the n training examples after the first max_train,
    never the dev set, so that settings can be chosen without looking at dev."""
    t = get_task(task)
    if holdout is not None:
        if max_train is None or holdout <= 0:
            raise InputError(f"holdout={holdout} needs max_train (the examples before the held-out ones) "
                             f"and a positive size")
        rows = t.load("train", data_dir, max_train + holdout)
        train, dev = rows[:max_train], rows[max_train:]
        if len(dev) < holdout:
            raise InputError(f"the {task} training set has {len(rows)} examples: too few for max_train="
                             f"{max_train} plus holdout={holdout}")
    else:
        train = t.load("train", data_dir, max_train)
        dev = t.load(dev_split or t.dev_split, data_dir, max_dev)
    if not train:
        raise InputError(f"the {task} training set is empty (max_train={max_train})")
    return train, dev


def training_loader(rows, task, batch_size: int, info, seed: int, batches: str):
    """How `train` draws its batches: (the loader this rank steps through, the token loss's
    divisor that goes with it, heads.task_loss; None: each batch's own mean).

    rows: the task's loader over the training examples (Task.batches); batches: one of BATCHINGS.
    """
    K = tokens_per_batch(rows.dataset.labels, batch_size) if task.kind == "token" else None
    if K == 0:
        raise InputError(f"the {len(rows.dataset)} training sentences have no labelled token: no word kept a "
                         f"word piece within --max-length {rows.dataset.max_length}, so there is nothing to learn from")
    grouped = batches == "grouped"
    lengths = [len(ids) for ids in rows.dataset.input_ids] if grouped else None
    loader = distributed.shard_loader(rows, batch_size, info, seed, lengths=lengths)
    # each of W ranks sums over its 1/W of a batch; DDP's mean of their gradients is then the sum / K
    return loader, (K / info.world_size if grouped and K is not None else None)


def disable_dropout(model: nn.Module) -> None:
    """Every dropout off (backbone, attention, prompt, head): training becomes a deterministic
    function of the data order, e.g. to compare a run over 2 processes with a run over 1."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        elif isinstance(m, MultiHeadAttention):
            m.dropout = 0.0


def saved_arguments(out_dir) -> dict:
    """The train_task arguments the interrupted run in `out_dir` was started with."""
    args = run_state.load_meta(out_dir)["extra"]["args"]
    if args.get("task") != LM_TASK:  # an argument added since the run started: what it ran with then
        args = {**runfolder.ADDED_LATER, **args}
    return {k: v for k, v in args.items() if k not in ("world_size", "data", "backbone")}


def data_fingerprint(dataset) -> str:
    """sha256 of the tokenised training rows and labels: a resume must read the same data."""
    rows = json.dumps([dataset.input_ids, dataset.labels], separators=(",", ":"))
    return hashlib.sha256(rows.encode()).hexdigest()[:16]


def train_task(task: str, method: str, P: int = 16, epochs: int = 3, lr: float | None = None,
               batch_size: int = 32, max_train: int | None = None, max_dev: int | None = None,
               seed: int = 0, out_dir=None, data_dir=None, model_dir=None, device: str = "cpu",
               max_length: int = 128, progress: bool = True, method_kwargs: dict | None = None,
               dropout: bool = True, resume: bool = False, overwrite: bool = False,
               diverge_factor: float = TrainConfig.diverge_factor, grad_checkpoint: bool = False,
               precision: str = "fp32", warmup: float | None = None, init: str | None = None,
               holdout: int | None = None, batches: str = BATCHINGS[0], allow_other_backbone: bool = False):
    """Train `method` on `task`, evaluate on dev after every epoch, keep the best epoch in out_dir.

    dropout=True trains with the backbone's dropout on, as P-Tuning v2 does (model.train()).
    resume=True continues the interrupted run in out_dir; every argument that defines the run
    must be the one it was started with (saved_arguments gives them). More epochs are refused
    too: the learning-rate schedule spans all epochs, so they would change every step taken.
    So is another backbone, unless allow_other_backbone (then recorded in the checkpoint).
    overwrite=True lets a new run replace the checkpoint out_dir holds.
    grad_checkpoint=True recomputes each layer's activations in backward (recompute.py): less memory.
    precision: "fp32", "bf16" or "fp16" autocast for training and the dev evaluation (precision.py).
    lr, warmup (share of the steps spent rising to the peak lr) and init ("tokens": the prompt
    starts from the first P word pieces of the training set, prompts/from_tokens.py; "random")
    default to the method's recipe (catalog.RECIPES, measured in benchmarks/recipe.py).
    holdout=n scores the n training examples after the first max_train instead of dev (load_splits).
    model_dir and data_dir (default: the shipped MiniLM, the data folder found) are recorded, so that
    a resume reads the same folders without being told; out_dir may be none of them (outdir.py).
    batches="grouped" draws each batch from rows of similar length (data/grouping.py: 0.37-0.43 of
    the time per epoch on SST-2 and CoNLL; a token task's summed loss is then divided by the epoch's
    mean labelled tokens per batch, heads.task_loss); "random" is the plain shuffle.
    """
    t = get_task(task)
    if method not in TRAIN_METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {list(TRAIN_METHODS)}")
    info = distributed.current()
    recipe = RECIPES[method]
    warmup = recipe.warmup if warmup is None else warmup
    init = recipe.init if init is None else init
    if init not in INITS:
        raise InputError(f"init must be one of {INITS}, got {init!r}")
    if batches not in BATCHINGS:
        raise InputError(f"batches must be one of {BATCHINGS}, got {batches!r}")
    cfg = TrainConfig(epochs=epochs, lr=lr or recipe.lr, seed=seed, device=device, progress=progress,
                      diverge_factor=diverge_factor, grad_checkpoint=grad_checkpoint, precision=precision,
                      warmup_ratio=warmup)
    reads = outdir.inputs(model_dir, data_dir, t.folder)  # the data folder None if missing: load_splits names it
    folder = Path(reads["--model-dir"]).resolve()
    data_root = reads["--data-dir"].parent.resolve() if reads["--data-dir"] is not None else data_dir
    args = {"task": task, "method": method, "P": P, "method_kwargs": method_kwargs or {}, "epochs": epochs,
            "lr": cfg.lr, "batch_size": batch_size, "max_train": max_train, "max_dev": max_dev,
            "max_length": max_length, "seed": seed, "dropout": dropout, "diverge_factor": diverge_factor,
            "grad_checkpoint": grad_checkpoint, "precision": precision, "warmup": warmup, "init": init,
            "holdout": holdout, "batches": batches, "world_size": info.world_size,
            "model_dir": str(folder), "data_dir": str(data_root) if data_root is not None else None}
    out = runfolder.check_start(out_dir, args, resume, overwrite, info, reads)

    def prepare() -> Prepared:
        tok = WordPiece.from_model_dir(folder)
        train, dev = load_splits(task, data_root, max_train, max_dev, holdout=holdout)
        rows = t.batches(train, tok, batch_size=batch_size, max_length=max_length)
        train_loader, per_batch = training_loader(rows, t, batch_size, info, seed, batches)
        dev_loader = t.batches(dev, tok, batch_size=64, shuffle=False, seed=seed, max_length=max_length)
        start = start_text(train_loader.dataset.input_ids, tok, P) if init == "tokens" else None
        model = build_task_model(task, method, P, model_dir=folder, start=start,
                                 **(method_kwargs or {})).to(device)
        backbone = backbone_info(model.encoder)  # before training: "full" changes the weights it hashes
        # A token head never reads the pooler: under "full" it gets no gradient, which DDP must be told.
        unused = t.kind == "token" and any(p.requires_grad for p in model.encoder.pooler.parameters())

        def save(kept, run):
            return save_checkpoint(model, out, task=task, method=method, P=P, method_kwargs=method_kwargs,
                                   labels=t.labels, extra={"backbone": backbone, "kept": kept, **run, "train": {
                                       "epochs": epochs, "lr": cfg.lr, "warmup": warmup, "init": init,
                                       "seed": seed, "batch_size": batch_size,
                                       "max_length": max_length, "dropout": dropout,
                                       "grad_checkpoint": grad_checkpoint, "precision": precision,
                                       "world_size": info.world_size, "train_examples": len(train),
                                       "holdout": holdout, "batches": batches}})  # kept by held-out training rows, not dev

        return Prepared(model=model, backbone=backbone, train_loader=train_loader,
                        data=data_fingerprint(train_loader.dataset),
                        evaluate=lambda m: evaluate(m, dev_loader, t, dev, device, show_progress=cfg.progress),
                        save=save, metric=t.metric, find_unused=unused, tokens_per_batch=per_batch,
                        facts={"task": task, "method": method, "P": P, "train_examples": len(train),
                               "dev_examples": len(dev), "holdout": holdout})

    return run_claimed(out, args, cfg, info, prepare, what=f"train {task} {method}", resume=resume,
                       overwrite=overwrite, dropout=dropout, task=task, allow_other_backbone=allow_other_backbone)


@dataclass
class Prepared:
    """What one kind of run trains and how it is judged: built by train_task (here) or train_lm
    (lm.py) once the output folder is theirs; run_claimed does the rest for both."""
    model: nn.Module  # a TaskModel or an LMTaskModel, its prompt attached, its backbone frozen
    backbone: dict  # backbone_info, taken before training
    train_loader: object
    data: str  # fingerprint of the training rows: a resume must read the same data
    evaluate: Callable  # model -> {metric: value, ...} on the dev / held-out data
    save: Callable  # (kept, {"run": id} or {}) -> save_checkpoint's answer (the run's id goes into checkpoint.json)
    metric: str  # the entry of evaluate's answer that picks the kept epoch
    higher_is_better: bool = True  # accuracy, F1: yes; perplexity: no
    find_unused: bool = False  # parameters that get no gradient (DDP must be told)
    facts: dict = field(default_factory=dict)  # the first entries of the summary
    tokens_per_batch: float | None = None  # token tasks under grouped batches: fit's loss divisor


def run_claimed(out, args: dict, cfg: TrainConfig, info, prepare, *, what: str, resume: bool, overwrite: bool,
                dropout: bool, task: str, allow_other_backbone: bool = False):
    """Claim and lock `out`, prepare() the run, then train it: the best epoch kept as the checkpoint,
    a resume state after every epoch, a diverged run stopped. Returns (summary, model).
    allow_other_backbone: resume on another backbone than the run started on (recorded)."""
    # The folder is ours before anything slow happens: a second run writing it is refused at once,
    # whatever else is wrong with its arguments or data.
    claim = runfolder.claimed(out, what) if out is not None and info.is_main else contextlib.nullcontext()
    run_id = secrets.token_hex(8)
    try:
        with claim:
            return _run(out, args, cfg, info, prepare, resume, overwrite, dropout, task, run_id, allow_other_backbone)
    except KeyboardInterrupt as e:
        if not info.is_main or out is None or isinstance(e, Interrupted):
            raise
        # a resumed run writes under the id of the run it continues (None: saved before runs had ids)
        raise Interrupted(interrupted_note(out, run_state.run_of(out) if resume else run_id)) from None


def _run(out, args, cfg, info, prepare, resume, overwrite, dropout, task, run_id, allow_other_backbone):
    """run_claimed's work, inside the claimed folder."""
    set_seed(cfg.seed)  # same initial prompt and head on every rank (DDP also broadcasts rank 0's)
    run = prepare()
    model = run.model
    args["data"] = run.data
    start = None
    if resume:
        start = run_state.load(out)
        runfolder.check_resume(out)  # again: the folder is ours now
        run_id = start[0]["extra"].get("run")  # None: a state written before runs had ids
    elif out is not None and info.is_main:
        runfolder.check_out(out, overwrite)  # again: the folder is ours now
    # An earlier run's checkpoint and resume state stay untouched until this run's first
    # checkpoint replaces them (runfolder.py); its id tells the two runs' files apart.
    args["backbone"] = backbone_id(run.backbone)
    if start is not None:
        saved = dict(start[0]["extra"]["args"])
        other = check_resumed_backbone(saved.get("backbone"), out, backbone_of(model), allow_other_backbone)
        if other is not None:  # recorded in every checkpoint this run keeps from now on
            run.backbone["resumed_on_other_backbone"] = other
        saved["backbone"] = args["backbone"]  # compared just above, naming what differs
        runfolder.check_same(saved, args, out)
    if not dropout:
        disable_dropout(model)
    wrapped = distributed.wrap(model, info, cfg.device, find_unused=run.find_unused)
    set_seed((cfg.seed + info.rank) % SEED_LIMIT)  # independent dropout masks per rank (rank 0 = a single process)

    def evaluate_main(m):
        return run.evaluate(distributed.unwrap(m)) if info.is_main else {}

    ours = {"run": run_id} if run_id is not None else {}
    keeper = Keeper(out, run.metric, cfg.epochs, lambda kept: run.save(kept, ours), {"args": args, **ours},
                    info.is_main, start[0]["extra"] if start is not None else None,
                    higher_is_better=run.higher_is_better)
    begin = time.perf_counter()
    try:
        history = fit(wrapped, run.train_loader, cfg, evaluate=evaluate_main, task=task, is_main=info.is_main,
                      on_epoch=keeper.on_epoch, start=start, tokens_per_batch=run.tokens_per_batch)
    except (Diverged, NonFiniteError) as e:
        if out is not None and info.is_main:
            run_state.remove(out, run_id)  # the run is over: resuming would only repeat it
        raise keeper.stopped(e, cfg) from None
    summary = {**run.facts, "seconds": time.perf_counter() - begin, "history": history, "kept": keeper.best,
               **_sizes(model)}
    if start is not None:
        summary["resumed_after_epoch"] = start[0]["epochs_done"]
    if info.enabled:
        summary["distributed"] = {"world_size": info.world_size,
                                  "max_rank_difference": distributed.max_rank_difference(model)}
    if out is not None and info.is_main:
        run_state.remove(out, run_id)
        summary["checkpoint"] = _checkpoint_info(out)
    return summary, model


def _sizes(model) -> dict:
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "backbone": sum(p.numel() for n, p in backbone_of(model).named_parameters()
                            if not n.startswith("prompt."))}


def _checkpoint_info(out: Path) -> dict:
    meta, tensors = read_checkpoint(out)
    size = (out / META).stat().st_size + (out / meta["weights"]).stat().st_size
    return {"path": str(out), "bytes": size, "tensors": len(tensors), "kept": meta.get("kept")}
