"""What identifies a backbone, so that a checkpoint is never served on another one by accident.

    model.fingerprint() ->
        {"model_type": "bert", "D": 384, "L": 6, "H": 12, "H_kv": 12, "d": 32, "vocab_size": 30522,
         "dtype": "float32",
         "weights": "3f2a...",                                   # sha256 over every tensor, 64 hex digits
         "tensors": {"embeddings.word_embeddings.weight": "9c41...", ...},   # 16 hex digits each
         "tokenizer": "b7e0..." or None}                         # the tokenizer files beside the weights

Every tensor of the backbone counts: its state_dict without the attached prompt, exactly what
load_pretrained fills and save_pretrained writes, each hashed with its name, dtype and shape. A
fine-tuned, merged or otherwise changed copy differs in at least one tensor, and the per-tensor
digests say which one. The tokenizer counts too (load_pretrained records a digest of the files
the tokenizer readers read): the same weights read through another vocabulary see other tokens.

Cost: sha256 reads each byte once, about 0.1 s for the shipped MiniLM's 91 MB. sha256 rather
than blake2b: hashlib's sha256 runs on the processor's SHA instructions, where they exist, and
measured 1.8x faster than blake2b here (benchmarks/README.md, "backbone fingerprint").

The digest is computed the first time it is asked for and kept. It is computed again when a
tensor has changed since: replaced (another storage, dtype or device) or edited in place, which
torch counts in each tensor's `_version` (an optimizer step, copy_, load_state_dict, add_ under
no_grad). An edit torch does not count, through `.data` or through a numpy array sharing the
memory, goes unseen until then: `fingerprint(recompute=True)` hashes anew whatever happened.

Checkpoints written before every weight was hashed carry a "fingerprint" of the first 16 rows of
the embedding table instead (`legacy_fingerprint`): they are still checked that far.
"""
from __future__ import annotations

import hashlib

import torch

DIMS = ("model_type", "D", "L", "H", "H_kv", "d", "vocab_size")


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 of one tensor: its dtype, its shape and its bytes (64 hex digits)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype} {list(t.shape)}\n".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())  # the bytes as they are in memory, no copy
    return h.hexdigest()


def weights_digest(tensors: dict) -> tuple[str, dict]:
    """(sha256 over all, {name: its first 16 hex digits}) of named tensors, in name order: the
    short per-tensor digests only name what differs, the whole one decides."""
    each = {name: tensor_digest(tensors[name]) for name in sorted(tensors)}
    whole = hashlib.sha256("".join(f"{n} {d}\n" for n, d in each.items()).encode()).hexdigest()
    return whole, {n: d[:16] for n, d in each.items()}


def _state(model) -> dict:
    """The backbone's tensors: its state_dict without the attached prompt."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("prompt.")}


def _cache_key(tensors: dict) -> tuple:
    """What changes when a tensor is replaced or edited in place (see the module docstring)."""
    return tuple((n, t.data_ptr(), t._version, t.dtype, tuple(t.shape), str(t.device))
                 for n, t in sorted(tensors.items()))


def fingerprint(model, recompute: bool = False) -> dict:
    """The model's fingerprint (module docstring), from its cache while no tensor has changed."""
    tensors = _state(model)
    key = _cache_key(tensors)
    cached = model.__dict__.get("_fingerprint_cache")
    if recompute or cached is None or cached[0] != key:
        whole, each = weights_digest(tensors)
        dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()})
        cached = (key, {"dtype": "/".join(dtypes), "weights": whole, "tensors": each})
        model.__dict__["_fingerprint_cache"] = cached
    cfg = model.config
    dtype, weights, tensors = cached[1]["dtype"], cached[1]["weights"], cached[1]["tensors"]
    return {"model_type": cfg.model_type, **cfg.dims(), "vocab_size": cfg.vocab_size, "dtype": dtype,
            "weights": weights, "tokenizer": model.tokenizer_digest, "tensors": tensors}


def legacy_fingerprint(model) -> str:
    """The fingerprint older checkpoints carry: sha256 of the embedding table's first 16 rows."""
    w = model.input_embeddings().weight.detach()[:16].float().cpu().contiguous()  # [16, D]
    return hashlib.sha256(w.numpy().tobytes()).hexdigest()[:16]


def is_legacy(saved: dict) -> bool:
    """A fingerprint written before every weight was hashed (no "weights" digest)."""
    return "weights" not in saved


def differences(saved: dict, model, carries_backbone: bool = False) -> list[str]:
    """What differs between the backbone a checkpoint recorded (`saved`) and `model`, one phrase
    each: dimensions, dtype, weights (how many tensors, and the first), tokenizer. A checkpoint
    that carries the backbone's tensors itself (`full`) is held to the dimensions and tokenizer."""
    now = fingerprint(model)
    saved = {"H_kv": saved.get("H"), **saved}  # written before H_kv was recorded: H_kv = H then
    diff = [f"{k}: checkpoint {saved.get(k)} vs model {now[k]}" for k in DIMS if saved.get(k) != now[k]]
    if diff:
        return diff  # other dimensions: every tensor differs, nothing more to say
    if is_legacy(saved):
        if not carries_backbone and saved.get("fingerprint") != legacy_fingerprint(model):
            diff.append(f"embedding table: checkpoint {saved.get('fingerprint')} vs model {legacy_fingerprint(model)}")
        return diff
    if not carries_backbone:
        if saved.get("dtype") != now["dtype"]:
            diff.append(f"dtype: checkpoint {saved.get('dtype')} vs model {now['dtype']}")
        if saved["weights"] != now["weights"]:
            diff.append(_weights_phrase(saved.get("tensors") or {}, now["tensors"]))
    if saved.get("tokenizer") and now["tokenizer"] and saved["tokenizer"] != now["tokenizer"]:
        diff.append("tokenizer: its files differ from the ones it was trained with")
    return diff


def _weights_phrase(saved: dict, now: dict) -> str:
    changed = [n for n in now if n in saved and saved[n] != now[n]]
    missing, extra = [n for n in saved if n not in now], [n for n in now if n not in saved]
    parts = [f"{len(changed)} of {len(now)} tensors differ" + (f", first {changed[0]}" if changed else "")]
    parts += [f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")] if missing else []
    parts += [f"new {extra[0]}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")] if extra else []
    return "weights: " + ", ".join(parts)
