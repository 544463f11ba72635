"""A prefix: keys and values a layer's attention reads besides its own tokens'.

    Prefix(k, v)                   k, v [B, H_kv, P, d]: JOINED to the layer's own keys and
                                   values, one softmax over P + N keys (P-Tuning v2, prefix
                                   tuning, and the keys a KV cache holds)
    Prefix(k, v, gate=g)           GATED: read under a softmax of its own over its P keys, the
                                   result scaled by g and added to what the tokens read
                                   (LLaMA-Adapter's zero-init attention, PEFT's adaption prompt)

A prompt method hands the model one Prefix (or None) per layer (core/prompt_method.py); the
layer contract passes them on (core/layer.py); attention reads them (core/attention.py); a KV
cache keeps them (core/cache.py): joined ones grow with each token, gated ones are kept apart.

Why two ways to read: under one softmax, any prefix takes probability mass from the real
tokens, even a prefix of zeros (its keys score 0, and exp(0) = 1 is a real weight; pitfall 4):
no joined prefix leaves the model as it was, except keys at minus infinity. A gated read takes
nothing from the tokens' softmax and adds g * softmax(q K_p^T / sqrt(d)) V_p on top: at g = 0,
exactly nothing, whatever the prefix holds (a fresh gated prefix IS the frozen model; pitfall 10).

The other fields say how a gated prefix is read:

    keep   [P] or [B, P] bool, or None (all): which of the P entries may be read (the method's
           virtual_keep); a fully masked gated prefix adds exactly nothing
    join   "context": g * softmax(..) V_p joins the tokens' context BEFORE the output
                      projection, so W_O maps both (the paper; PEFT on LLaMA)
           "output":  it is added AFTER the output projection, unprojected (PEFT on GPT-2,
                      whose adapter output skips c_proj). The two differ unless W_O is the
                      identity: a convention to name, not a detail
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..errors import InputError, InputTypeError

JOINS = ("context", "output")  # where a gated read joins the tokens' attention


@dataclass(slots=True, eq=False)  # read-only by convention (a changed copy: .replace); cheap to build
class Prefix:
    k: torch.Tensor  # [B, H_kv, P, d]
    v: torch.Tensor  # [B, H_kv, P, d]
    gate: torch.Tensor | None = None  # None: joined; else g (one number, shape [] or [1]): gated
    keep: torch.Tensor | None = None  # gated only: [P] or [B, P] bool, True = may be read
    join: str = "context"  # gated only: "context" (before W_O) or "output" (after it)

    @property
    def gated(self) -> bool:
        return self.gate is not None

    @property
    def plain(self) -> bool:
        """Nothing but K and V: seams taking a prefix as a pair ask this, so a new field is refused there."""
        return all(getattr(self, f.name) is None if f.default is None else getattr(self, f.name) == f.default
                   for f in dataclasses.fields(self) if f.name not in ("k", "v"))

    @property
    def length(self) -> int:  # P
        return self.k.shape[2]

    def replace(self, **changes) -> "Prefix":
        return dataclasses.replace(self, **changes)

    # A plain prefix is still the (K, V) pair it generalises (`k, v = prefix`); any other says it is not.
    def _pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.plain:
            raise InputTypeError(f"a prefix that sets more than K and V is not a (K, V) pair: read .k, .v and "
                                 f"{', '.join(f.name for f in dataclasses.fields(self)[2:])}")
        return self.k, self.v

    def __iter__(self):
        return iter(self._pair())

    def __getitem__(self, i: int) -> torch.Tensor:
        return self._pair()[i]

    def __len__(self) -> int:
        return 2


def as_prefix(p) -> Prefix | None:
    """A Prefix as it is; a plain (K, V) tuple or list of two tensors as the joined Prefix(K, V)
    (what the lessons hand attention by hand); None as None. Anything else is refused by name."""
    if p is None or type(p) is Prefix:
        return p
    if type(p) in (tuple, list) and len(p) == 2 and all(torch.is_tensor(t) for t in p):
        return Prefix(p[0], p[1])
    # (a subclass of Prefix or of tuple may carry more than attention reads, a gate or a scale say:
    # taking its tensors would drop the rest silently)
    raise InputTypeError(f"a prefix must be a Prefix(k, v, ...) or a plain (K, V) pair of tensors, got "
                         f"{type(p).__name__}" + (f" of {len(p)} items" if isinstance(p, (tuple, list)) else ""))


def split_prefixes(prefixes, L: int, P: int, name: str):
    """A method's per-layer prefixes (L x Prefix or None) -> (joined, gated): two lists of L
    entries, each None where nothing is read, or None altogether when no layer reads one.

    A joined prefix adds P keys to the key mask every layer shares, so it must reach every
    layer, with the method's P; a gated one may skip layers (None) and must have P entries too."""
    if not isinstance(prefixes, (list, tuple)) or len(prefixes) != L:
        got = f"{len(prefixes)} entries" if isinstance(prefixes, (list, tuple)) else type(prefixes).__name__
        raise InputError(f"{name}.kv_prefix must give one Prefix (or None) per layer, L={L}; got {got}")
    joined, gated = [None] * L, [None] * L
    for i, p in enumerate(prefixes):
        p = as_prefix(p)
        if p is None:
            continue
        if p.length != P:
            raise InputError(f"{name}'s prefix of layer {i} has {p.length} entries, but the method's P is {P}")
        if p.gated:
            if p.gate.numel() != 1:
                raise InputError(f"{name}'s gate of layer {i} has shape {list(p.gate.shape)}: a gate is one "
                                 f"number per layer (shape [] or [1])")
            if p.join not in JOINS:
                raise InputError(f"{name}'s gated prefix of layer {i} joins at {p.join!r}; one of {JOINS}")
            gated[i] = p
        elif p.keep is not None or p.join != "context":
            raise InputError(f"{name}'s prefix of layer {i} is joined (no gate) but sets keep or join, which "
                             f"only a gated prefix reads: a joined prefix is masked through virtual_keep")
        else:
            joined[i] = p
    has_joined = [p is not None for p in joined]
    if any(has_joined) and not all(has_joined):
        missing = has_joined.index(False)
        raise InputError(f"{name} gives a joined prefix to some layers but none to layer {missing}: its P "
                         f"keys join a key mask all layers share, so a joined prefix reaches every layer "
                         f"(a gated one may skip layers)")
    return (joined if any(has_joined) else None), (gated if any(p is not None for p in gated) else None)
