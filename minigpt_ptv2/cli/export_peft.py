"""`export-peft`: turn one of our checkpoints into a PEFT adapter folder."""
from __future__ import annotations

from ._shared import add_json, add_model_dir, add_overwrite, print_json, setup_help, size_text

NAME = "export-peft"
HELP = "write a checkpoint's prompt (and head) as a PEFT adapter (adapter_config.json + safetensors)"
DESCRIPTION = """\
Write the trained prompt in PEFT's adapter format, loadable with
PeftModel.from_pretrained(base, OUT) on a transformers BertModel / BertFor*Classification.

  prefix, prefix-mlp, deep, deep-mlp -> PREFIX_TUNING (the final per-layer K/V; deep via the bridge)
  soft, ptuning-mlp, ptuning-lstm    -> PROMPT_TUNING (the final virtual-token embeddings)

The head goes along as PEFT's classifier (SEQ_CLS / TOKEN_CLS) where PEFT reads the same row as
we do; a sentence head under an input prompt does not (PEFT's classifier would pool a virtual
token), so that prompt is exported alone (FEATURE_EXTRACTION).

Positions: PEFT gives real tokens positions P..P+N-1 (our positions='shifted'). A checkpoint
trained with the default positions='real' is refused, because PEFT would compute something else
with it; retrain with `train --positions shifted`, or pass --allow-position-change to export it
anyway, knowing PEFT's outputs will differ from ours.

OUT is checked before the checkpoint is read: a folder that holds anything is refused unless
--overwrite (which replaces it whole, at once), and CHECKPOINT or --model-dir is never written."""
EPILOG = """\
examples:
  python -m minigpt_ptv2 train sst2 prefix --positions shifted --out runs/sst2-prefix
  python -m minigpt_ptv2 export-peft runs/sst2-prefix runs/sst2-prefix-peft"""


def add_arguments(p):
    setup_help(p, DESCRIPTION, EPILOG)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="folder written by `train`")
    p.add_argument("out", metavar="OUT", help="adapter folder to write (new or empty, or --overwrite)")
    p.add_argument("--allow-position-change", action="store_true",
                   help="export a positions='real' checkpoint although PEFT will shift its positions")
    p.add_argument("--no-head", action="store_true", help="export the prompt only (FEATURE_EXTRACTION)")
    add_model_dir(p)
    add_overwrite(p, "the adapter")
    add_json(p)


def run(args) -> int:
    from ..interop import export_checkpoint
    info = export_checkpoint(args.checkpoint, args.out, args.model_dir, args.allow_position_change,
                             with_head=not args.no_head, overwrite=args.overwrite)
    if args.json:
        print_json(info)
        return 0
    print(f"{info['peft_type']} adapter ({info['task_type']}, {info['note']}) from method "
          f"{info['method']}: {info['path']} ({size_text(info['bytes'])})")
    if info["positions"] != "shifted":
        print("warning: trained with positions='real'; under PEFT real tokens move to P..P+N-1, "
              "so PEFT's outputs will differ from this checkpoint's")
    return 0
