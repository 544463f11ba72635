"""`export-hf`: write a fully fine-tuned checkpoint's backbone as a HuggingFace model folder."""
from __future__ import annotations

from ._shared import add_json, add_model_dir, add_overwrite, print_json, setup_help, size_text

NAME = "export-hf"
HELP = "write a fully fine-tuned checkpoint's backbone as a HuggingFace folder (config.json + model.safetensors)"
DESCRIPTION = """\
Write the backbone a `train ... full` run fine-tuned as a HuggingFace-format folder that
transformers loads (BertModel.from_pretrained(OUT), AutoModel too) with outputs equal to ours,
plus the tokenizer files of the model it started from. The task head is not part of a BertModel
folder: it stays in the checkpoint.

Only `full` checkpoints change the backbone. Every other method trains a prompt (or a head) on a
frozen backbone, which is the model you started from: export that prompt with `export-peft`.

OUT is checked before anything is loaded: a folder that holds anything (another model, say) is
refused unless --overwrite, which replaces it whole and at once (no old tokenizer file stays
beside the new weights); CHECKPOINT and --model-dir, which the export reads, are never written."""
EPILOG = """\
examples:
  python -m minigpt_ptv2 train sst2 full --out runs/sst2-full
  python -m minigpt_ptv2 export-hf runs/sst2-full runs/sst2-full-hf"""

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def add_arguments(p):
    setup_help(p, DESCRIPTION, EPILOG)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="folder written by `train ... full`")
    p.add_argument("out", metavar="OUT", help="model folder to write (new or empty, or --overwrite)")
    add_model_dir(p)
    add_overwrite(p, "the exported model")
    add_json(p)


def export(checkpoint, out, model_dir=None, overwrite: bool = False) -> dict:
    """Checkpoint folder -> HF folder; returns what was written. `out` is checked first (outdir.py)."""
    from .. import outdir
    from ..pretrained import default_model_dir
    model_dir = model_dir or default_model_dir()
    with outdir.writing(out, "OUT", {"CHECKPOINT": checkpoint, "--model-dir": model_dir}, overwrite) as stage:
        info = _export(checkpoint, stage, model_dir)
    return {**info, "path": str(out)}


def _export(checkpoint, out, model_dir) -> dict:
    import shutil
    from pathlib import Path

    from ..errors import InputError
    from ..models import save_pretrained
    from ..training.checkpoint import load_checkpoint, read_checkpoint
    meta, _ = read_checkpoint(checkpoint)  # fail fast, before the backbone is loaded
    if meta["task"] == "lm":
        raise InputError(f"{checkpoint} holds a prompt for a decoder (train lm): the decoder is the model you "
                         f"trained it on, unchanged, and the prompt runs with `generate {checkpoint} TEXT`")
    if meta["method"] != "full":
        raise InputError(f"{checkpoint} was trained with method {meta['method']!r}, which leaves the backbone "
                         f"as it was: there is nothing new to export as a model folder; export its prompt with "
                         f"`export-peft {checkpoint} OUT`")
    model, meta = load_checkpoint(checkpoint, model_dir)
    path = save_pretrained(model.encoder, out)
    source = Path(model_dir)
    copied = [name for name in TOKENIZER_FILES if (source / name).is_file()]
    for name in copied:
        shutil.copyfile(source / name, path / name)
    files = ["config.json", "model.safetensors", *copied]
    return {"path": str(path), "task": meta["task"], "files": files,
            "bytes": sum((path / f).stat().st_size for f in files)}


def run(args) -> int:
    info = export(args.checkpoint, args.out, args.model_dir, args.overwrite)
    if args.json:
        print_json(info)
        return 0
    print(f"wrote {info['path']} ({', '.join(info['files'])}; {size_text(info['bytes'])}): the fine-tuned "
          f"backbone, loadable with transformers' BertModel.from_pretrained; the {info['task']} head stays in the checkpoint")
    return 0
