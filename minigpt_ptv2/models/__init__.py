"""The architectures, one module each (its config, blocks, model and checkpoint converter), and
the registry that picks one by a folder's `model_type`.

    load_pretrained("path/to/folder")            # BERT, GPT-2, LLaMA, Qwen2 or Mistral, by config.json
    save_pretrained(model, "out/folder")         # a folder transformers loads (AutoModel...)
    build(config)                                # a model with random weights

An architecture module provides `Model`, its model class, which answers the registry's questions
as class methods (models/hf_model.py): `config_class`, `config_from_hf`, `config_to_hf`,
`state_from_hf`, `state_to_hf`, `peft_adaption_prompt`. A variant of an architecture (qwen2.py,
mistral.py) subclasses its model and overrides only what differs. Adding one is that module, one
line in ARCHITECTURES, and one line in the tests' table (README, "Extending").
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch

from ..errors import InputError, InputTypeError
from ..validate import check_device_name
from ..core.config import TOKEN_IDS, DecoderConfig
from ..core.meta import shapes_only
from .hf_files import read_config, read_generation_ids, read_state_dict, tokenizer_digest, write_folder

# model_type (config.json) -> module in this package
ARCHITECTURES = {"bert": "bert", "gpt2": "gpt2", "llama": "llama", "qwen2": "qwen2", "mistral": "mistral"}


def architecture(model_type: str):
    """The model class of an architecture, by its model_type (its module's `Model`)."""
    if model_type not in ARCHITECTURES:
        raise InputError(f"unsupported model_type {model_type!r}: minigpt_ptv2 knows {sorted(ARCHITECTURES)}")
    return importlib.import_module(f".{ARCHITECTURES[model_type]}", __name__).Model


def config_from_hf(hf: dict, source="config.json"):
    """Our config for a HuggingFace config.json dict, by its model_type."""
    if not isinstance(hf, dict) or hf.get("model_type") not in ARCHITECTURES:
        kind = hf.get("model_type") if isinstance(hf, dict) else None
        raise InputError(f"{source}: unsupported model_type {kind!r}: minigpt_ptv2 loads "
                         f"{', '.join(repr(k) for k in ARCHITECTURES)} checkpoints")
    return architecture(hf["model_type"]).config_from_hf(hf, source)


def build(config):
    """A model with random weights for `config` (any architecture's config)."""
    return architecture(config.model_type)(config)


def load_pretrained(model_dir, expect: str | None = None, device=None, dtype=None, fast: bool = True):
    """Build the model a HuggingFace-format folder describes and fill it from its weights.

    expect: refuse a folder of another model_type. fast: turn on the speed devices of fast/
    (equal outputs, measured in benchmarks/); fast=False gives the plain teaching model.
    """
    check_load_arguments(model_dir, device, dtype)
    model_dir = Path(model_dir)
    hf = {**read_config(model_dir), **read_generation_ids(model_dir)}  # transformers' precedence for bos/eos/pad
    cfg = config_from_hf(hf, model_dir / "config.json")
    if expect is not None and cfg.model_type != expect:
        raise InputError(f"{model_dir} holds a {cfg.model_type!r} model but {expect!r} was expected")
    Model = architecture(cfg.model_type)
    source = f"the weights in {model_dir}"
    ours = Model.state_from_hf(read_state_dict(model_dir), cfg, source)  # a config of 3000 layers beside 3: refused here
    with shapes_only():  # shapes without memory: a config.json size the weights do not
        check_fits(Model(cfg), ours, source)  # have (n_inner 10**9 beside 96) is refused before it is allocated
    model = Model(cfg)
    copy_into(model, ours, source)
    model.tokenizer_digest = tokenizer_digest(model_dir)  # part of its fingerprint (core/fingerprint.py)
    model.eval()  # dropout off: equivalence with references is only defined in eval mode
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)
    if fast:
        from ..fast import enable
        enable(model)
    return model


def check_load_arguments(model_dir, device, dtype) -> None:
    """load_pretrained's arguments, refused by name before anything is read (they failed deep in
    pathlib or torch)."""
    if not isinstance(model_dir, (str, os.PathLike)):
        raise InputTypeError(f"load_pretrained: model_dir must be a folder path (str or Path), got "
                             f"{type(model_dir).__name__}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputTypeError(f"load_pretrained: dtype must be a floating torch dtype such as torch.float16, got "
                             f"{dtype!r} ({type(dtype).__name__})")
    if device is not None:
        check_device_name(device, "load_pretrained: device")


def save_pretrained(model, out_dir) -> Path:
    """Write `model`'s backbone as a HuggingFace-format folder (config.json + model.safetensors)
    that transformers loads with outputs equal to ours. The attached prompt is not part of it.
    A decoder's bos / eos / pad ids go into config.json and generation_config.json (which
    transformers' generate reads first), so that it stops where ours does."""
    Model = architecture(model.config.model_type)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith("prompt.")}
    config = Model.config_to_hf(model.config)
    generation = {k: config.get(k) for k in TOKEN_IDS} if isinstance(model.config, DecoderConfig) else None
    return write_folder(out_dir, config, Model.state_to_hf(state, model.config), generation)


def check_fits(model: torch.nn.Module, ours: dict, source: str) -> None:
    """Refuse converted tensors that do not fit the model: anything missing, unexpected or mis-shaped."""
    target = {k: v for k, v in model.state_dict().items() if not k.startswith("prompt.")}
    missing, unexpected = sorted(set(target) - set(ours)), sorted(set(ours) - set(target))
    if missing or unexpected:
        raise InputError(f"{source} do not match the model: missing keys {missing}, "
                         f"unexpected keys {unexpected}")
    for k, t in ours.items():
        if target[k].is_floating_point() and not t.is_floating_point():
            raise InputError(f"{source}: tensor for {k} is {t.dtype}, not a floating dtype "
                             f"(the model's weight is {target[k].dtype})")
        if t.shape != target[k].shape:
            raise InputError(f"shape mismatch for {k}: checkpoint {list(t.shape)} vs model "
                             f"{list(target[k].shape)} (as this package stores them: W [in, out])")


def copy_into(model: torch.nn.Module, ours: dict, source: str) -> None:
    """Copy converted tensors into the model, refusing anything missing, unexpected or mis-shaped."""
    check_fits(model, ours, source)
    target = {k: v for k, v in model.state_dict().items() if not k.startswith("prompt.")}
    with torch.no_grad():
        for k, p in target.items():
            p.copy_(ours[k])
