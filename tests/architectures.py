"""The one table of architectures the tests run: model_type -> a tiny config and the transformers
class its folders load into. Every architecture-parametrised test reads it (ARCHS, DECODERS), so
a new line in `models.ARCHITECTURES` is enrolled in all of them by one line here; a registry
entry without a line here stops the test run at collection, naming it (`check_complete`).

Tiny configs have every dimension distinct, so a wrong axis cannot hide; the variants' sliding
windows are shorter than the tests' sequences, so a window that is not applied shows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from minigpt_ptv2.core.config import ModelConfig
from minigpt_ptv2.models import ARCHITECTURES, architecture
from minigpt_ptv2.models.mistral import MistralConfig
from minigpt_ptv2.models.presets import preset
from minigpt_ptv2.models.qwen2 import Qwen2Config


@dataclass(frozen=True)
class Arch:
    tiny: ModelConfig  # a tiny config, with the architecture's own defaults for the rest
    hf_class: str  # the transformers class its folders load into


_DECODER = dict(vocab_size=140, hidden_size=40, intermediate_size=72, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
ARCHS = {
    "bert": Arch(preset("bert-tiny"), "BertModel"),
    "gpt2": Arch(preset("gpt2-tiny"), "GPT2LMHeadModel"),
    "llama": Arch(preset("llama-tiny"), "LlamaForCausalLM"),
    # a window of 4 on the upper two layers only (max_window_layers=1), full attention below
    "qwen2": Arch(Qwen2Config(**_DECODER, use_sliding_window=True, sliding_window=4, max_window_layers=1),
                  "Qwen2ForCausalLM"),
    "mistral": Arch(MistralConfig(**_DECODER, sliding_window=5), "MistralForCausalLM"),
}


def check_complete(registry=ARCHITECTURES, table=ARCHS) -> None:
    """Every registered architecture has a line in the table, and no line names one not registered."""
    missing, unknown = sorted(set(registry) - set(table)), sorted(set(table) - set(registry))
    if missing or unknown:
        raise RuntimeError(f"tests/architectures.py: ARCHS has no line for {missing} (registered in "
                           f"models.ARCHITECTURES) and lines for unregistered {unknown}: every architecture "
                           f"needs its tiny config and transformers class here")


check_complete()  # at import: a registry line without a table line fails every test that reads the table

DECODERS = sorted(name for name in ARCHS if architecture(name).causal)


def hf_folder(model_type: str, path, seed: int = 0, changes: dict | None = None, **hf_fields) -> Path:
    """transformers' model of `model_type` with random weights (the tiny config with our `changes`,
    then `hf_fields` on top, e.g. initializer_range=0.3 for varied greedy text), saved into path."""
    import transformers
    arch = ARCHS[model_type]
    tiny = arch.tiny.replace(**(changes or {}))
    hf = json.loads(json.dumps(architecture(model_type).config_to_hf(tiny)))  # as a config.json holds it
    torch.manual_seed(seed)
    model = getattr(transformers, arch.hf_class)(transformers.AutoConfig.for_model(**{**hf, **hf_fields}))
    model.save_pretrained(path)
    return Path(path)
