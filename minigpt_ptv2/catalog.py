"""The names a user types, in one place that imports nothing heavy.

Prompt methods (and where each lives), tasks, position policies, training methods and their
default learning rates, model presets, as plain data. The command line builds its `--help` from
this module alone, so `python -m minigpt_ptv2 train --help` answers at once instead of first
importing torch (about 8 s on a cold start). `prompts.registry` imports the classes named here;
tests/test_cli_help.py checks that every name resolves.

Adding a prompt method is one file in prompts/ and one line in METHODS.
"""
from __future__ import annotations

from typing import NamedTuple


class Method(NamedTuple):
    where: str  # "module:Class" in minigpt_ptv2.prompts
    defaults: dict  # constructor keywords that make this variant
    lr: float  # default peak learning rate on MiniLM (prompts want far larger steps than weights)
    about: str  # one line for --help and reports


METHODS = {
    "soft": Method("soft:SoftPrompt", {}, 3e-2, "shallow prompt tuning: P vectors before the input embeddings"),
    "ptuning-mlp": Method("ptuning:PTuningV1", {"encoder": "mlp"}, 1e-3, "P-tuning v1: input prompts from an MLP"),
    "ptuning-lstm": Method("ptuning:PTuningV1", {"encoder": "lstm"}, 1e-3,
                           "P-tuning v1: input prompts from a BiLSTM + MLP"),
    "deep": Method("deep:DeepPrompt", {}, 1e-2, "deep hidden-state prompts: inject, process, slice at every layer"),
    "deep-mlp": Method("deep:DeepPrompt", {"reparam": True}, 1e-3, "deep hidden-state prompts through an MLP"),
    "prefix": Method("prefix:KVPrefix", {}, 1e-2, "P-Tuning v2: per-layer K/V prefixes"),
    "prefix-mlp": Method("prefix:KVPrefix", {"projection": True}, 1e-3, "prefix tuning: K/V prefixes through an MLP"),
}

# The two references every comparison needs: nothing but a head, or every weight.
REFERENCE_METHODS = {
    "head-only": "a task head on the frozen backbone, no prompt (a linear probe)",
    "full": "full fine-tuning: every backbone weight trains",
}
TRAIN_METHODS = tuple(METHODS) + tuple(REFERENCE_METHODS)
DEFAULT_LR = {**{name: m.lr for name, m in METHODS.items()}, "head-only": 5e-3, "full": 5e-5}

# Where real tokens sit under a prompt (lesson 13, pitfall 1): 0..N-1, or P..P+N-1 as in HF/PEFT.
POSITIONS = ("real", "shifted")

# The precision a run trains in (training/precision.py): float32, or bf16 / fp16 autocast.
PRECISIONS = ("fp32", "bf16", "fp16")

TASKS = {
    "sst2": "SST-2 sentence sentiment (accuracy)",
    "conll": "CoNLL-2003 named-entity tags (entity-level F1)",
}
# Causal-LM prompt training of a decoder on a plain-text file (training/lm.py): no head, no labels
# file, and prompt methods only; `train` and checkpoints accept it beside the encoder tasks.
LM_TASK = "lm"
TRAIN_TASKS = {**TASKS, LM_TASK: "causal-LM prompt training of a decoder on a text file (held-out perplexity)"}

# Named model configurations (models/presets.py holds them).
PRESETS = ("bert-base", "minilm", "bert-tiny", "gpt2", "gpt2-tiny", "llama-1b", "llama-tiny")
