"""Checks for what comes from files: JSON fields of the right type, tensors that are finite.

A file is the one input a user cannot see at a glance, so its errors must say exactly where to
look: the file, the field (or tensor) and what was expected, e.g.

    runs/x/checkpoint.json: field 'P' must be a positive int, got true (bool)
    adapter_model.safetensors: tensor 'prompt_embeddings' holds 3 NaN values (of 18432)
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import InputError, InputTypeError, MissingFileError, NonFiniteError

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


def token_id_list(ids, source: str = "ids") -> list[int]:
    """Token ids to decode (a list, a tuple or a 1-D tensor of ints >= 0) as a list of ints, each
    refused by position otherwise: a float was truncated, -1 read as the last token, a string split
    into characters. An id past the vocabulary is left to the tokenizer, which skips it as the
    tokenizers library does (a model's embedding table may hold more rows than its tokenizer ids)."""
    import numbers
    if isinstance(ids, (str, bytes)) or not (isinstance(ids, (list, tuple)) or hasattr(ids, "tolist")):
        raise InputTypeError(f"{source} must be a list or a 1-D tensor of token ids, got {type(ids).__name__}")
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    if not isinstance(ids, list):  # a 0-d tensor
        raise InputTypeError(f"{source} must be a list or a 1-D tensor of token ids, got a single id {ids!r}")
    for n, i in enumerate(ids):
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < 2 ** 32:
            raise InputError(f"{source}[{n}] must be a token id (an int in [0, 2**32)), got {i!r} "
                             f"({type(i).__name__})")
    return [int(i) for i in ids]


def check_device_name(device, name: str = "device") -> None:
    """A device a model can be moved to here: cpu, or cuda where CUDA is available; refused by
    `name` (the CLI's --device, load_pretrained's device) otherwise."""
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"{name} {device!r} is not a device (try cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{name} {device}: CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"{name} {device}: only cpu and cuda are supported")
