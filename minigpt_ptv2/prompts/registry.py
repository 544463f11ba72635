"""Every prompt method by name, and a parameter-count report for any config.

    make_method("prefix", config, P=20)  ->  KVPrefix(config, 20)
"""
from __future__ import annotations

import torch

from .. import catalog
from ..errors import InputError
from .deep import DeepPrompt
from .prefix import KVPrefix
from .ptuning import PTuningV1
from .soft import SoftPrompt

# name -> (class, its constructor defaults, description); names and descriptions come from the
# torch-free catalog the command line reads.
_CLASSES = {
    "soft": (SoftPrompt, {}),
    "ptuning-mlp": (PTuningV1, {"encoder": "mlp"}),
    "ptuning-lstm": (PTuningV1, {"encoder": "lstm"}),
    "deep": (DeepPrompt, {}),
    "deep-mlp": (DeepPrompt, {"reparam": True}),
    "prefix": (KVPrefix, {}),
    "prefix-mlp": (KVPrefix, {"projection": True}),
}
METHODS = {name: (*_CLASSES[name], description) for name, description in catalog.METHODS.items()}


def make_method(name: str, config, P: int, **kw):
    """Build a prompt method by name (see METHODS); extra keywords go to its constructor."""
    if name not in METHODS:
        raise InputError(f"unknown prompt method {name!r}; choose one of {sorted(METHODS)}")
    cls, defaults, _ = METHODS[name]
    return cls(config, P, **{**defaults, **kw})


def backbone_parameters(config) -> int:
    """Parameters of the plain backbone for `config`, counted without allocating memory."""
    from ..decoder import Decoder
    from ..encoder import Encoder
    with torch.device("meta"):
        model = Encoder(config) if config.model_type == "bert" else Decoder(config)
    return sum(p.numel() for p in model.parameters())


def parameter_report(config, P: int, methods=None) -> list[dict]:
    """Trainable parameters of each method and their share of the backbone, for any config."""
    total = backbone_parameters(config)
    rows = []
    for name in methods or METHODS:
        with torch.device("meta"):
            n = make_method(name, config, P).num_trainable()
        rows.append({"method": name, "trainable": n, "percent": 100.0 * n / total, "backbone": total})
    return rows


def format_report(rows: list[dict]) -> str:
    lines = [f"{'method':<14}{'trainable':>12}{'% of backbone':>15}"]
    lines += [f"{r['method']:<14}{r['trainable']:>12,}{r['percent']:>14.3f}%" for r in rows]
    return "\n".join(lines)
