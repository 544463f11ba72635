"""One of our checkpoints -> a PEFT adapter folder (the prompt, plus the head where PEFT reads the same row)."""
from __future__ import annotations

from ..errors import InputError
from .adapter_files import save_adapter
from .peft_layout import HEAD_TASK_TYPES


def export_checkpoint(ckpt_dir, out_dir, model_dir=None, allow_position_change: bool = False,
                      with_head: bool = True, overwrite: bool = False) -> dict:
    """Our checkpoint -> a PEFT adapter folder (prompt, plus the head where PEFT reads the same row).
    out_dir is checked first (outdir.py): refused if it holds anything, unless overwrite, which
    replaces it whole; never the checkpoint or model folder."""
    from .. import outdir
    from ..pretrained import default_model_dir
    model_dir = model_dir or default_model_dir()
    with outdir.writing(out_dir, "OUT", {"CHECKPOINT": ckpt_dir, "--model-dir": model_dir}, overwrite) as stage:
        info = _export(ckpt_dir, stage, model_dir, allow_position_change, with_head)
    return {**info, "path": str(out_dir)}


def _export(ckpt_dir, out_dir, model_dir, allow_position_change: bool, with_head: bool) -> dict:
    from ..training.checkpoint import load_checkpoint
    from ..training.tasks import get_task
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


