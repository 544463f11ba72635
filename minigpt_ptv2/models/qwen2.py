"""Qwen2: the LLaMA-style decoder (models/llama.py) with biases on Q, K and V only, and an optional
sliding window (core/masks.py) on the layers `layer_types` names (computed as transformers does when
absent). Everything else is LLaMA's, the key table (which reads `biases()`) and converters included.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .llama import LlamaConfig, LlamaDecoder

WINDOWED, FULL = "sliding_attention", "full_attention"


@dataclass(frozen=True)
class Qwen2Config(LlamaConfig):
    """transformers' Qwen2Config defaults (no head_dim of its own there: D/H)."""
    vocab_size: int = 151936
    intermediate_size: int = 22016
    num_key_value_heads: int | None = 32
    max_position_embeddings: int = 32768
    use_sliding_window: bool = False
    sliding_window: int | None = 4096  # W, read only with use_sliding_window
    max_window_layers: int = 28  # layers from this index up have the window (when layer_types is absent)
    layer_types: tuple[str, ...] | None = None  # per layer: "full_attention" or "sliding_attention"
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None

    model_type = "qwen2"
    fixed_biases = (True, False, False)  # Q/K/V, output, feed-forward
    field_kinds = {"use_sliding_window": "flag", "sliding_window": "size or null", "max_window_layers": "count",
                   "layer_types": "names or null"}

    def __post_init__(self):
        super().__post_init__()
        types, L = self.layer_types, self.num_hidden_layers
        if types is None:  # transformers' rule
            window = self.use_sliding_window and self.sliding_window is not None
            types = tuple(WINDOWED if window and i >= self.max_window_layers else FULL for i in range(L))
        object.__setattr__(self, "layer_types", tuple(types))
        if len(types) != L or not set(types) <= {WINDOWED, FULL}:
            raise InputError(f"layer_types must name {FULL!r} or {WINDOWED!r} for each of the {L} layers, got {types}")
        if WINDOWED in types and not (self.use_sliding_window and self.sliding_window):
            raise InputError(f"layer_types names {WINDOWED!r} but use_sliding_window is false or sliding_window "
                             f"is null: no window to slide")

    def layer_window(self, i: int) -> int | None:
        return self.sliding_window if self.layer_types[i] == WINDOWED else None


class Qwen2Decoder(LlamaDecoder):
    config_class = Qwen2Config
    hf_architecture = "Qwen2ForCausalLM"

    @classmethod
    def peft_adaption_prompt(cls, cfg):
        raise InputError("PEFT's adaption prompt has no Qwen2 wrapper (it knows llama, mistral and gpt2): a gated "
                         "prefix on a 'qwen2' model has no PEFT adapter")


Model = Qwen2Decoder  # what the registry (models/__init__.py) builds
