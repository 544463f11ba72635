"""`predict`: labels for new sentences (SST-2) or word/tag pairs (CoNLL-2003) from a checkpoint."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError, MissingFileError
from ._shared import add_device, add_json, add_model_dir, check_device, positive_int, print_json, setup_help

NAME = "predict"
HELP = "predict labels (SST-2) or entity tags (CoNLL) for new text with a checkpoint"
DESCRIPTION = """\
Read sentences from the arguments, from --file, or from standard input (one per line) and print
one prediction per sentence: the label and its probability for SST-2, word/tag pairs for CoNLL
(sentences are split into words on whitespace)."""
EPILOG = """\
examples:
  python -m minigpt_ptv2 predict runs/sst2-prefix "a gorgeous, witty film" "dull and overlong"
  echo "John Smith works for Siemens in Berlin" | python -m minigpt_ptv2 predict runs/conll-prefix
  python -m minigpt_ptv2 predict runs/sst2-prefix --file reviews.txt --json"""


def add_arguments(p):
    setup_help(p, DESCRIPTION, EPILOG)
    p.add_argument("checkpoint", help="folder written by `train` or `import-peft`")
    p.add_argument("text", nargs="*", help="sentences (default: read --file or standard input)")
    p.add_argument("--file", default=None, help="read sentences from this file, one per line ('-' = stdin)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="sentences per forward pass")
    p.add_argument("--max-length", type=positive_int, default=None,
                   help="max tokens per sentence (default: the checkpoint's training value)")
    add_model_dir(p)
    add_device(p)
    add_json(p)


def read_texts(args) -> list[str]:
    if args.text and args.file:
        raise InputError("give sentences as arguments or with --file, not both")
    if args.text:
        lines = args.text
    elif args.file and args.file != "-":
        path = Path(args.file)
        if not path.is_file():
            raise MissingFileError(f"--file {path} does not exist")
        lines = path.read_text(encoding="utf-8").splitlines()
    else:
        if sys.stdin.isatty() and args.file != "-":
            raise InputError("no sentences: pass them as arguments, with --file, or on standard input")
        lines = sys.stdin.read().splitlines()
    texts = [t.strip() for t in lines if t.strip()]
    if not texts:
        raise InputError("no sentences to predict (all lines were empty)")
    return texts


def run(args) -> int:
    from ..training.predict import Predictor
    check_device(args.device)
    texts = read_texts(args)
    predictor = Predictor.from_checkpoint(args.checkpoint, args.model_dir, args.device, args.max_length)
    if predictor.head_is_random:
        print("warning: this checkpoint's head was initialised at random on import (untrained)", file=sys.stderr)
    results = predictor.predict(texts, args.batch_size)
    if args.json:
        print_json({"task": predictor.task.name, "predictions": results})
        return 0
    for r in results:
        if "label" in r:
            print(f"{r['label']}\t{r['score']:.4f}\t{r['text']}")
        else:
            print(" ".join(f"{w}/{t}" for w, t in r["tags"]))
    return 0
