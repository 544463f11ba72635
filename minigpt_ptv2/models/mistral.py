"""Mistral: the LLaMA-style decoder (models/llama.py) with no biases at all and a sliding window
on every layer: a query sees only the last W key columns, itself included (core/masks.py).

Everything else is LLaMA's: RMSNorm, RoPE, SwiGLU, grouped K/V heads, the key table, the
converters, and PEFT's adaption prompt (which reads Mistral as it reads LLaMA).
"""
from __future__ import annotations

from dataclasses import dataclass

from .llama import LlamaConfig, LlamaDecoder


@dataclass(frozen=True)
class MistralConfig(LlamaConfig):
    """transformers' MistralConfig defaults (a Mistral-7B shape)."""
    intermediate_size: int = 14336
    num_key_value_heads: int | None = 8
    max_position_embeddings: int = 4096 * 32
    sliding_window: int | None = 4096  # W on every layer; null: none

    model_type = "mistral"
    fixed_biases = (False, False, False)  # Q/K/V, output, feed-forward
    field_kinds = {"sliding_window": "size or null"}

    def layer_window(self, i: int) -> int | None:
        return self.sliding_window


class MistralDecoder(LlamaDecoder):
    config_class = MistralConfig
    hf_architecture = "MistralForCausalLM"


Model = MistralDecoder  # what the registry (models/__init__.py) builds
