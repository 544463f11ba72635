"""PEFT adapter interop: our prompts <-> `adapter_config.json` + `adapter_model.safetensors`.

Written with json + safetensors only (the package never imports peft). PEFT 0.21 stores a
prompt-learning adapter as one tensor, "prompt_embeddings":

    PREFIX_TUNING  [P, L*2*D]  the K/V table, each row [K_0 | V_0 | K_1 | V_1 | ...] (head-major),
                               exactly our KVPrefix.embedding.weight; with an MLP, its output
    PROMPT_TUNING  [P, D]      virtual-token embeddings prepended before the embedding block,
                               exactly our SoftPrompt.weight (P_TUNING adapters hold the same thing)

and, for the SEQ_CLS / TOKEN_CLS task types, the classifier trained next to the prompt:

    base_model.classifier.weight [C, D], base_model.classifier.bias [C]   (our head's Linear)

Export writes each method's inference form (what it computes once training is over):
    prefix, prefix-mlp   -> PREFIX_TUNING   the table (the MLP's output): exact
    deep, deep-mlp       -> PREFIX_TUNING   through the bridge (hidden_to_kv): exact for real tokens
    soft                 -> PROMPT_TUNING
    ptuning-mlp/-lstm    -> PROMPT_TUNING   the prompt encoder's output: exact
    head-only, full      -> refused: there is no prompt to export
Import always gives "prefix" or "soft" (an MLP cannot be recovered from its output).

Positions (lesson 13, pitfall 1): HF models under PEFT give real tokens positions P..P+N-1, which is our
positions="shifted". A prompt trained with our default "real" (0..N-1) computes something else
inside PEFT, so export refuses it unless allow_position_change=True (the adapter is then written,
but PEFT's outputs differ from ours). Import always sets positions="shifted".

Heads (lesson 13, pitfall 2): BertForSequenceClassification pools row 0. Under a K/V prefix row 0 is the real
[CLS], so a sentence head is exported with the prompt (SEQ_CLS). Under prompt tuning row 0 is a
virtual token, so a sentence head would read the wrong row: the prompt is exported alone
(FEATURE_EXTRACTION) and the head stays in our checkpoint. Token heads apply per row, so they go
along for every method (TOKEN_CLS; PEFT's logits for the real tokens are its last N rows).
Import refuses the symmetric case: a PROMPT_TUNING / P_TUNING SEQ_CLS adapter's classifier was
trained on virtual token 0, and our sentence head pools the real [CLS], so its predictions would
change. The head then comes from head_from or random_head, or the classifier is kept on request
(allow_pooling_change=True), knowing the logits differ from PEFT's.

What an adapter folder holds is checked before anything is written: adapter_config.json's fields
by kind (num_virtual_tokens is a positive int, not "4"), its dimensions against the model, each
tensor's dtype (floating), shape and values (finite: a NaN prompt gives NaN logits, and argmax of
NaN is 0, a plausible-looking accuracy).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import InputError, MissingFileError, NonFiniteError
from ..prompts import DeepPrompt, KVPrefix, PTuningV1, SoftPrompt, hidden_to_kv
from ..validate import check_finite, read_json, require
from .checkpoint import _atomic_write

PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PROMPT_KEY = "prompt_embeddings"
HEAD_PREFIX = "base_model.classifier."  # where PEFT keeps a SEQ_CLS / TOKEN_CLS classifier
PREFIX_TYPES = ("PREFIX_TUNING",)
PROMPT_TYPES = ("PROMPT_TUNING", "P_TUNING")  # both save the final [P, D] virtual tokens
HEAD_TASK_TYPES = {"sequence": "SEQ_CLS", "token": "TOKEN_CLS"}


def prompt_to_peft(method, model=None) -> tuple[str, torch.Tensor]:
    """(peft_type, prompt_embeddings) for a prompt method, in its inference form.

    model: the model the method is attached to; only deep hidden-state prompts need it (the
    bridge turns them into K/V with that model's W_K, W_V).
    """
    with torch.no_grad():
        if isinstance(method, KVPrefix):
            return "PREFIX_TUNING", method.flat().detach()  # [P, L*2*D]
        if isinstance(method, DeepPrompt):
            if model is None:
                raise InputError("exporting a deep hidden-state prompt needs the model it runs in "
                                 "(its keys and values come from the model's W_K and W_V)")
            was_training = model.training
            model.eval()
            table = hidden_to_kv(model, method).flat().detach()  # [P, L*2*D]
            model.train(was_training)
            return "PREFIX_TUNING", table
        if isinstance(method, PTuningV1):
            return "PROMPT_TUNING", method.to_soft_prompt().weight.detach()  # [P, D]
        if isinstance(method, SoftPrompt):
            return "PROMPT_TUNING", method.weight.detach()  # [P, D]
    raise InputError(f"{type(method).__name__} has no PEFT adapter equivalent")


def adapter_config(peft_type: str, task_type: str, config, P: int, head: bool = False,
                   base_model: str | None = None) -> dict:
    """The adapter_config.json PEFT needs (it fills in the rest from the base model)."""
    cfg = {"peft_type": peft_type, "task_type": task_type, "num_virtual_tokens": P,
           "num_layers": config.num_hidden_layers, "token_dim": config.hidden_size,
           "num_attention_heads": config.num_attention_heads, "num_transformer_submodules": 1,
           "inference_mode": True, "base_model_name_or_path": base_model}
    if peft_type == "PREFIX_TUNING":
        cfg.update(prefix_projection=False, encoder_hidden_size=config.hidden_size)
    if head:
        cfg["modules_to_save"] = ["classifier"]
    return cfg


def save_adapter(out_dir, method, model=None, task_type: str | None = None, head: dict | None = None,
                 allow_position_change: bool = False, base_model: str | None = None) -> dict:
    """Write a PEFT adapter folder for `method`; returns {'path', 'bytes', 'peft_type', 'task_type'}.

    head: optional {"weight": [C, D], "bias": [C]} saved as PEFT's classifier (needs SEQ_CLS or
    TOKEN_CLS). task_type defaults to FEATURE_EXTRACTION (encoder) or CAUSAL_LM (decoder).
    """
    config = method.config
    if method.positions != "shifted" and not allow_position_change:
        raise InputError(
            f"this prompt was trained with positions={method.positions!r} (real tokens at 0..N-1), but "
            f"PEFT gives real tokens positions P..P+N-1, so the adapter would compute something else; "
            f"train with positions='shifted' (train --positions shifted), or pass "
            f"--allow-position-change to export anyway")
    if not bool(method.virtual_keep.all()):
        raise InputError("this prompt masks some of its virtual entries (virtual_keep); PEFT cannot")
    peft_type, table = prompt_to_peft(method, model)
    task_type = task_type or ("CAUSAL_LM" if config.model_type == "gpt2" else "FEATURE_EXTRACTION")
    if head is not None and task_type not in HEAD_TASK_TYPES.values():
        raise InputError(f"a classifier head needs task_type SEQ_CLS or TOKEN_CLS, got {task_type}")
    tensors = {PROMPT_KEY: table.float().cpu().contiguous()}
    for k, v in (head or {}).items():
        tensors[HEAD_PREFIX + k] = v.detach().float().cpu().contiguous()
    for name, t in tensors.items():  # never write a broken adapter
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"cannot export this {type(method).__name__}: its tensor {name!r} holds NaN "
                                 f"or infinite values (trained by a run that diverged?)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = adapter_config(peft_type, task_type, config, method.num_virtual, head is not None, base_model)
    _atomic_write(out / PEFT_WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    _atomic_write(out / PEFT_CONFIG, lambda p: p.write_text(json.dumps(cfg, indent=2)))
    size = (out / PEFT_WEIGHTS).stat().st_size + (out / PEFT_CONFIG).stat().st_size
    return {"path": str(out), "bytes": size, "peft_type": peft_type, "task_type": task_type}


@dataclass
class Adapter:
    """What a PEFT adapter folder holds, turned into our objects."""
    method: object  # KVPrefix or SoftPrompt, positions="shifted"
    method_name: str  # "prefix" | "soft"
    head: dict | None  # {"weight": [C, D], "bias": [C]} or None
    peft_config: dict


def read_adapter_config(adapter_dir) -> dict:
    """adapter_config.json, its fields checked by kind (a null optional field counts as absent)."""
    path = Path(adapter_dir) / PEFT_CONFIG
    if not path.is_file():
        raise MissingFileError(f"{adapter_dir} is not a PEFT adapter folder: no {PEFT_CONFIG} in it")
    cfg = read_json(path)
    for key in ("peft_type", "num_virtual_tokens"):
        if key not in cfg:
            raise InputError(f"{path} has no {key!r}: not a prompt-learning adapter")
    present = {k: v for k, v in cfg.items() if v is not None}
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


def load_adapter(adapter_dir, config) -> Adapter:
    """Read a PEFT prefix- or prompt-tuning adapter for a model with `config`."""
    cfg = read_adapter_config(adapter_dir)
    cfg_path = Path(adapter_dir) / PEFT_CONFIG
    kind, P = cfg["peft_type"], cfg["num_virtual_tokens"]
    if kind not in PREFIX_TYPES + PROMPT_TYPES:
        raise InputError(f"{cfg_path}: {kind} adapters are not prompts; supported: "
                         f"{list(PREFIX_TYPES + PROMPT_TYPES)}")
    for key, letter, ours in (("num_layers", "L", config.num_hidden_layers), ("token_dim", "D", config.hidden_size),
                              ("num_attention_heads", "H", config.num_attention_heads)):
        if cfg.get(key) is not None and cfg[key] != ours:
            raise InputError(f"{cfg_path}: {key} is {cfg[key]} but this model has {letter}={ours}: the "
                             f"adapter was made for another model")
    path = Path(adapter_dir) / PEFT_WEIGHTS
    if not path.is_file():
        raise MissingFileError(f"{adapter_dir} has no {PEFT_WEIGHTS}")
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise InputError(f"could not read {path}: {type(e).__name__} (corrupted or truncated?)") from None
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
    want = (P, L * 2 * D) if kind in PREFIX_TYPES else (P, D)
    if tuple(table.shape) != want:
        spell = f"[P={P}, L*2*D={L * 2 * D}]" if kind in PREFIX_TYPES else f"[P={P}, D={D}]"
        raise InputError(f"{path}: {PROMPT_KEY} is {list(table.shape)} but a {kind} adapter for this model "
                         f"needs {spell} (L={L}, D={D})")
    if kind in PREFIX_TYPES:
        method, name = KVPrefix(config, P, positions="shifted"), "prefix"
        with torch.no_grad():
            method.embedding.weight.copy_(table)  # [P, L*2*D]: same layout as PEFT
    else:
        method, name = SoftPrompt(config, P, init=table, positions="shifted"), "soft"
    return Adapter(method, name, head or None, cfg)


# ------------------------------------------------------------- our checkpoints <-> PEFT adapters

def export_checkpoint(ckpt_dir, out_dir, model_dir=None, allow_position_change: bool = False,
                      with_head: bool = True) -> dict:
    """Our checkpoint -> a PEFT adapter folder (prompt, plus the head where PEFT reads the same row)."""
    from ..pretrained import default_model_dir
    from .checkpoint import load_checkpoint
    from .tasks import get_task
    model_dir = model_dir or default_model_dir()
    model, meta = load_checkpoint(ckpt_dir, model_dir)
    if model.encoder.prompt is None:
        raise InputError(f"{ckpt_dir} was trained with method {meta['method']!r}: it has no prompt, "
                         f"so there is no PEFT prompt adapter to export")
    task = get_task(meta["task"])
    prompt = model.encoder.prompt
    head, task_type, note = None, "FEATURE_EXTRACTION", "prompt only (--no-head)"
    if with_head and (task.kind == "token" or prompt.kind in ("kv", "hidden")):
        linear = model.heads[task.name].classifier
        head = {"weight": linear.weight, "bias": linear.bias}
        task_type, note = HEAD_TASK_TYPES[task.kind], "prompt + classifier head"
    elif with_head:
        note = ("prompt only: PEFT's sequence classifier would pool a virtual token, not [CLS] "
                "(lesson 13, pitfall 2); the head stays in the checkpoint (import-peft --head-from it)")
    info = save_adapter(out_dir, prompt, model.encoder, task_type, head, allow_position_change,
                        base_model=str(model_dir))
    return {**info, "method": meta["method"], "positions": prompt.positions, "head": head is not None,
            "note": note}


def _head_from_checkpoint(ckpt_dir, task: str, encoder) -> dict:
    """The task head of one of our checkpoints: read_checkpoint checks its fields, that the
    weights match the sha256 checkpoint.json records, and that they are finite."""
    from .checkpoint import check_backbone, read_checkpoint
    meta, tensors = read_checkpoint(ckpt_dir)
    if meta["task"] != task:
        raise InputError(f"--head-from {ckpt_dir} holds a {meta['task']!r} head, not {task!r}")
    check_backbone(meta["backbone"], encoder)
    names = {k: f"heads.{task}.classifier.{k}" for k in ("weight", "bias")}
    missing = [n for n in names.values() if n not in tensors]
    if missing:
        raise InputError(f"--head-from {ckpt_dir} has no {missing[0]!r}: not a checkpoint with a {task} head")
    return {k: tensors[n].float() for k, n in names.items()}


def _pooling_refusal(adapter_dir, kind: str, task: str) -> str:
    return (f"{adapter_dir} is a {kind} SEQ_CLS adapter: PEFT trained its classifier on the pooled row 0, "
            f"which under prompt tuning is virtual token 0, but this package's {task} head pools the real "
            f"[CLS] (lesson 13, pitfall 2), so its predictions would change. Take the head from one of our "
            f"{task} checkpoints (--head-from CHECKPOINT) or start an untrained one (--random-head), or keep "
            f"PEFT's classifier with --allow-pooling-change, knowing the logits will differ from PEFT's")


def import_adapter(adapter_dir, out_dir, task: str | None = None, model_dir=None, head_from=None,
                   random_head: bool = False, allow_pooling_change: bool = False) -> dict:
    """A PEFT adapter folder -> our checkpoint (method "prefix" or "soft", positions="shifted").

    A PEFT adapter carries a task head only for SEQ_CLS / TOKEN_CLS. Otherwise the head comes
    from one of our checkpoints for the same task (head_from), or, only if asked (random_head),
    is initialised at random: the checkpoint then predicts nothing useful until a head is trained.
    A prompt-tuning SEQ_CLS adapter's classifier read a virtual token, not [CLS] (module
    docstring): it is refused unless replaced (head_from, random_head) or kept on purpose
    (allow_pooling_change), in which case info["pooling_changed"] is True.
    """
    from ..encoder import Encoder
    from ..pretrained import default_model_dir
    from .checkpoint import save_checkpoint
    from .tasks import TASKS, build_task_model, get_task
    encoder = Encoder.from_pretrained(model_dir or default_model_dir())
    ad = load_adapter(adapter_dir, encoder.config)
    task_type = ad.peft_config.get("task_type")
    kind = ad.peft_config["peft_type"]
    by_type = {HEAD_TASK_TYPES[t.kind]: name for name, t in TASKS.items()}  # SEQ_CLS -> sst2, ...
    if task is None:
        if task_type not in by_type:
            raise InputError(f"the adapter's task_type is {task_type!r}, which names no task: pass --task "
                             f"({' or '.join(sorted(TASKS))})")
        task = by_type[task_type]
    t = get_task(task)
    if ad.head is not None and task_type in by_type and by_type[task_type] != task:
        raise InputError(f"{adapter_dir} is a {task_type} adapter (a {get_task(by_type[task_type]).kind} head) but "
                         f"{task} needs a {t.kind} head")
    # under prompt tuning, PEFT's sentence classifier read virtual token 0; ours reads [CLS]
    pools_virtual = ad.head is not None and ad.method_name == "soft" and t.kind == "sequence"
    replaced = pools_virtual and (head_from is not None or random_head)
    if allow_pooling_change and (not pools_virtual or replaced):
        raise InputError("--allow-pooling-change keeps the classifier of a PROMPT_TUNING / P_TUNING "
                         "SEQ_CLS adapter; " + ("it cannot go with --head-from or --random-head" if replaced
                                                else f"this {kind} {task_type} adapter has no such classifier"))
    if pools_virtual and not (replaced or allow_pooling_change):
        raise InputError(_pooling_refusal(adapter_dir, kind, task))
    sources = [s for s, given in (("adapter", ad.head is not None and not replaced),
                                  ("--head-from", head_from is not None),
                                  ("--random-head", random_head)) if given]
    if len(sources) != 1:
        raise InputError(
            f"the {task} head must come from exactly one place, got {sources or 'none'}: this adapter "
            + ("has a classifier; drop --head-from/--random-head" if ad.head is not None and not pools_virtual
               else "needs one of --head-from and --random-head" if pools_virtual else
               f"(task_type {task_type}) has no classifier; pass --head-from CHECKPOINT (a {task} "
               f"checkpoint of ours) or --random-head (an untrained head)"))
    model = build_task_model(task, ad.method_name, ad.method.num_virtual, encoder=encoder, positions="shifted")
    linear = model.heads[task].classifier
    head = ad.head if sources[0] == "adapter" else (
        _head_from_checkpoint(head_from, task, encoder) if head_from is not None else None)
    if head is not None:
        _check_head(head, "the adapter's classifier" if sources[0] == "adapter" else f"--head-from {head_from}",
                    linear.in_features, len(t.labels))
    with torch.no_grad():
        model.encoder.prompt.load_state_dict(ad.method.state_dict())
        if head is not None:
            linear.weight.copy_(head["weight"])
            linear.bias.copy_(head["bias"])
    source = {"adapter": "adapter", "--head-from": "checkpoint", "--random-head": "random"}[sources[0]]
    record = {"peft_type": kind, "task_type": task_type, "head": source, "adapter": Path(adapter_dir).name}
    if allow_pooling_change:
        record["pooling_changed"] = True  # PEFT's classifier read virtual token 0; ours reads [CLS]
    if replaced:
        record["adapter_classifier"] = "replaced"
    info = save_checkpoint(model, out_dir, task=task, method=ad.method_name, P=ad.method.num_virtual,
                           labels=t.labels, extra={"imported_from": record})
    return {**info, "task": task, "method": ad.method_name, "P": ad.method.num_virtual, "head": source,
            "pooling_changed": allow_pooling_change, "adapter_classifier_replaced": replaced}
