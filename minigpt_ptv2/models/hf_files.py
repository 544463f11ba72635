"""HuggingFace-format model folders on disk: read them safely, write them atomically.

Knows no architecture: the converters in bert.py, gpt2.py and llama.py say what the tensors mean.

What a folder holds is checked before it is used, because a wrong number loaded here would
spoil every result after it without a sign:
- every tensor read must be finite (a NaN weight gives NaN logits, and argmax of NaN is 0: a
  plausible-looking accuracy);
- every file read must stay inside the folder: a sharded index naming `../x.safetensors`, an
  absolute path, or a symlink that leads out of the folder is refused. The one exception is the
  HuggingFace hub cache, whose `snapshots/<rev>/` files are symlinks into the same entry's `blobs/`;
- the sharded index must be an object {"weight_map": {tensor name: file name}} and each shard
  must hold exactly the tensors the index assigns to it (a tensor in two shards would otherwise
  be taken from whichever was read last).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from ..core.config import TOKEN_IDS, DecoderConfig, check_fields
from ..errors import InputError, MissingFileError
from ..validate import check_finite, read_json, require

def inside(model_dir: Path, name: str, source) -> Path:
    """model_dir / name, refused if it resolves outside model_dir (see the module docstring).
    `source` is the file that named it, for the message."""
    root, target = Path(model_dir).resolve(), (Path(model_dir) / name).resolve()
    allowed = [root]
    if root.parent.name == "snapshots":  # HF hub cache: models--x/snapshots/<rev>/f -> ../../blobs/<hash>
        allowed.append(root.parent.parent / "blobs")
    if not any(target == a or a in target.parents for a in allowed):
        raise InputError(f"{source}: {name!r} leads outside the model folder {model_dir} (to {target}); "
                         f"a model folder may only refer to files inside it")
    return Path(model_dir) / name


def _read_weights_file(path: Path) -> dict:
    """One weights file -> {name: tensor}, checked: a dict of named tensors, all finite."""
    from safetensors.torch import load_file
    try:
        if path.suffix == ".bin":
            sd = torch.load(path, map_location="cpu", weights_only=True)
        else:
            sd = load_file(str(path))
    except Exception as e:  # corrupted, truncated, or a pickle where safetensors was expected
        raise InputError(f"could not read weights from {path}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''} (corrupted, truncated, or not "
                         f"the format its name says?)") from None
    if not isinstance(sd, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        raise InputError(f"{path} does not hold a state dict (named tensors): got {type(sd).__name__}")
    check_finite(sd, path)
    return sd


def _read_sharded(model_dir: Path, index_path: Path) -> dict:
    index = read_json(index_path)
    require(index, index_path, {"weight_map": "dict"})
    weight_map = index["weight_map"]
    for key, file in weight_map.items():
        if not isinstance(file, str):
            raise InputError(f"{index_path}: weight_map[{key!r}] must be a file name (a string), got "
                             f"{file!r} ({type(file).__name__})")
    if not weight_map:
        raise InputError(f"{index_path}: weight_map is empty, it names no weights")
    shards = {file: inside(model_dir, file, index_path) for file in sorted(set(weight_map.values()))}
    for file, path in shards.items():  # all checked before the first (slow) read
        if not path.is_file():
            raise MissingFileError(f"{index_path} names {file!r}, which is not in {model_dir}")
    sd = {}
    for file, path in shards.items():
        part = _read_weights_file(path)
        listed = {k for k, f in weight_map.items() if f == file}
        if set(part) != listed:
            raise InputError(f"{path} does not hold what {index_path.name} assigns to it: unlisted "
                             f"{sorted(set(part) - listed)[:5]}, absent {sorted(listed - set(part))[:5]}")
        sd.update(part)
    return sd


def read_state_dict(model_dir: Path) -> dict:
    """Read model.safetensors (or a sharded index), else pytorch_model.bin with weights_only=True."""
    model_dir = Path(model_dir)
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if (model_dir / name).exists():
            path = inside(model_dir, name, model_dir)
            return _read_sharded(model_dir, path) if name.endswith(".json") else _read_weights_file(path)
    raise MissingFileError(f"no weights in {model_dir}: expected model.safetensors, "
                           f"model.safetensors.index.json or pytorch_model.bin")


def read_config(model_dir: Path) -> dict:
    """config.json of a model folder, read with errors that name the file, line and field."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise MissingFileError(f"{model_dir} is not a model folder: no config.json in it")
    return read_json(inside(model_dir, "config.json", model_dir))


# The files the tokenizer readers read (data/tokenize.py, data/bpe.py): tokenizer.json where it is
# there, else the older ones (vocab.txt and its do_lower_case; GPT-2's vocab.json and merges.txt).
TOKENIZER_FILE, OLDER_TOKENIZER_FILES = "tokenizer.json", ("vocab.txt", "tokenizer_config.json", "vocab.json",
                                                           "merges.txt")


def tokenizer_digest(model_dir) -> str | None:
    """sha256 of the tokenizer files a model folder holds (names and contents), None if it has none:
    part of the backbone's fingerprint (core/fingerprint.py)."""
    model_dir = Path(model_dir)
    names = [TOKENIZER_FILE] if (model_dir / TOKENIZER_FILE).is_file() else [
        n for n in OLDER_TOKENIZER_FILES if (model_dir / n).is_file()]
    if not names:
        return None
    h = hashlib.sha256()
    for name in names:
        h.update(f"{name}\n".encode())
        h.update(hashlib.sha256((model_dir / name).read_bytes()).digest())
    return h.hexdigest()


GENERATION_CONFIG = "generation_config.json"


def read_generation_ids(model_dir: Path) -> dict:
    """bos / eos / pad of a generation_config.json beside config.json: transformers' generate reads
    these instead of config.json's, a missing one then being None. {} when there is no such file."""
    path = Path(model_dir) / GENERATION_CONFIG
    if not path.is_file():
        return {}
    ids = {k: read_json(inside(model_dir, GENERATION_CONFIG, model_dir)).get(k) for k in TOKEN_IDS}
    check_fields(DecoderConfig, ids, str(path))
    return ids


def write_folder(out_dir, config: dict, tensors: dict, generation: dict | None = None) -> Path:
    """Write config.json + model.safetensors (+ generation_config.json, given `generation`) into
    out_dir, each file whole or not at all (written under a temporary name in the folder, then
    renamed over the old one)."""
    from safetensors.torch import save_file
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a folder: a model is saved as a folder (config.json, "
                         f"model.safetensors); name a new or existing folder")
    out.mkdir(parents=True, exist_ok=True)
    files = [("model.safetensors", lambda p: save_file(tensors, p, metadata={"format": "pt"})),
             ("config.json", lambda p: Path(p).write_text(json.dumps(config, indent=2) + "\n"))]
    if generation is not None:
        files.append((GENERATION_CONFIG, lambda p: Path(p).write_text(json.dumps(generation, indent=2) + "\n")))
    for name, write in files:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, out / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out

