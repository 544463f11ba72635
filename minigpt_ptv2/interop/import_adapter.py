"""A PEFT prefix- or prompt-tuning adapter folder -> one of our checkpoints ("prefix" or "soft",
positions="shifted"): for an encoder, a task checkpoint with its head from the adapter, from one
of our checkpoints, or new; for a decoder, an "lm" checkpoint (as `train lm` writes) that
`generate` uses, with the decoder's own LM head."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from .adapter_files import _check_head, load_adapter
from .peft_layout import HEAD_TASK_TYPES


def _head_from_checkpoint(ckpt_dir, task: str, encoder) -> dict:
    """The task head of one of our checkpoints: read_checkpoint checks its fields, that the
    weights match the sha256 checkpoint.json records, and that they are finite."""
    from ..training.checkpoint import check_backbone, read_checkpoint
    meta, tensors = read_checkpoint(ckpt_dir)
    if meta["task"] != task:
        raise InputError(f"--head-from {ckpt_dir} holds a {meta['task']!r} head, not {task!r}")
    check_backbone(meta["backbone"], encoder, source=ckpt_dir)
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


# The token limit eval and predict use for a checkpoint that records none (training/predict.py).
DEFAULT_MAX_LENGTH = 128


def import_adapter(adapter_dir, out_dir, task: str | None = None, model_dir=None, head_from=None,
                   random_head: bool = False, allow_pooling_change: bool = False, overwrite: bool = False) -> dict:
    """A PEFT adapter folder -> our checkpoint (method "prefix" or "soft", positions="shifted").

    A PEFT adapter carries a task head only for SEQ_CLS / TOKEN_CLS. Otherwise the head comes
    from one of our checkpoints for the same task (head_from), or, only if asked (random_head),
    is initialised at random: the checkpoint then predicts nothing useful until a head is trained.
    A prompt-tuning SEQ_CLS adapter's classifier read a virtual token, not [CLS] (module
    docstring): it is refused unless replaced (head_from, random_head) or kept on purpose
    (allow_pooling_change), in which case info["pooling_changed"] is True.
    out_dir is checked before anything is read (outdir.py): a folder that holds anything is
    refused unless overwrite, which replaces it whole; one the import reads never is written.
    The checkpoint records the token limit eval and predict use: 128, or less where the prompt's
    P shifted positions leave fewer of the model's position table.
    """
    from .. import outdir
    from ..pretrained import default_model_dir
    model_dir = model_dir or default_model_dir()
    reads = {"ADAPTER": adapter_dir, "--model-dir": model_dir, "--head-from": head_from}
    with outdir.writing(out_dir, "OUT", reads, overwrite) as stage:
        info = _import(adapter_dir, stage, task, model_dir, head_from, random_head, allow_pooling_change)
    return {**info, "path": str(out_dir)}


def _import(adapter_dir, out_dir, task, model_dir, head_from, random_head, allow_pooling_change) -> dict:
    from ..models import load_pretrained
    from ..training.checkpoint import save_checkpoint
    from ..training.tasks import TASKS, build_task_model, get_task
    encoder = load_pretrained(model_dir)
    if encoder.causal:
        options = {"--task": task is not None, "--head-from": head_from is not None, "--random-head": random_head,
                   "--allow-pooling-change": allow_pooling_change}
        return _import_lm(adapter_dir, out_dir, encoder, model_dir, [o for o, given in options.items() if given])
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
    max_length = _max_length(adapter_dir, encoder, model.encoder.prompt, "[CLS], [SEP] and a token", 3)
    info = save_checkpoint(model, out_dir, task=task, method=ad.method_name, P=ad.method.num_virtual,
                           labels=t.labels, extra={"imported_from": record, "train": {"max_length": max_length}})
    return {**info, "task": task, "method": ad.method_name, "P": ad.method.num_virtual, "head": source,
            "pooling_changed": allow_pooling_change, "adapter_classifier_replaced": replaced}


def _max_length(adapter_dir, model, prompt, what: str, least: int) -> int:
    """The token limit a checkpoint records: 128, or what the P shifted positions leave of the table."""
    table, shift = model.config.max_position_embeddings, prompt.position_offset()
    if table - shift < least:
        raise InputError(f"{adapter_dir}: its {shift} virtual tokens take {shift} of the model's {table} positions "
                         f"(PEFT's positions, 'shifted'), leaving no room for {what}")
    return min(DEFAULT_MAX_LENGTH, table - shift)


def _import_lm(adapter_dir, out_dir, decoder, model_dir, options: list) -> dict:
    """A CAUSAL_LM prefix- or prompt-tuning adapter -> an "lm" checkpoint over `decoder`, recording
    model_dir as `train lm` does, so that `generate CKPT TEXT` needs nothing else. No task head: the
    decoder's LM head is the output, so the head options are refused by name."""
    from ..catalog import LM_TASK
    from ..prompts import freeze_backbone
    from ..training.checkpoint import save_checkpoint
    from ..training.lm import LMTaskModel
    name = f"a {decoder.config.model_type!r} decoder"
    if options:
        raise InputError(f"{options[0]} does not apply to {model_dir}, which holds {name}: its adapters import "
                         f"as {LM_TASK!r} checkpoints, read through the decoder's own LM head")
    ad = load_adapter(adapter_dir, decoder.config)
    kind, task_type = ad.peft_config["peft_type"], ad.peft_config.get("task_type")
    if ad.method_name not in ("prefix", "soft"):
        raise InputError(f"{adapter_dir}: peft_type {kind} is not imported into checkpoints: import-peft turns "
                         f"PREFIX_TUNING, PROMPT_TUNING and P_TUNING adapters into {LM_TASK!r} checkpoints (load "
                         f"this one with interop.load_adapter)")
    if task_type not in (None, "CAUSAL_LM"):
        raise InputError(f"{adapter_dir} is a {task_type} adapter, but {model_dir} holds {name}: an {LM_TASK!r} "
                         f"checkpoint imports a CAUSAL_LM adapter")
    decoder.attach(ad.method)
    model = LMTaskModel(decoder)
    freeze_backbone(model, ("decoder.prompt.",))
    max_length = _max_length(adapter_dir, decoder, ad.method, "a token", 1)
    record = {"peft_type": kind, "task_type": task_type, "head": None, "adapter": Path(adapter_dir).name}
    P = ad.method.num_virtual
    info = save_checkpoint(model, out_dir, task=LM_TASK, method=ad.method_name, P=P, extra={
        "imported_from": record, "train": {"max_length": max_length, "model_dir": str(Path(model_dir).resolve())}})
    return {**info, "task": LM_TASK, "method": ad.method_name, "P": P, "head": None, "pooling_changed": False,
            "adapter_classifier_replaced": False}
