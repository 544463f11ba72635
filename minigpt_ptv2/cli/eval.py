"""`eval`: score a saved checkpoint on a labelled split (dev accuracy for SST-2, entity F1 for CoNLL)."""
from __future__ import annotations

import sys

from ._shared import (add_allow_other_backbone, add_device, add_json, add_model_dir, batch_size, check_device,
                      positive_int, print_json, setup_help, warn_about_import)

NAME = "eval"
HELP = "evaluate a checkpoint: SST-2 accuracy or CoNLL-2003 entity F1"
DESCRIPTION = """\
Rebuild the model a checkpoint was trained as (pretrained backbone + prompt + head), check the
backbone is the same one, and score it on a labelled split. The token length limit (--max-length)
defaults to the one used in training. CoNLL scores every word: a sentence longer than the limit
is read in overlapping windows (the output says how many). An SST-2 sentence longer than the
limit is classified on its first tokens, as in training, and a warning says how many were cut."""
EPILOG = """\
examples:
  python -m minigpt_ptv2 eval runs/sst2-prefix
  python -m minigpt_ptv2 eval runs/conll-prefix --split test --json"""


def add_arguments(p):
    setup_help(p, DESCRIPTION, EPILOG)
    p.add_argument("checkpoint", help="folder written by `train` or `import-peft`")
    p.add_argument("--split", choices=["dev", "test"], default="dev",
                   help="labelled split to score (SST-2 ships no test labels: dev only)")
    p.add_argument("--max-examples", type=positive_int, default=None, help="score only the first N examples")
    p.add_argument("--batch-size", type=batch_size, default=64, help="examples per forward pass")
    p.add_argument("--max-length", type=positive_int, default=None,
                   help="max tokens per example (default: the checkpoint's training value)")
    p.add_argument("--data-dir", default=None, help="folder holding sst2/ and conll2003/")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (none under --json either)")
    add_model_dir(p)
    add_allow_other_backbone(p)
    add_device(p)
    add_json(p)


def run(args) -> int:
    from ..core.checks import check_max_length
    from ..data import WordPiece
    from ..pretrained import default_model_dir
    from ..training import evaluate, get_task, load_checkpoint
    check_device(args.device)
    if args.max_length is not None:
        check_max_length(args.max_length, name="--max-length")  # before the (slow) model load
    model_dir = args.model_dir or default_model_dir()
    model, meta = load_checkpoint(args.checkpoint, model_dir, args.device,
                                  allow_other_backbone=args.allow_other_backbone)
    task = get_task(meta["task"])
    if args.max_length is None:  # what the model can read, before the data is looked for
        max_length = check_max_length(meta.get("train", {}).get("max_length", 128), model.encoder,
                                      "the checkpoint's max_length")
    else:
        max_length = check_max_length(args.max_length, model.encoder, "--max-length")
    examples = task.load(args.split, args.data_dir, args.max_examples)
    loader = task.batches(examples, WordPiece.from_model_dir(model_dir), batch_size=args.batch_size,
                          shuffle=False, max_length=max_length)
    scores = evaluate(model, loader, task, examples, args.device,
                      show_progress=not (args.json or args.no_progress))
    warn_about_import(meta)
    result = {"task": task.name, "method": meta["method"], "P": meta["P"], "split": args.split,
              "examples": len(examples), "max_length": max_length, "metric": task.metric, **scores}
    if scores.get("truncated"):
        print(f"warning: {scores['truncated']} of {len(examples)} examples are longer than max_length={max_length} "
              f"tokens and were classified on their first {max_length - 2} sub-tokens", file=sys.stderr)
    if args.json:
        print_json(result)
    else:
        extra = (f" (precision {scores['precision']:.4f}, recall {scores['recall']:.4f})"
                 if task.metric == "f1" else "")
        if scores.get("long_sentences"):
            extra += (f"; every word scored: {scores['long_sentences']} sentences longer than max_length="
                      f"{max_length} read in overlapping windows ({scores['windows']} windows in all)")
        print(f"{task.name} {args.split} {task.metric}: {scores[task.metric]:.4f}{extra} on "
              f"{len(examples)} examples ({meta['method']}, P={meta['P']})")
    return 0
