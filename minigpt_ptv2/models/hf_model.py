"""What the registry (models/__init__.py) asks of an architecture's model class: how its
checkpoints are read and written, in HuggingFace's format.

    Model.config_class                        the config dataclass it is built from
    Model.hf_architecture                     the transformers class its folders load into
    Model.config_from_hf(hf, source)          a config.json dict -> our config; what this model would
                                              compute otherwise is refused by name (hf_config.py)
    Model.config_to_hf(config)                -> a config.json dict transformers reads as we do
    Model.checkpoint_keys(config)             the key table: every tensor of ours and where HF keeps it
                                              (keymap.py: names, transposes, fusions)
    Model.state_from_hf(sd, config, source)   HF tensors -> ours, through that table
    Model.state_to_hf(state, config)          ours -> HF tensors, through that table
    Model.peft_adaption_prompt(config)        where PEFT's adaption prompt lives in the HF model, or
                                              a refusal by name
    Model.from_pretrained(folder)             load_pretrained, refusing another model_type

All are class methods, so a variant (models/qwen2.py, models/mistral.py) inherits every one and
overrides only what differs: most often nothing but `config_class`, `hf_architecture` and the
block class.
"""
from __future__ import annotations

from ..errors import InputError
from .keymap import to_hf, to_ours


class HFModel:
    config_class: type  # what the model is built from (and what from_pretrained expects)
    hf_architecture: str  # config.json's "architectures": e.g. "LlamaForCausalLM"
    hf_prefix = ""  # the backbone's key prefix inside HF's model ("model.", "transformer."), stripped and written
    hf_ignored: list = []  # (regex, reason): HF keys left out on purpose (keymap.to_ours)

    @classmethod
    def checkpoint_keys(cls, cfg) -> list:
        raise NotImplementedError(f"{cls.__name__} has no checkpoint key table")

    @classmethod
    def state_from_hf(cls, sd: dict, cfg, source: str = "the weights") -> dict:
        return to_ours(sd, cls.checkpoint_keys(cfg), (cls.hf_prefix,), cls.hf_ignored, source)

    @classmethod
    def state_to_hf(cls, state: dict, cfg) -> dict:
        return to_hf(state, cls.checkpoint_keys(cfg), prefix=cls.hf_prefix)

    @classmethod
    def config_from_hf(cls, hf: dict, source="config.json"):
        raise NotImplementedError(f"{cls.__name__} does not read config.json")

    @classmethod
    def config_to_hf(cls, cfg) -> dict:
        raise NotImplementedError(f"{cls.__name__} does not write config.json")

    @classmethod
    def peft_adaption_prompt(cls, cfg):
        raise InputError(f"PEFT's adaption prompt has no wrapper for {cls.hf_architecture}: a gated prefix on a "
                         f"{cfg.model_type!r} model has no PEFT adapter")

    @classmethod
    def from_pretrained(cls, model_dir, device=None, dtype=None, fast: bool = True):
        """`Model.from_pretrained(folder)` for every architecture: load_pretrained, refusing a folder
        that holds another model_type than the class's own (`config_class.model_type`)."""
        from . import load_pretrained
        return load_pretrained(model_dir, expect=cls.config_class.model_type, device=device, dtype=dtype, fast=fast)
