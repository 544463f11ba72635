"""The names a user types, in one place that imports nothing heavy.

Prompt methods (where each lives, and how `train` trains it), tasks, position policies, model
presets, as plain data. The command line builds its `--help` from this module alone, so
`python -m minigpt_ptv2 train --help` answers at once instead of first importing torch (about
8 s on a cold start). `prompts.registry` imports the classes named here; tests/test_cli_help.py
checks that every name resolves.

Adding a prompt method is one file in prompts/ and one entry in METHODS: the entry carries
everything else that names the method (its recipe for `train`, its rate for `train lm`).
"""
from __future__ import annotations

from typing import NamedTuple


class Recipe(NamedTuple):
    """What `train` does by default for one method on MiniLM; benchmarks/recipe.py measured each
    choice on a held-out part of the training sets (never dev)."""
    lr: float  # peak learning rate (prompts want far larger steps than weights)
    warmup: float = 0.1  # share of the steps spent rising linearly to the peak
    init: str = "random"  # one of INITS


class Method(NamedTuple):
    where: str  # "module:Class" in minigpt_ptv2.prompts
    about: str  # one line for --help and reports
    recipe: Recipe  # `train`'s defaults on MiniLM's two tasks
    lm_lr: float  # `train lm`'s peak lr (a decoder's prompt on a text file), warm-up 0.1, from noise
    defaults: dict = {}  # constructor keywords that make this variant


# The recipes' measured trials (benchmarks/recipe_results.jsonl: budget.py's budget, one seed,
# scored on 1,000 held-out training examples, where under a point is noise): the prefix's lr 1e-2
# -> 3e-2 -> 1e-1 gave CoNLL F1 70.3 -> 78.2 -> 81.4 and SST-2 81.2 -> 83.1 -> 82.7 (starting from
# real tokens); starting from real tokens instead of noise moved either task by under 1.2 points,
# in both directions; dropout 0.1 on the prefix and no warm-up changed SST-2 by 0.0 and +0.5. The
# deep prompt's lr 1e-2 -> 3e-2 -> 1e-1 gave CoNLL 69.2 -> 73.2 -> 74.9; on length-grouped batches
# (train's default since) 3e-2 -> 1e-1 gave CoNLL 71.9 -> 73.0 and SST-2 82.4 -> 83.2, so the deep
# prompt takes 1e-1. The shallow prompt gave 69.6 at 3e-2 and 69.2 at 1e-1 there and keeps 3e-2.
# The other methods keep the rates they had. `train lm` keeps the rates its tests measured: the
# recipes were chosen on MiniLM's two tasks, not on causal language modelling. The gated prefix's
# 9e-3 is the LLaMA-Adapter paper's rate, not measured here.
METHODS = {
    "soft": Method("soft:SoftPrompt", "shallow prompt tuning: P vectors before the input embeddings",
                   Recipe(3e-2), lm_lr=3e-2),
    "ptuning-mlp": Method("ptuning:PTuningV1", "P-tuning v1: input prompts from an MLP",
                          Recipe(1e-3), lm_lr=1e-3, defaults={"encoder": "mlp"}),
    "ptuning-lstm": Method("ptuning:PTuningV1", "P-tuning v1: input prompts from a BiLSTM + MLP",
                           Recipe(1e-3), lm_lr=1e-3, defaults={"encoder": "lstm"}),
    "deep": Method("deep:DeepPrompt", "deep hidden-state prompts: inject, process, slice at every layer",
                   Recipe(1e-1), lm_lr=1e-2),
    "deep-mlp": Method("deep:DeepPrompt", "deep hidden-state prompts through an MLP",
                       Recipe(1e-3), lm_lr=1e-3, defaults={"reparam": True}),
    "prefix": Method("prefix:KVPrefix", "P-Tuning v2: per-layer K/V prefixes",
                     Recipe(1e-1, init="tokens"), lm_lr=1e-2),
    "prefix-mlp": Method("prefix:KVPrefix", "prefix tuning: K/V prefixes through an MLP",
                         Recipe(1e-3), lm_lr=1e-3, defaults={"projection": True}),
    "gated": Method("gated:GatedPrefix", "LLaMA-Adapter: a prefix read apart, through a gate that starts at 0",
                    Recipe(9e-3), lm_lr=9e-3),
}


# The two references every comparison needs: nothing but a head, or every weight.
REFERENCE_METHODS = {
    "head-only": "a task head on the frozen backbone, no prompt (a linear probe)",
    "full": "full fine-tuning: every backbone weight trains",
}
REFERENCE_RECIPES = {"head-only": Recipe(5e-3), "full": Recipe(5e-5)}
TRAIN_METHODS = tuple(METHODS) + tuple(REFERENCE_METHODS)

# Views of the entries above, by the names the training code reads them with.
RECIPES = {**{name: m.recipe for name, m in METHODS.items()}, **REFERENCE_RECIPES}
LM_LR = {name: m.lm_lr for name, m in METHODS.items()}

# How a prompt starts (prompts/from_tokens.py): from noise, or from a real text's own rows.
INITS = ("random", "tokens")

# How `train` draws its batches (data/grouping.py): rows of similar length, or a plain shuffle.
# The first is the default.
BATCHINGS = ("grouped", "random")

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

# `pretrain` (training/pretrain.py): a small decoder trained from scratch on the shipped SST-2
# sentences. The defaults are the measured choice (benchmarks/pretrain_trials.jsonl, one line a
# trial): of the trials near a minute of CPU, LLaMA-style D=64 with a 4,000-symbol BPE had the
# best held-out perplexity (GPT-2-style at the same size: 313 against 265 at 600 steps); 600 steps
# learn the 62k training tokens by heart (training loss 3.97 against 5.58 held out), 200 steps
# (about 7 passes) stop before that (5.51 against 5.73), in 67 s of CPU on one thread. The command checks every
# value (training/pretrain.check_config).
DECODER_ARCHS = ("gpt2", "llama")


class PretrainConfig(NamedTuple):
    arch: str = "llama"  # one of DECODER_ARCHS
    layers: int = 4  # L
    hidden: int = 64  # D
    heads: int = 4  # H
    vocab_size: int = 4000  # V: the byte-level BPE trained on the same sentences
    context: int = 64  # T: tokens per training window, and the model's max_position_embeddings
    batch_size: int = 32  # B: windows per step
    steps: int = 200
    lr: float = 5e-3  # peak, after a linear warm-up over the first 5% of the steps, then cosine to lr/10
    weight_decay: float = 0.1  # on matrices and embeddings, not on norms and biases
    dropout: float = 0.1
    seed: int = 0
