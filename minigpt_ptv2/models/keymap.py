"""Checkpoint keys, ours <-> HuggingFace's, from one table per architecture, both ways.

Each architecture lists, for every tensor of ours, where it lives in a HuggingFace state dict:

    Key("layers.0.attn.output.weight", ("encoder.layer.0.attention.output.dense.weight",), transpose=True)
    Key("layers.0.attn.qkv.weight", (q, k, v), transpose=True, sizes=(D, D, D))

transpose: HF's nn.Linear stores a matrix [out, in], our Linear [in, out] (x W + b).
Several HF tensors are fused into one of ours side by side along the output axis (Q | K | V),
and split back by `sizes` on the way out. That is the whole conversion: a short table and two
layout rules, applied by `to_ours` (loading) and `to_hf` (save_pretrained).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..errors import InputError


@dataclass(frozen=True)
class Key:
    ours: str
    hf: tuple  # one HF name, or several fused into ours
    transpose: bool = False  # HF [out, in] <-> ours [in, out] (matrices only)
    sizes: tuple = ()  # output widths of the fused parts (for splitting them back)


def _flip(t: torch.Tensor, transpose: bool) -> torch.Tensor:
    return t.t() if transpose and t.dim() == 2 else t


def to_ours(sd: dict, table: list[Key], strip: tuple = (), ignored: list = (), source: str = "the weights") -> dict:
    """A HF state dict -> ours. Every HF key is used by the table or ignored on purpose (`ignored`:
    (regex, reason) pairs); anything else, or a missing tensor, is an error naming it."""
    plain = {}
    for key, t in sd.items():
        for prefix in strip:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        plain[key] = t
    wanted = {h for k in table for h in k.hf}
    unexpected = sorted(k for k in plain if k not in wanted and not any(re.fullmatch(p, k) for p, _ in ignored))
    missing = sorted(h for h in wanted if h not in plain)
    if missing or unexpected:
        raise InputError(f"{source} do not match the model: missing keys {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
                         f"{' ...' if len(unexpected) > 8 else ''}")
    out = {}
    for k in table:
        parts = [_flip(plain[h], k.transpose) for h in k.hf]
        shapes = {tuple(p.shape[:-1]) for p in parts}
        if len(shapes) > 1:
            raise InputError(f"{source}: {', '.join(k.hf)} cannot be fused into {k.ours}: shapes "
                             + ", ".join(str(list(plain[h].shape)) for h in k.hf))
        out[k.ours] = (torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]).contiguous()
    return out


def to_hf(ours: dict, table: list[Key], prefix: str = "") -> dict:
    """Our state dict -> HF names and layouts (the inverse of `to_ours`)."""
    out = {}
    for k in table:
        t = ours[k.ours]
        parts = t.split(list(k.sizes), dim=-1) if len(k.hf) > 1 else (t,)
        for name, p in zip(k.hf, parts):
            out[prefix + name] = _flip(p, k.transpose).contiguous()
    return out


class AdaptionPromptKeys(NamedTuple):
    """Where PEFT's adaption prompt (LLaMA-Adapter) lives in one architecture's HF model, and how
    PEFT reads it there: each architecture module answers `peft_adaption_prompt(config)` with one
    (or refuses by name), and interop/adapter_files.py writes and reads PEFT's files with it."""
    attention: str  # HF path of layer i's attention module ("{i}" filled in): PEFT's keys hang below it
    target_modules: str  # PEFT's target_modules for that module
    join: str  # where PEFT adds the gated read: "context" (before the output projection) or "output" (after)
