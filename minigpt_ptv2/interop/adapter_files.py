"""An adapter folder written whole, and read back checked field by field.

Positions (lesson 13, pitfall 1): HF models under PEFT's prefix and prompt tuning give real tokens
positions P..P+N-1, which is our positions="shifted". A prompt trained with our default "real"
(0..N-1) computes something else inside PEFT, so export refuses it unless
allow_position_change=True (the adapter is then written, but PEFT's outputs differ from ours).
Import sets positions="shifted" for those. PEFT's adaption prompt moves no token: a gated prefix
exports and imports with positions="real", and "shifted" is the one refused.

Heads (lesson 13, pitfall 2): BertForSequenceClassification pools row 0. Under a K/V prefix row 0 is the real
[CLS], so a sentence head is exported with the prompt (SEQ_CLS). Under prompt tuning row 0 is a
virtual token, so a sentence head would read the wrong row: the prompt is exported alone
(FEATURE_EXTRACTION) and the head stays in our checkpoint. Token heads apply per row, so they go
along for every method (TOKEN_CLS; PEFT's logits for the real tokens are its last N rows).
Import refuses the symmetric case: a PROMPT_TUNING / P_TUNING SEQ_CLS adapter's classifier was
trained on virtual token 0, and our sentence head pools the real [CLS], so its predictions would
change. The head then comes from head_from or random_head, or the classifier is kept on request
(allow_pooling_change=True), knowing the logits differ from PEFT's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import InputError, MissingFileError, NonFiniteError
from ..prompts import GatedPrefix, KVPrefix, SoftPrompt
from ..training.checkpoint import _atomic_write
from ..validate import check_finite, read_json, require
from .peft_layout import (ADAPTION_TYPES, HEAD_PREFIX, HEAD_TASK_TYPES, PEFT_CONFIG, PEFT_POSITIONS, PEFT_WEIGHTS,
                          PREFIX_TYPES, PROMPT_KEY, PROMPT_TYPES, adaption_prompt_keys, adaption_prompt_tensors,
                          adapter_config, peft_dims, prompt_to_peft)


def save_adapter(out_dir, method, model=None, task_type: str | None = None, head: dict | None = None,
                 allow_position_change: bool = False, base_model: str | None = None) -> dict:
    """Write a PEFT adapter folder for `method`; returns {'path', 'bytes', 'peft_type', 'task_type'}.

    head: optional {"weight": [C, D], "bias": [C]} saved as PEFT's classifier (needs SEQ_CLS or
    TOKEN_CLS). task_type defaults to FEATURE_EXTRACTION (encoder) or CAUSAL_LM (decoder).
    """
    config = method.config
    if not bool(method.virtual_keep.all()):
        raise InputError("this prompt masks some of its virtual entries (virtual_keep); PEFT cannot")
    form = prompt_to_peft(method, model)
    peft_type = form["peft_type"]
    _check_positions(method.positions, peft_type, allow_position_change)
    from ..models import architecture
    causal = architecture(config.model_type).causal  # a decoder's adapter is a causal LM's
    task_type = task_type or ("CAUSAL_LM" if causal else "FEATURE_EXTRACTION")
    if head is not None and task_type not in HEAD_TASK_TYPES.values():
        raise InputError(f"a classifier head needs task_type SEQ_CLS or TOKEN_CLS, got {task_type}")
    if peft_type in ADAPTION_TYPES:
        if head is not None:
            raise InputError("PEFT's adaption prompt carries no classifier head: export the prompt alone")
        tensors = adaption_prompt_tensors(form, config)
        cfg = adapter_config(peft_type, task_type, config, method.num_virtual, base_model=base_model,
                             adapter_layers=form["adaption_gate"].shape[0])
    else:
        tensors = {PROMPT_KEY: form[PROMPT_KEY]}
        cfg = adapter_config(peft_type, task_type, config, method.num_virtual, head is not None, base_model)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
    for k, v in (head or {}).items():
        tensors[HEAD_PREFIX + k] = v.detach().float().cpu().contiguous()
    for name, t in tensors.items():  # never write a broken adapter
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"cannot export this {type(method).__name__}: its tensor {name!r} holds NaN "
                                 f"or infinite values (trained by a run that diverged?)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / PEFT_WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    _atomic_write(out / PEFT_CONFIG, lambda p: p.write_text(json.dumps(cfg, indent=2)))
    size = (out / PEFT_WEIGHTS).stat().st_size + (out / PEFT_CONFIG).stat().st_size
    return {"path": str(out), "bytes": size, "peft_type": peft_type, "task_type": task_type}


def _check_positions(positions: str, peft_type: str, allowed: bool) -> None:
    """PEFT puts the real tokens where its adapter type does (PEFT_POSITIONS); a prompt trained
    with the other policy computes something else there, so it is refused unless allowed."""
    want = PEFT_POSITIONS[peft_type]
    if positions == want or allowed:
        return
    if want == "shifted":
        raise InputError(
            f"this prompt was trained with positions={positions!r} (real tokens at 0..N-1), but "
            f"PEFT gives real tokens positions P..P+N-1, so the adapter would compute something else; "
            f"train with positions='shifted' (train --positions shifted), or pass "
            f"--allow-position-change to export anyway")
    raise InputError(
        f"this prompt was trained with positions={positions!r} (real tokens at P..P+N-1), but PEFT's "
        f"{peft_type} adapters leave real tokens at 0..N-1, so the adapter would compute something else; "
        f"train with positions='real' (the default), or pass --allow-position-change to export anyway")


@dataclass
class Adapter:
    """What a PEFT adapter folder holds, turned into our objects."""
    method: object  # KVPrefix or SoftPrompt (positions="shifted"), or GatedPrefix (positions="real")
    method_name: str  # "prefix" | "soft" | "gated"
    head: dict | None  # {"weight": [C, D], "bias": [C]} or None
    peft_config: dict


def read_adapter_config(adapter_dir) -> dict:
    """adapter_config.json, its fields checked by kind (a null optional field counts as absent)."""
    path = Path(adapter_dir) / PEFT_CONFIG
    if not path.is_file():
        raise MissingFileError(f"{adapter_dir} is not a PEFT adapter folder: no {PEFT_CONFIG} in it")
    cfg = read_json(path)
    if "peft_type" not in cfg:
        raise InputError(f"{path} has no 'peft_type': not a PEFT adapter")
    present = {k: v for k, v in cfg.items() if v is not None}
    if cfg["peft_type"] in ADAPTION_TYPES:  # LLaMA-Adapter: P and the number of top layers adapted
        for key in ("adapter_len", "adapter_layers"):
            if key not in cfg:
                raise InputError(f"{path} has no {key!r}: not a complete adaption-prompt adapter")
        require(present, path, {"peft_type": "str", "adapter_len": "positive int", "adapter_layers": "positive int"},
                {"task_type": "str", "target_modules": "str"})
        return cfg
    if "num_virtual_tokens" not in cfg:
        raise InputError(f"{path} has no 'num_virtual_tokens': not a prompt-learning adapter")
    require(present, path, {"peft_type": "str", "num_virtual_tokens": "positive int"},
            {"task_type": "str", "num_layers": "positive int", "token_dim": "positive int",
             "num_attention_heads": "positive int", "num_transformer_submodules": "positive int"})
    if present.get("num_transformer_submodules", 1) != 1:
        raise InputError(f"{path}: num_transformer_submodules is {cfg['num_transformer_submodules']}: "
                         f"an adapter for an encoder-decoder model, not for this encoder or decoder")
    return cfg


def _floating(tensors: dict, path) -> dict:
    """The tensors as float32, refusing integer or bool ones and any non-finite value (before
    and after the conversion: a float64 value beyond float32's range would become inf)."""
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise InputError(f"{path}: tensor {name!r} is {t.dtype}; a prompt or classifier must be "
                             f"a floating dtype (float32, float16, bfloat16)")
    check_finite(tensors, path)
    out = {name: t.float() for name, t in tensors.items()}
    for name, t in out.items():
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"{path}: tensor {name!r} holds values beyond float32's range (largest "
                                 f"|x| = {float(tensors[name].abs().max()):.3g}), which float32 makes infinite")
    return out


def _check_head(head: dict, source, D: int, C: int | None = None) -> None:
    """A classifier is weight [C, D] and bias [C] (a bias [1] would broadcast silently)."""
    if set(head) != {"weight", "bias"}:
        raise InputError(f"{source}: classifier needs weight and bias, found {sorted(head)}")
    w, b = head["weight"], head["bias"]
    C = w.shape[0] if C is None and w.dim() == 2 else C
    if w.dim() != 2 or tuple(w.shape) != (C, D) or tuple(b.shape) != (C,):
        raise InputError(f"{source}: classifier weight is {list(w.shape)} and bias {list(b.shape)}, "
                         f"expected [C, D={D}] and [C]" + (f" with C={C}" if C is not None else ""))


def _read_tensors(adapter_dir) -> tuple[dict, Path]:
    path = Path(adapter_dir) / PEFT_WEIGHTS
    if not path.is_file():
        raise MissingFileError(f"{adapter_dir} has no {PEFT_WEIGHTS}")
    try:
        return load_file(str(path)), path
    except Exception as e:
        raise InputError(f"could not read {path}: {type(e).__name__} (corrupted or truncated?)") from None


def load_adapter(adapter_dir, config) -> Adapter:
    """Read a PEFT prefix-tuning, prompt-tuning or adaption-prompt adapter for a model with `config`."""
    cfg = read_adapter_config(adapter_dir)
    cfg_path = Path(adapter_dir) / PEFT_CONFIG
    kind = cfg["peft_type"]
    if kind not in PREFIX_TYPES + PROMPT_TYPES + ADAPTION_TYPES:
        raise InputError(f"{cfg_path}: {kind} adapters are not prompts; supported: "
                         f"{list(PREFIX_TYPES + PROMPT_TYPES + ADAPTION_TYPES)}")
    if kind in ADAPTION_TYPES:
        return _load_adaption_prompt(adapter_dir, cfg, config)
    P = cfg["num_virtual_tokens"]
    for key, (ours, letter) in peft_dims(kind, config).items():
        if cfg.get(key) is not None and cfg[key] != ours:
            raise InputError(f"{cfg_path}: {key} is {cfg[key]} but this model has {letter}={ours}: the "
                             f"adapter was made for another model")
    tensors, path = _read_tensors(adapter_dir)
    if PROMPT_KEY not in tensors:
        raise InputError(f"{path} has no {PROMPT_KEY!r} tensor (keys: {sorted(tensors)})")
    other = sorted(k for k in tensors if k != PROMPT_KEY and not k.startswith(HEAD_PREFIX))
    if other:
        raise InputError(f"{path} holds tensors this importer does not know: {other}")
    tensors = _floating(tensors, path)
    head = {k[len(HEAD_PREFIX):]: t for k, t in tensors.items() if k.startswith(HEAD_PREFIX)}
    L, D = config.num_hidden_layers, config.hidden_size
    if head:
        _check_head(head, path, D)
    table = tensors[PROMPT_KEY]
    want = (P, config.prefix_width) if kind in PREFIX_TYPES else (P, D)
    if tuple(table.shape) != want:
        spell = (f"[P={P}, {config.prefix_width_letters}={config.prefix_width}]" if kind in PREFIX_TYPES
                 else f"[P={P}, D={D}]")
        raise InputError(f"{path}: {PROMPT_KEY} is {list(table.shape)} but a {kind} adapter for this model "
                         f"needs {spell} (L={L}, D={D})")
    if kind in PREFIX_TYPES:
        method, name = KVPrefix(config, P, positions="shifted"), "prefix"
        with torch.no_grad():
            method.embedding.weight.copy_(table)  # [P, L*2*H_kv*d]: same layout as PEFT
    else:
        method, name = SoftPrompt(config, P, init=table, positions="shifted"), "soft"
    return Adapter(method, name, head or None, cfg)


def _load_adaption_prompt(adapter_dir, cfg: dict, config) -> Adapter:
    """An ADAPTION_PROMPT adapter -> GatedPrefix(P=adapter_len, adapter_layers, join as PEFT reads it
    on this architecture, positions="real"), its rows and gates copied in as they are."""
    cfg_path = Path(adapter_dir) / PEFT_CONFIG
    P, L_a, L = cfg["adapter_len"], cfg["adapter_layers"], config.num_hidden_layers
    if L_a > L:
        raise InputError(f"{cfg_path}: adapter_layers is {L_a} but this model has L={L} layers")
    names, target, join = adaption_prompt_keys(config, L_a)  # refused by name for a model PEFT cannot adapt
    if cfg.get("target_modules") not in (None, target):
        raise InputError(f"{cfg_path}: target_modules is {cfg['target_modules']!r} but PEFT adapts {target!r} "
                         f"in a {config.model_type} model")
    tensors, path = _read_tensors(adapter_dir)
    missing, unexpected = sorted(set(names) - set(tensors)), sorted(set(tensors) - set(names))
    if missing or unexpected:
        raise InputError(f"{path} does not hold the top {L_a} of L={L} layers' adaption prompts for this "
                         f"{config.model_type} model: missing {missing[:4]}, unexpected {unexpected[:4]}")
    tensors = _floating(tensors, path)
    D = config.hidden_size
    for name in names:
        want = (1, P, D) if name.endswith("prompt") else (1,)
        if tuple(tensors[name].shape) != want:
            raise InputError(f"{path}: {name} is {list(tensors[name].shape)}, expected {list(want)} "
                             f"(P={P}, D={D})")
    method = GatedPrefix(config, P, adapter_layers=L_a, join=join, positions="real")
    with torch.no_grad():
        method.rows.copy_(torch.cat([tensors[n] for n in names[0::2]]))  # [L_a, P, D]
        method.gates.copy_(torch.cat([tensors[n] for n in names[1::2]]))  # [L_a]
    return Adapter(method, "gated", None, cfg)
