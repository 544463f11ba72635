"""minigpt_ptv2: deep prompt tuning (P-Tuning v2) from scratch, one readable file at a time.

    from minigpt_ptv2 import BertEncoder, GPT2Decoder, ShapeTrace, load_pretrained, preset

The names below are imported on first use (PEP 562), not when the package is imported: the
command line's `--help` and other light entry points then never pay for importing torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.2.0"

# public name -> the module that defines it
_EXPORTS = {
    "BertEncoder": "models.bert", "BertConfig": "models.bert",
    "GPT2Decoder": "models.gpt2", "GPT2Config": "models.gpt2",
    "PRESETS": "models.presets", "preset": "models.presets",
    "load_pretrained": "models", "save_pretrained": "models", "build": "models",
    "KVCache": "core.cache", "MultiHeadAttention": "core.attention", "concat_prefix": "core.attention",
    "ShapeTrace": "trace",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'minigpt_ptv2' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
