"""Checks for what comes from files: JSON fields of the right type, tensors that are finite.

A file is the one input a user cannot see at a glance, so its errors must say exactly where to
look: the file, the field (or tensor) and what was expected, e.g.

    runs/x/checkpoint.json: field 'P' must be a positive int, got true (bool)
    adapter_model.safetensors: tensor 'prompt_embeddings' holds 3 NaN values (of 18432)
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import InputError, MissingFileError, NonFiniteError

# name -> (accepted Python types, description). bool is excluded from int on purpose: JSON's
# `true` is not a length.
KINDS = {
    "int": ((int,), "an int"),
    "positive int": ((int,), "a positive int"),
    "str": ((str,), "a string"),
    "bool": ((bool,), "true or false"),
    "dict": ((dict,), "an object {...}"),
    "list": ((list,), "a list [...]"),
    "number": ((int, float), "a number"),
}


def _json_repr(value) -> str:
    return f"{json.dumps(value)[:60]} ({type(value).__name__})"


def read_json(path: Path) -> dict:
    """A small JSON object from a file, with errors that name the file, the line and the column."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path} must hold a JSON object {{...}}, got {type(obj).__name__}")
    return obj


def require(obj: dict, source, fields: dict, optional: dict | None = None) -> dict:
    """Check `obj[name]` has the kind `fields[name]` (see KINDS) for every required field, and
    for each optional field that is present; returns obj. `source` names the file in errors."""
    for name, kind in {**fields, **(optional or {})}.items():
        if name not in obj:
            if name in fields:
                raise InputError(f"{source}: missing field {name!r} ({KINDS[kind][1]})")
            continue
        types, desc = KINDS[kind]
        value = obj[name]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if ok and kind == "positive int":
            ok = value > 0
        if not ok:
            raise InputError(f"{source}: field {name!r} must be {desc}, got {_json_repr(value)}")
    return obj


def check_finite(tensors: dict, source) -> None:
    """Refuse NaN or infinite values in any floating tensor, naming the tensor and the file."""
    import torch
    for name, t in tensors.items():
        if not torch.is_tensor(t) or not t.is_floating_point():
            continue
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            n_nan = int(torch.isnan(t).sum())
            raise NonFiniteError(f"{source}: tensor {name!r} holds {n_nan} NaN and "
                                 f"{int(bad.sum()) - n_nan} infinite values (of {t.numel()}); a file "
                                 f"written by a run that diverged, or corrupted")
