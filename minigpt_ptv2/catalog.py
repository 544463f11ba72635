"""The names a user types, in one place that imports nothing heavy.

Prompt methods, tasks, position policies, training methods and their default learning rates,
as plain data. The command line builds its `--help` from this module alone, so
`python -m minigpt_ptv2 train --help` answers at once instead of first importing torch (about
8 s on a cold start). The classes behind the names live in `prompts.registry` and
`training.tasks`; tests/test_cli_help.py checks that both sides name the same things.
"""
from __future__ import annotations

# name -> what it does (the registry maps each name to its class)
METHODS = {
    "soft": "shallow prompt tuning: P vectors before the input embeddings",
    "ptuning-mlp": "P-tuning v1: input prompts from an MLP",
    "ptuning-lstm": "P-tuning v1: input prompts from a BiLSTM + MLP",
    "deep": "deep hidden-state prompts: inject, process, slice at every layer",
    "deep-mlp": "deep hidden-state prompts through an MLP",
    "prefix": "P-Tuning v2: per-layer K/V prefixes",
    "prefix-mlp": "prefix tuning: K/V prefixes through an MLP",
}

# The two references every comparison needs: nothing but a head, or every weight.
REFERENCE_METHODS = {
    "head-only": "a task head on the frozen backbone, no prompt (a linear probe)",
    "full": "full fine-tuning: every backbone weight trains",
}
TRAIN_METHODS = tuple(METHODS) + tuple(REFERENCE_METHODS)

# Where real tokens sit under a prompt (lesson 13, pitfall 1): 0..N-1, or P..P+N-1 as in HF/PEFT.
POSITIONS = ("real", "shifted")

TASKS = {
    "sst2": "SST-2 sentence sentiment (accuracy)",
    "conll": "CoNLL-2003 named-entity tags (entity-level F1)",
}

# Peak learning rates that work for each family on MiniLM (prompts want far larger steps than weights).
DEFAULT_LR = {"soft": 3e-2, "ptuning-mlp": 1e-3, "ptuning-lstm": 1e-3, "deep": 1e-2, "deep-mlp": 1e-3,
              "prefix": 1e-2, "prefix-mlp": 1e-3, "head-only": 5e-3, "full": 5e-5}
