"""Everything a run needs to continue exactly where it stopped, as safetensors + JSON (no pickle).

    DIR/resume/state.safetensors   model.<name>         every trainable parameter
                                   optim.<i>.<key>      AdamW's per-parameter state (step, exp_avg, ...)
                                   rng.<rank>.torch     torch's CPU generator, one per process
                                   rng.<rank>.cuda.<i>  each CUDA device's generator, when CUDA is in use
                                   rng.loader           the training loader's own generator, if it has one
    DIR/resume/state.json          epochs done, history, optimizer groups, scheduler counters, Python
                                   and NumPy generators per process, the loss watch, the fp16 loss
                                   scaler (scale, growth tracker; null in fp32/bf16), and `extra`
                                   (train_task keeps the best epoch and the run's arguments there)

It is taken at the end of an epoch, after evaluation: on CPU a run resumed from it ends
bit-identical to one that never stopped. Written atomically like a checkpoint (atomic.py), and
kept apart from it: the checkpoint holds the best epoch, this holds the last one.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, MissingFileError
from . import atomic, distributed

DIRNAME, STEM = "resume", "state"
FORMAT = "minigpt_ptv2-resume-state"


def _rng() -> tuple[dict, dict]:
    """This process's generators: JSON-able (Python, NumPy) and tensors (torch CPU, CUDA)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    plain = {"python": [version, list(internal), gauss], "numpy": [name, keys.tolist(), pos, has_gauss, cached]}
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return plain, tensors


def _set_rng(plain: dict, tensors: dict) -> None:
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)


def capture(model, opt, sched, loader, epochs_done: int, history: list, watch: dict, extra: dict, scaler=None):
    """(meta, tensors) of the run after `epochs_done` epochs. Under torchrun every rank must call
    it (the generators are gathered); only rank 0's result is complete. scaler: fp16's GradScaler."""
    model = distributed.unwrap(model)
    tensors = {f"model.{n}": p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    sd = opt.state_dict()
    for i, st in sd["state"].items():
        tensors.update({f"optim.{i}.{k}": v.detach().cpu().contiguous() for k, v in st.items()})
    plain, rng = _rng()
    gathered = distributed.gather_objects((plain, {k: v.numpy().tobytes() for k, v in rng.items()}))
    for rank, (_, raw) in enumerate(gathered):
        tensors.update({f"rng.{rank}.{k}": torch.frombuffer(bytearray(b), dtype=torch.uint8)
                        for k, b in raw.items()})
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        tensors["rng.loader"] = generator.get_state()
    sched_state = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    meta = {"format": FORMAT, "epochs_done": epochs_done, "history": history, "watch": watch,
            "optimizer": {"param_groups": sd["param_groups"]}, "scheduler": sched_state,
            "rng": [p for p, _ in gathered], "scaler": scaler.state_dict() if scaler is not None else None,
            "extra": extra}
    return meta, tensors


def restore(model, opt, sched, loader, meta: dict, tensors: dict, scaler=None) -> None:
    """Put a captured state back: parameters, optimizer, schedule, fp16's loss scale and this rank's
    generators."""
    model = distributed.unwrap(model)
    own = {n: p for n, p in model.named_parameters() if p.requires_grad}
    saved = {k[6:]: t for k, t in tensors.items() if k.startswith("model.")}
    if set(saved) != set(own):
        raise InputError(f"the resume state's tensors do not match the model: missing "
                         f"{sorted(set(own) - set(saved))[:3]}, unexpected {sorted(set(saved) - set(own))[:3]}")
    with torch.no_grad():
        for n, p in own.items():
            p.copy_(saved[n])
    state: dict = {}
    for k, t in tensors.items():
        if k.startswith("optim."):
            _, i, key = k.split(".", 2)
            state.setdefault(int(i), {})[key] = t
    opt.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    sched.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(opt.param_groups)})
    if (scaler is None) != (meta.get("scaler") is None):
        raise InputError(f"the resume state {'holds no' if scaler is not None else 'holds an'} fp16 loss scaler, "
                         f"this run {'has one' if scaler is not None else 'has none'}: was it trained in "
                         f"another precision?")
    if scaler is not None:
        scaler.load_state_dict(meta["scaler"])
    rank = distributed.current().rank
    if rank >= len(meta["rng"]):
        raise InputError(f"the resume state holds generators for {len(meta['rng'])} process(es), not rank {rank}")
    _set_rng(meta["rng"][rank], {k[len(f"rng.{rank}."):]: t for k, t in tensors.items()
                                 if k.startswith(f"rng.{rank}.")})
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator) and "rng.loader" in tensors:
        generator.set_state(tensors["rng.loader"])


def folder(run_dir) -> Path:
    return Path(run_dir) / DIRNAME


def save(run_dir, meta: dict, tensors: dict) -> None:
    """Write the state atomically to RUN_DIR/resume/ (the caller holds RUN_DIR's lock)."""
    path = folder(run_dir)
    path.mkdir(exist_ok=True)
    atomic.commit(path, STEM, tensors, meta, metadata={"format": FORMAT}, plain=False)  # read by name only


def load_meta(run_dir) -> dict:
    """RUN_DIR/resume/state.json alone (the run's arguments are in meta['extra']['args'])."""
    from ..validate import read_json, require
    path = folder(run_dir) / f"{STEM}.json"
    if not Path(run_dir).is_dir():
        raise MissingFileError(f"--resume {run_dir}: no such folder")
    if not path.is_file():
        raise MissingFileError(f"--resume {run_dir}: it holds no interrupted run to resume (no {DIRNAME}/{STEM}.json): "
                               f"the run there finished, or never completed an epoch")
    meta = read_json(path)
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a {FORMAT} file (format={meta.get('format')!r})")
    require(meta, path, {"epochs_done": "int", "history": "list", "watch": "dict", "optimizer": "dict",
                         "scheduler": "dict", "rng": "list", "extra": "dict"})
    require(meta["extra"], f"{path}: field 'extra'", {"args": "dict"})
    return meta


def load(run_dir) -> tuple[dict, dict]:
    """(meta, tensors) of RUN_DIR's resume state, sha256-checked; no pickle involved."""
    meta = load_meta(run_dir)
    return atomic.read(folder(run_dir), STEM, meta)


def run_of(run_dir):
    """The id of the run whose state RUN_DIR/resume holds (None: none, unreadable, or written
    before runs had ids)."""
    try:
        run = json.loads((folder(run_dir) / f"{STEM}.json").read_text())["extra"]["run"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return run if isinstance(run, str) else None


ANY = object()


def remove(run_dir, run=ANY) -> None:
    """Delete the resume state once the run is over (finished, or stopped for diverging).
    run: the id of the run that is over; the state of another run (an earlier run's, which a
    run under --overwrite leaves until its first checkpoint) stays. ANY: whatever is there."""
    path = folder(run_dir)
    if not path.is_dir():
        return
    if run is not ANY and (path / f"{STEM}.json").is_file() and run_of(run_dir) != run:
        return
    (path / f"{STEM}.json").unlink(missing_ok=True)  # first: without it the rest is a leftover
    atomic.clean(path, STEM, keep=None)
    try:
        path.rmdir()
    except OSError:
        pass
