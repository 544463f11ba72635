"""Small pieces the train / eval / predict / export-peft / import-peft commands share.

The leading underscore keeps this module out of the command list.
"""
from __future__ import annotations

import argparse
import json
import math
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


# Numbers at the door: every numeric option is range-checked here, by argparse, so a bad value
# costs one line naming the option ("argument --seed: ...") before anything is imported or loaded.
# These use only the standard library: --help stays instant and torch-free.

def _int(text: str, expected: str) -> int:
    try:
        return int(text)
    except ValueError:  # also a number too long to convert
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text[:40]!r}") from None


def _finite(text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text[:40]!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number ({expected}), got {text}")
    return value


def int_range(lo: int, hi: int | None = None, why: str = "", what: str | None = None):
    """An argparse type: an integer in [lo, hi] (no upper end if hi is None). The refusal says
    `what` the value must be if given, else "a positive integer" or "at most HI" plus `why`."""
    low = what or {0: "a non-negative integer", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")

    def parse(text: str) -> int:
        value = _int(text, low)
        shown = text if len(text) <= 40 else f"{text[:20]}... ({len(text)} digits)"
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be {low}, got {shown}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"must be {what or f'at most {hi:,}{why}'}, got {shown}")
        return value
    parse.__name__ = low  # what argparse calls the type in its own messages
    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)
# NumPy's generator takes 32-bit seeds: a larger or negative one failed with a traceback
seed = int_range(0, 2**32 - 1, what="a seed from 0 to 4,294,967,295 (NumPy's generator takes 32 bits)")
# P: more virtual tokens than any position table here holds (512 for BERT, 1024 for GPT-2) steers
# nothing a model here can read, and a P of millions only runs out of memory
prompt_length = int_range(1, 4096, " (longer than any model here reads: BERT 512 positions, GPT-2 1,024)")
epochs = int_range(1, 10_000)
batch_size = int_range(1, 65_536)


def fraction(text: str) -> float:
    """A number in [0, 1): a share of something (such as the warm-up steps)."""
    value = _finite(text, "a number in [0, 1)")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (infinity and NaN are not sizes or rates)."""
    value = _finite(text, "a positive number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def temperature(text: str) -> float:
    """Sampling temperature T: logits / T. In [1e-3, 1e3]: below, sampling is greedy decoding in
    all but name and logits / T overflows float32 (a logit of 40 / 1e-45 is inf); above, it is
    uniform noise."""
    value = _finite(text, "a temperature in [0.001, 1000]")
    if not 1e-3 <= value <= 1e3:
        why = ("below 0.001 sampling is greedy decoding in all but name, and logits / temperature overflow "
               "float32: drop --do-sample for greedy decoding" if value < 1e-3 else
               "above 1000 every token is about equally likely: uniform noise")
        raise argparse.ArgumentTypeError(f"must be in [0.001, 1000], got {text}: {why}")
    return value


def diverge_factor(text: str) -> float:
    """0 (never stop) or a finite factor >= 1: below 1, a run would be stopped for a loss still
    above a fraction of its start, which is every run in its first steps."""
    value = _finite(text, "0 or a number >= 1")
    if value != 0 and not value >= 1:
        raise argparse.ArgumentTypeError(f"must be 0 (never stop) or at least 1, got {text}: below 1 a run that "
                                         f"is learning would be stopped as diverged")
    return value


def add_overwrite(p, what: str, default_out: str | None = None) -> None:
    """--overwrite for a command that writes a folder (outdir.py): without it, a folder that
    holds anything is refused."""
    where = f" (the default {default_out} too)" if default_out else ""
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace what the output folder holds{where} with {what}, whole and at once; without "
                        f"it a folder that holds anything is refused. A folder the command reads is refused "
                        f"either way")


MODEL_DIR_HELP = "HuggingFace-format BERT folder (default: $MINIGPT_PTV2_MODEL or the shipped MiniLM)"


def add_model_dir(p, help: str = MODEL_DIR_HELP) -> None:
    p.add_argument("--model-dir", default=None, help=help)


def add_allow_other_backbone(p, what: str = "the checkpoint") -> None:
    p.add_argument("--allow-other-backbone", action="store_true",
                   help=f"use {what} on a backbone other than the one it was trained on (other weights, "
                        f"dimensions or tokenizer): a warning says what differs")


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr, "warning: ..." (the command line's warnings.showwarning)."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def add_device(p) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")


def add_json(p) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def check_device(device: str) -> str:
    from ..validate import check_device_name
    check_device_name(device, "--device")
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
