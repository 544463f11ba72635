"""Tiny checkpoints: only what was trained (prompt + head) as safetensors, plus a small JSON.

    out/checkpoint.safetensors   e.g. encoder.prompt.embedding.weight [P, L*2*D], heads.sst2.classifier.*
    out/checkpoint.json          method, P, its options, labels, the backbone it was trained on,
                                 the weights file it goes with and that file's sha256

The frozen backbone is not saved: loading rebuilds it from the pretrained folder and checks it is
the same backbone (dimensions, a digest of every weight and of the tokenizer: core/fingerprint.py),
saying what differs if not. allow_other_backbone=True (--allow-other-backbone) loads it anyway,
with a warning, and the returned meta says what differed ("other_backbone").

A save replaces the pair as a whole (atomic.py): killed at any moment, the folder holds the old
checkpoint or the new one. While a save replaces an older checkpoint, the new weights pass
through a fresh name (checkpoint-<hex>.safetensors) that checkpoint.json names; only a save
killed at that moment leaves them there, and the next save moves them back. The folder is
locked while saving (lock.py).
"""
from __future__ import annotations

import hashlib
import os
import secrets
import warnings
from pathlib import Path

import torch

from .. import catalog
from ..core.fingerprint import differences, is_legacy
from ..errors import InputError, MissingFileError, NonFiniteError
from ..validate import check_finite, read_json, require
from . import atomic
from .lock import locked

FORMAT = "minigpt_ptv2-checkpoint"
# Version 2: backbone matrices are stored [in, out] with Q/K/V fused (only `full` checkpoints hold
# backbone tensors). Version 1 stored them as nn.Linear [out, in]; those are converted on load.
VERSION = 2
STEM = "checkpoint"
WEIGHTS, META = "checkpoint.safetensors", "checkpoint.json"  # WEIGHTS: unless META names another file
FIELDS = {"format": "str", "task": "str", "method": "str", "P": "int", "method_kwargs": "dict",
          "backbone": "dict"}
OPTIONAL = {"version": "int", "labels": "list", "positions": "str", "weights": "str",
            "weights_sha256": "str", "train": "dict", "kept": "dict", "run": "str"}
# the backbone record (core/fingerprint.py); an older one has "fingerprint" for "weights", no H_kv or d
BACKBONE = {"model_type": "str", "D": "positive int", "L": "positive int", "H": "positive int",
            "vocab_size": "positive int"}
BACKBONE_OPTIONAL = {"H_kv": "positive int", "d": "positive int", "dtype": "str", "weights": "str",
                     "tokenizer": "str", "fingerprint": "str", "tensors": "dict"}


def backbone_of(model):
    """The backbone of a trained model, as the model says (TaskModel.backbone: its encoder;
    LMTaskModel.backbone: its decoder)."""
    return model.backbone()


def backbone_info(model) -> dict:
    """What identifies the backbone: its dimensions and digests of its weights and tokenizer (the
    model says, core/fingerprint.py)."""
    return model.fingerprint()


class BackboneWarning(UserWarning):
    """A checkpoint used on a backbone it cannot be fully checked against, or on another one on purpose."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _atomic_write(path: Path, write) -> None:
    """One file replaced whole: `write(tmp)` fills a uniquely named temporary file, which is
    fsync'd and renamed over `path` (interop/adapter_files.py writes adapter files this way)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(8)}.partial")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        atomic.fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def prepare_folder(out_dir) -> Path:
    """Create the output folder, refusing a path that is (or is under) a file."""
    out = Path(out_dir)
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            where = "is" if p == out else f"is under {p}, which is"
            raise InputError(f"output folder {out} {where} a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_checkpoint(model, out_dir, *, task: str, method: str, P: int, method_kwargs: dict | None = None,
                    labels=(), extra: dict | None = None) -> dict:
    """Save the trainable parameters of a TaskModel; returns {'path', 'bytes', 'tensors', 'weights'}.
    Refuses non-finite values: a checkpoint of a run that blew up would replace a good one."""
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    if not tensors:
        raise InputError("nothing to save: the model has no trainable parameters")
    bad = [n for n, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteError(f"refusing to save to {out_dir}: {', '.join(bad)} hold NaN or infinite values "
                             f"(the run diverged); nothing was written")
    prompt = backbone_of(model).prompt
    meta = {"format": FORMAT, "version": VERSION, "task": task, "method": method, "P": P,
            "method_kwargs": method_kwargs or {}, "positions": prompt.positions if prompt is not None else "real",
            "labels": list(labels), **(extra or {})}
    # a run passes the backbone it started from ("full" changes the weights); last in the file, as
    # it is long (a digest per tensor) and the least read
    meta["backbone"] = meta.pop("backbone", None) or backbone_info(backbone_of(model))
    out = prepare_folder(out_dir)
    with locked(out, "save_checkpoint"):
        written = atomic.commit(out, STEM, tensors, meta, metadata={"format": FORMAT})
    return {"path": str(out), "bytes": written["bytes"], "tensors": len(tensors),
            "weights": written["meta"]["weights"]}


def read_meta(ckpt_dir) -> dict:
    """checkpoint.json, every field checked (kind, version, known task / method / positions)."""
    path = Path(ckpt_dir) / META
    if not path.is_file():
        raise MissingFileError(f"{ckpt_dir} is not a minigpt_ptv2 checkpoint: no {META} in it")
    meta = read_json(path)
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a {FORMAT} file (format={meta.get('format')!r})")
    require(meta, path, FIELDS, OPTIONAL)
    if meta.get("version", 1) not in (1, VERSION):
        raise InputError(f"{ckpt_dir} is checkpoint version {meta['version']}; this minigpt_ptv2 reads "
                         f"versions 1 and {VERSION}")
    if meta["P"] < 0:
        raise InputError(f"{path}: field 'P' must be >= 0, got {meta['P']}")
    for field, known in (("task", catalog.TRAIN_TASKS), ("method", catalog.TRAIN_METHODS),
                         ("positions", catalog.POSITIONS)):
        if field in meta and meta[field] not in known:
            raise InputError(f"{path}: field {field!r} is {meta[field]!r}, not one of {sorted(known)}")
    _check_agreement(meta, path)
    atomic.named_weights(Path(ckpt_dir), STEM, meta)  # a plain file name of ours, never a path
    return meta


def _check_agreement(meta: dict, path: Path) -> None:
    """What the kinds alone leave open: options the method takes, one position policy, labels that
    fit the task's head, a backbone record of the kinds fingerprint.py writes (a malformed one was
    read as another backbone)."""
    from ..prompts.registry import METHODS, check_options
    from .tasks import TASKS
    kwargs = meta["method_kwargs"]
    if meta["method"] in METHODS:
        check_options(meta["method"], kwargs, f"{path}: method_kwargs")
    if kwargs.get("positions", meta.get("positions", "real")) != meta.get("positions", "real"):
        raise InputError(f"{path}: method_kwargs says positions {kwargs['positions']!r} but field 'positions' "
                         f"says {meta.get('positions', 'real')!r}{'' if 'positions' in meta else ' (absent: real)'}: "
                         f"make them agree")
    labels = meta.get("labels") or []
    want = len(TASKS[meta["task"]].labels) if meta["task"] in TASKS else 0
    if not all(isinstance(x, str) and x for x in labels) or (labels and len(labels) != want):
        raise InputError(f"{path}: field 'labels' must be {want} names (strings), one per class of the "
                         f"{meta['task']} head, or []; got {str(labels)[:60]}")
    backbone = {k: v for k, v in meta["backbone"].items() if not (k in ("tokenizer", "tensors") and not v)}
    require(backbone, f"{path}, backbone", BACKBONE, BACKBONE_OPTIONAL)  # tokenizer null: the folder had none


def read_checkpoint(ckpt_dir) -> tuple[dict, dict]:
    """(meta, tensors) of a checkpoint folder without building a model: the weights file that
    checkpoint.json names, checked against its sha256 and for NaN or infinite values."""
    meta = read_meta(ckpt_dir)
    meta, tensors = atomic.read(ckpt_dir, STEM, meta)
    check_finite(tensors, Path(ckpt_dir) / meta.get("weights", WEIGHTS))
    return meta, tensors


def check_backbone(saved: dict, encoder, carries_backbone: bool = False, source=None,
                   allow_other: bool = False) -> str | None:
    """Refuse a backbone other than the one the checkpoint was trained on, saying what differs
    (core/fingerprint.py `differences`). A `full` checkpoint carries every backbone tensor
    itself, so only the dimensions and the tokenizer have to agree. source: the checkpoint
    folder, named in the message (with several checkpoints, which one). allow_other: warn
    instead, and return what differs (None when nothing does)."""
    diff = differences(saved, encoder, carries_backbone)
    which = f"checkpoint {source}" if source is not None else "checkpoint"
    if not diff:
        if is_legacy(saved):
            warnings.warn(f"{which} records an older backbone fingerprint (the embedding table's first 16 rows): "
                          f"those rows and the dimensions match; its other weights and its tokenizer cannot be "
                          f"checked", BackboneWarning, stacklevel=2)
        return None
    return _other_backbone(which, "; ".join(diff), allow_other)


def _other_backbone(which: str, text: str, allow_other: bool) -> str:
    """Refuse `which` (a checkpoint, a run) on another backbone, saying what differs (`text`);
    with allow_other, warn and return `text` instead."""
    if not allow_other:
        raise InputError(f"{which} was trained on a different backbone ({text}): use the model it was trained "
                         f"on, or pass --allow-other-backbone (allow_other_backbone=True) to use it anyway")
    warnings.warn(f"{which} was trained on a different backbone ({text}); using it anyway "
                  f"(--allow-other-backbone)", BackboneWarning, stacklevel=3)
    return text


def backbone_id(info: dict) -> str:
    """A short id of a recorded backbone, kept in a run's resume state: the first digits of its
    weights' and tokenizer's digests (an older record: its fingerprint)."""
    if is_legacy(info):
        return info.get("fingerprint")
    return f"{info['weights'][:16]}/{(info.get('tokenizer') or '-')[:16]}"


def check_resumed_backbone(saved_id, out, backbone, allow_other: bool = False) -> str | None:
    """Refuse to resume the run in `out` on another backbone than the one it started on, naming
    what differs: the checkpoint it has kept records that backbone in full. Returns what differs
    when allow_other (with a warning), else None."""
    now = backbone_id(backbone_info(backbone))
    if saved_id == now:
        return None
    if (Path(out) / META).is_file():
        return check_backbone(read_meta(out)["backbone"], backbone, source=out, allow_other=allow_other)
    # no checkpoint kept yet to describe the backbone in full: only the ids can be compared
    return _other_backbone(f"the run in {out}", f"backbone {saved_id} vs model {now}", allow_other)


def load_checkpoint(ckpt_dir, model_dir=None, device="cpu", encoder=None, allow_other_backbone: bool = False):
    """Rebuild the TaskModel a checkpoint was saved from: pretrained backbone + prompt + head.

    encoder: a backbone already loaded (several checkpoints over one backbone, training/mixed.py),
    checked like a fresh one; its attached prompt is replaced by the checkpoint's.
    allow_other_backbone: load it onto a backbone other than its own (check_backbone) with a
    warning; the returned meta's "other_backbone" then says what differs."""
    from ..models import load_pretrained
    from ..pretrained import default_model_dir
    from .tasks import build_task_model
    meta, tensors = read_checkpoint(ckpt_dir)  # before the (slow) backbone load: fail fast
    if meta["task"] == catalog.LM_TASK:
        raise InputError(f"{ckpt_dir} holds a prompt for a decoder (train lm), not a task model: "
                         f"`generate {ckpt_dir} TEXT` runs it (training/lm.py load_lm_checkpoint)")
    if meta.get("version", 1) == 1:
        from ..models.bert import legacy_v1_state
        tensors = legacy_v1_state(tensors, str(Path(ckpt_dir) / meta.get("weights", WEIGHTS)))
    if encoder is None:
        encoder = load_pretrained(model_dir or default_model_dir(), expect="bert")
    other = check_backbone(meta["backbone"], encoder, carries_backbone=meta["method"] == "full", source=ckpt_dir,
                           allow_other=allow_other_backbone)
    if other is not None:
        meta["other_backbone"] = other
    kw = {**meta["method_kwargs"], "positions": meta.get("positions", "real")} \
        if meta["method"] not in ("head-only", "full") else {}
    model = build_task_model(meta["task"], meta["method"], meta["P"], encoder=encoder, **kw)
    own = dict(model.named_parameters())
    missing = sorted(n for n, p in own.items() if p.requires_grad and n not in tensors)
    unexpected = sorted(n for n in tensors if n not in own)
    if missing or unexpected:
        raise InputError(f"checkpoint tensors do not match the model: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for n, t in tensors.items():
            if t.shape != own[n].shape:
                raise InputError(f"shape mismatch for {n}: checkpoint {list(t.shape)} vs model {list(own[n].shape)}")
            own[n].copy_(t)
    return model.to(device).eval(), meta
