"""Tiny checkpoints: only what was trained (prompt + head) as safetensors, plus a small JSON.

    out/checkpoint.safetensors   e.g. encoder.prompt.embedding.weight [P, L*2*D], heads.sst2.classifier.*
    out/checkpoint.json          method, P, its options, labels, and the backbone it was trained on

The frozen backbone is not saved: loading rebuilds it from the pretrained folder and checks it is
the same backbone (dimensions and a fingerprint of its weights), saying what differs if not.
Files are written to a temporary name and renamed, so a failure never leaves half a checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import InputError, MissingFileError

FORMAT = "minigpt_ptv2-checkpoint"
# Version 2: backbone matrices are stored [in, out] with Q/K/V fused (only `full` checkpoints hold
# backbone tensors). Version 1 stored them as nn.Linear [out, in]; those are converted on load.
VERSION = 2
WEIGHTS, META = "checkpoint.safetensors", "checkpoint.json"


def backbone_info(encoder) -> dict:
    """Dimensions plus a fingerprint of the word embeddings: enough to tell two backbones apart."""
    w = encoder.embeddings.word_embeddings.weight.detach()[:16].float().cpu().contiguous()  # [16, D]
    info = {"model_type": encoder.config.model_type, **encoder.config.dims(),
            "vocab_size": encoder.config.vocab_size,
            "fingerprint": hashlib.sha256(w.numpy().tobytes()).hexdigest()[:16]}
    return info


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(model, out_dir, *, task: str, method: str, P: int, method_kwargs: dict | None = None,
                    labels=(), extra: dict | None = None) -> dict:
    """Save the trainable parameters of a TaskModel; returns {'path', 'bytes', 'tensors'}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    if not tensors:
        raise InputError("nothing to save: the model has no trainable parameters")
    prompt = model.encoder.prompt
    meta = {"format": FORMAT, "version": VERSION, "task": task, "method": method, "P": P,
            "method_kwargs": method_kwargs or {}, "positions": prompt.positions if prompt is not None else "real",
            "labels": list(labels), "backbone": backbone_info(model.encoder), **(extra or {})}
    # Both files are written in full under temporary names before either replaces the old pair;
    # the JSON records the weights' hash, so a pair from two different saves is caught on load.
    w_tmp, m_tmp = out / (WEIGHTS + ".partial"), out / (META + ".partial")
    try:
        save_file(tensors, str(w_tmp), metadata={"format": FORMAT})
        meta["weights_sha256"] = _sha256(w_tmp)
        m_tmp.write_text(json.dumps(meta, indent=2))
        os.replace(w_tmp, out / WEIGHTS)
        os.replace(m_tmp, out / META)
    finally:
        for tmp in (w_tmp, m_tmp):
            if tmp.exists():
                tmp.unlink()
    size = (out / WEIGHTS).stat().st_size + (out / META).stat().st_size
    return {"path": str(out), "bytes": size, "tensors": len(tensors)}


def load_json(path: Path) -> dict:
    """A small JSON file, with an error that names the file and the line when it is broken."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def read_meta(ckpt_dir) -> dict:
    path = Path(ckpt_dir) / META
    if not path.is_file():
        raise MissingFileError(f"{ckpt_dir} is not a minigpt_ptv2 checkpoint: no {META} in it")
    meta = load_json(path)
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a {FORMAT} file (format={meta.get('format')!r})")
    return meta


def check_backbone(saved: dict, encoder, carries_backbone: bool = False) -> None:
    """Refuse a backbone other than the one the checkpoint was trained on. A `full` checkpoint
    carries every backbone tensor itself, so only the dimensions have to agree."""
    now = backbone_info(encoder)
    keys = [k for k in now if not (carries_backbone and k == "fingerprint")]
    diff = [f"{k}: checkpoint {saved.get(k)} vs model {now[k]}" for k in keys if saved.get(k) != now[k]]
    if diff:
        raise InputError("checkpoint was trained on a different backbone (" + "; ".join(diff) + ")")


def load_checkpoint(ckpt_dir, model_dir=None, device="cpu"):
    """Rebuild the TaskModel a checkpoint was saved from: pretrained backbone + prompt + head."""
    from ..encoder import Encoder
    from ..pretrained import default_model_dir
    from .tasks import build_task_model
    meta = read_meta(ckpt_dir)
    weights = Path(ckpt_dir) / WEIGHTS  # checked before the (slow) backbone load: fail fast
    if not weights.is_file():
        raise MissingFileError(f"{ckpt_dir} has {META} but no {WEIGHTS}")
    if "weights_sha256" in meta and _sha256(weights) != meta["weights_sha256"]:
        raise InputError(f"{weights} does not match {META} (sha256 differs): the file was modified, "
                         f"corrupted, or the pair comes from two different saves")
    try:
        tensors = load_file(str(weights))
    except Exception as e:
        raise InputError(f"could not read {weights}: {type(e).__name__} "
                         f"(corrupted or truncated?)") from None
    if meta.get("version", 1) == 1:
        from ..loading import from_nn_linear_layout
        tensors = from_nn_linear_layout(tensors, str(weights))
    elif meta["version"] != VERSION:
        raise InputError(f"{ckpt_dir} is checkpoint version {meta['version']}; this minigpt_ptv2 reads "
                         f"versions 1 and {VERSION}")
    encoder = Encoder.from_pretrained(model_dir or default_model_dir())
    check_backbone(meta["backbone"], encoder, carries_backbone=meta["method"] == "full")
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
