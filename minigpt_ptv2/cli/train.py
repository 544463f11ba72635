"""`train`: train a prompt (or a head, or the whole model) on a real task and save a tiny checkpoint."""
from __future__ import annotations

from ..catalog import DEFAULT_LR, POSITIONS, TASKS, TRAIN_METHODS
from ..errors import InputError
from ._shared import (add_device, add_json, add_model_dir, check_device, positive_float, positive_int,
                      print_json, setup_help, size_text)

NAME = "train"
HELP = "train a prompt method on SST-2 or CoNLL-2003 and save a checkpoint of what was trained"
DESCRIPTION = """\
Train METHOD on TASK over the frozen pretrained MiniLM, evaluate on the dev set after every
epoch, and save only what was trained (prompt + task head) to --out: a few KiB to a few MiB.

Methods: soft, ptuning-mlp, ptuning-lstm (input prompts), deep, deep-mlp (hidden-state prompts),
prefix, prefix-mlp (K/V prefixes, P-Tuning v2), and the references head-only and full.
Runs unchanged under torchrun, one process per device (--batch-size stays the global batch):
sst2 then trains what one process trains; conll only approximately, since each process averages
the loss over its own number of labelled tokens."""
EPILOG = """\
examples:
  python -m minigpt_ptv2 train sst2 prefix --P 16 --epochs 1 --max-train 2000 --out runs/sst2-prefix
  python -m minigpt_ptv2 train conll deep --P 8 --max-train 500 --no-progress --json
  torchrun --nproc_per_node=2 -m minigpt_ptv2 train sst2 prefix --batch-size 32 --out runs/ddp

default learning rates: """ + ", ".join(f"{m} {lr:g}" for m, lr in DEFAULT_LR.items())


def add_arguments(p):
    setup_help(p, DESCRIPTION, EPILOG)
    p.add_argument("task", choices=sorted(TASKS), help="sst2 (sentence sentiment) or conll (NER tags)")
    p.add_argument("method", choices=list(TRAIN_METHODS), help="what to train")
    p.add_argument("--P", type=positive_int, default=16, help="prompt / prefix length (prompt methods)")
    p.add_argument("--epochs", type=positive_int, default=3, help="passes over the training set")
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default: per method, below)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="global batch size (split evenly over the processes under torchrun)")
    p.add_argument("--max-train", type=positive_int, default=None, help="use only the first N training examples")
    p.add_argument("--max-dev", type=positive_int, default=None, help="evaluate on the first N dev examples")
    p.add_argument("--max-length", type=positive_int, default=128, help="max tokens per example, [CLS]/[SEP] included")
    p.add_argument("--seed", type=int, default=0, help="seed for the prompt/head init, data order and dropout")
    p.add_argument("--positions", choices=POSITIONS, default="real",
                   help="real tokens at 0..N-1 (real) or at P..P+N-1 as in HF/PEFT (shifted; needed "
                        "for an exact export-peft)")
    p.add_argument("--no-dropout", action="store_true",
                   help="turn off every dropout (deterministic: e.g. to compare 1 and 2 processes)")
    p.add_argument("--out", default=None, help="checkpoint folder (default: runs/TASK-METHOD)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding sst2/ and conll2003/ (default: $MINIGPT_PTV2_DATA or shared/data)")
    add_model_dir(p)
    add_device(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")
    add_json(p)


def run(args) -> int:
    from ..training import distributed
    from ..training.run import train_task
    check_device(args.device)
    if args.max_length < 3:
        raise InputError(f"--max-length must leave room for [CLS], [SEP] and a token, got {args.max_length}")
    method_kwargs = {"positions": args.positions} if args.method not in ("head-only", "full") else {}
    out = args.out or f"runs/{args.task}-{args.method}"
    info, device = distributed.setup(args.device)
    try:
        summary, _ = train_task(args.task, args.method, P=args.P, epochs=args.epochs, lr=args.lr,
                                batch_size=args.batch_size, max_train=args.max_train, max_dev=args.max_dev,
                                seed=args.seed, out_dir=out, data_dir=args.data_dir, model_dir=args.model_dir,
                                device=device, max_length=args.max_length,
                                progress=not (args.no_progress or args.json), method_kwargs=method_kwargs,
                                dropout=not args.no_dropout)
    finally:
        distributed.teardown()
    if not info.is_main:
        return 0
    if args.json:
        print_json(summary)
        return 0
    print(describe(summary))
    return 0


def describe(s: dict) -> str:
    last = s["history"][-1]
    metric = "accuracy" if "accuracy" in last else "f1"
    share = 100.0 * s["trainable"] / s["backbone"]
    lines = [f"{s['task']} / {s['method']} (P={s['P']}): dev {metric} {last[metric]:.4f} after "
             f"{last['epoch']} epoch(s), train loss {last['train_loss']:.4f}, {s['seconds']:.1f} s",
             f"trained {s['trainable']:,} parameters ({share:.3f}% of the {s['backbone']:,}-parameter backbone)"]
    if "distributed" in s:
        d = s["distributed"]
        lines.append(f"{d['world_size']} processes, largest parameter difference between ranks: "
                     f"{d['max_rank_difference']:.3g}")
    ck = s["checkpoint"]
    lines.append(f"checkpoint: {ck['path']} ({size_text(ck['bytes'])})")
    return "\n".join(lines)
