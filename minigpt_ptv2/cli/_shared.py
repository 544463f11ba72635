"""Small pieces the train / eval / predict / export-peft / import-peft commands share.

The leading underscore keeps this module out of the command list.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import InputError


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, and keeps the example lines of a description/epilog as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:  # said already, or nothing to say
            return text
        return super()._get_help_string(action)


def setup_help(p: argparse.ArgumentParser, description: str, epilog: str) -> None:
    p.formatter_class = HelpFormatter
    p.description = description
    p.epilog = epilog


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1): a share of something (such as the warm-up steps)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


MODEL_DIR_HELP = "HuggingFace-format BERT folder (default: $MINIGPT_PTV2_MODEL or the shipped MiniLM)"


def add_model_dir(p, help: str = MODEL_DIR_HELP) -> None:
    p.add_argument("--model-dir", default=None, help=help)


def add_device(p) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")


def add_json(p) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def check_device(device: str) -> str:
    import torch
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"--device {device!r} is not a device (try cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"--device {device}: only cpu and cuda are supported")
    return device


def size_text(n_bytes: int) -> str:
    return f"{n_bytes:,} bytes = {n_bytes / 1024:.1f} KiB"


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def warn_about_import(meta: dict) -> None:
    """An imported checkpoint whose head predicts something else than what it was trained for says so."""
    imported = meta.get("imported_from", {})
    if imported.get("head") == "random":
        print("warning: this checkpoint's head was initialised at random on import (untrained)", file=sys.stderr)
    if imported.get("pooling_changed"):
        print("warning: this checkpoint keeps a PEFT classifier trained on virtual token 0 under a pooler that "
              "reads the real [CLS] (import-peft --allow-pooling-change): its predictions differ from PEFT's",
              file=sys.stderr)
