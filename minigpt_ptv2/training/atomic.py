"""A JSON file and the safetensors file it names, replaced together or not at all.

A save must never leave a folder holding neither the old pair nor the new one, nor a mix of
the two, whatever moment the process is killed at. Two files cannot be renamed at once, so
only one of them is the commit point:

    1. the tensors go to a weights file no JSON names yet, and are fsync'd
       (STEM.safetensors if the current JSON does not name it, else STEM-<random>.safetensors);
    2. the new JSON, naming that file and its sha256, is written to STEM.json.<random>.partial,
       fsync'd, and renamed over STEM.json with one os.replace: the commit point;
    3. the folder is fsync'd, then every weights file and .partial of ours that the JSON does
       not name is removed (the old weights, leftovers of a save that was killed);
    4. if the weights went to STEM-<random>.safetensors, steps 1-3 run once more with the same
       bytes: STEM.safetensors is free now, and a folder at rest holds the plain pair.

Killed before 2's rename: STEM.json still names the old, untouched weights; the new files are
unnamed leftovers that readers ignore and the next save removes. Killed after it: the new pair
is complete. A JSON that names no weights file (written before this scheme) means
STEM.safetensors. Readers check the sha256, so a pair mixed by hand is refused, not loaded.
An exception that arrives just after the rename (Ctrl-C lands between two instructions) finds
the new pair committed and leaves it whole: it never removes the weights the JSON now names.

A write the machine refuses (a full disk, a file-size limit) removes the new files and raises a
WriteError naming the folder and the cause: the old pair is untouched, as when killed.

Call these with the folder locked (lock.py): cleaning up assumes no other writer is mid-save.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from pathlib import Path

from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from ..errors import InputError, MissingFileError, WriteError
from ..faults import cause


def weights_names(stem: str) -> re.Pattern:
    """The weights file names a STEM.json may name: STEM.safetensors or STEM-<hex>.safetensors."""
    return re.compile(re.escape(stem) + r"(-[0-9a-f]{8,32})?\.safetensors")


def _leftover(stem: str) -> re.Pattern:
    """Files a killed save of ours may leave behind (including this package's older names)."""
    s = re.escape(stem)
    return re.compile(rf"{s}(-[0-9a-f]{{8,32}})?\.safetensors|{s}\.json(\.[0-9a-f-]+)?\.partial|"
                      rf"{s}\.safetensors\.partial")


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to a new file and fsync it (os.write, so a test can cut it half-way)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def named_weights(folder: Path, stem: str, meta: dict) -> str:
    """The weights file name a JSON names, refused unless it is a plain name of ours (no paths)."""
    name = meta.get("weights", f"{stem}.safetensors")
    if not isinstance(name, str) or not weights_names(stem).fullmatch(name):
        raise InputError(f"{folder / (stem + '.json')}: field 'weights' must name a file "
                         f"{stem}[-<hex>].safetensors in the same folder, got {json.dumps(name)[:60]}")
    return name


def _current(folder: Path, stem: str) -> str | None:
    """The weights name the committed JSON points to, or None if there is no readable one."""
    try:
        return named_weights(folder, stem, json.loads((folder / f"{stem}.json").read_text()))
    except (OSError, ValueError, AttributeError):
        return None


def commit(folder, stem: str, tensors: dict, meta: dict, metadata: dict | None = None,
           plain: bool = True) -> dict:
    """Save `tensors` and `meta` as STEM.json + the weights file it names; returns the written
    meta (with 'weights' and 'weights_sha256') and 'bytes', the size of the pair. plain=False
    skips step 4 (the weights may then stay under a fresh name)."""
    data = save_bytes(tensors, metadata=metadata)
    written = _commit_once(Path(folder), stem, data, meta)
    if plain and written["meta"]["weights"] != f"{stem}.safetensors":
        written = _commit_once(Path(folder), stem, data, meta)
    return written


def _commit_once(folder: Path, stem: str, data: bytes, meta: dict) -> dict:
    token = secrets.token_hex(8)
    current = _current(folder, stem)
    name = f"{stem}.safetensors" if current != f"{stem}.safetensors" else f"{stem}-{token}.safetensors"
    meta = {**meta, "weights": name, "weights_sha256": hashlib.sha256(data).hexdigest()}
    text = json.dumps(meta, indent=2).encode()
    partial = folder / f"{stem}.json.{token}.partial"
    try:
        write_file(folder / name, data)
        write_file(partial, text)
        os.replace(partial, folder / f"{stem}.json")  # the commit point
    except BaseException as e:
        if _committed(folder, stem, meta):  # Ctrl-C landed just after the rename: the new pair is whole
            fsync_dir(folder)
            clean(folder, stem, keep=name)
            raise
        for path in (partial, folder / name):
            try:
                os.unlink(path)
            except OSError:
                pass
        why = cause(e)
        if why is None:
            raise
        kept = (f"the {stem}.json and weights already there are intact" if current is not None
                else "nothing was written")
        raise WriteError(f"could not save {stem}.json in {folder}: {why}. Nothing was replaced: {kept}", why) from None
    fsync_dir(folder)
    clean(folder, stem, keep=name)
    return {"meta": meta, "bytes": len(data) + len(text)}


def _committed(folder: Path, stem: str, meta: dict) -> bool:
    """Has STEM.json become `meta` (its weights name and sha256)? An exception (Ctrl-C: Python
    raises it between two instructions) can arrive after os.replace has renamed the new JSON into
    place but before the block around it ends: the weights it names must then stay."""
    try:
        now = json.loads((folder / f"{stem}.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(now, dict) and all(now.get(k) == meta[k] for k in ("weights", "weights_sha256"))


def clean(folder: Path, stem: str, keep: str | None) -> None:
    """Remove our weights files and .partial leftovers other than `keep` (best effort: a file
    that cannot be removed now is removed by a later save)."""
    pattern = _leftover(stem)
    for path in folder.iterdir():
        if path.name != keep and pattern.fullmatch(path.name):
            try:
                os.unlink(path)
            except OSError:
                pass


def read(folder, stem: str, meta: dict | None = None) -> tuple[dict, dict]:
    """(meta, tensors) of a committed pair, the weights checked against the sha256 the JSON
    records (pass `meta` if STEM.json was read and checked already). The bytes are read once,
    so the file checked is the file loaded."""
    meta, data, path = read_bytes(folder, stem, meta)
    try:
        tensors = load_bytes(data)
    except Exception as e:
        raise InputError(f"could not read {path}: {type(e).__name__} (corrupted or truncated?)") from None
    return meta, tensors


def read_bytes(folder, stem: str, meta: dict | None = None) -> tuple[dict, bytes, Path]:
    """(meta, the weights file's bytes, its path), the bytes checked against the JSON's sha256."""
    from ..validate import read_json
    folder = Path(folder)
    meta = read_json(folder / f"{stem}.json") if meta is None else meta
    path = folder / named_weights(folder, stem, meta)
    if not path.is_file():
        raise MissingFileError(f"{folder} has {stem}.json but not the {path.name} it names")
    data = path.read_bytes()
    if "weights_sha256" in meta and hashlib.sha256(data).hexdigest() != meta["weights_sha256"]:
        raise InputError(f"{path} does not match {stem}.json (sha256 differs): the file was modified, "
                         f"corrupted, or the pair comes from two different saves")
    return meta, data, path
