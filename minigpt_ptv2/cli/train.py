"""`train`: train a prompt (or a head, or the whole model) on a real task and save a tiny checkpoint."""
from __future__ import annotations

import argparse
import sys

from ..catalog import (BATCHINGS, INITS, LM_LR, RECIPES, LM_TASK, METHODS, POSITIONS, PRECISIONS, REFERENCE_METHODS,
                       TRAIN_METHODS, TRAIN_TASKS)
from pathlib import Path

from ..errors import InputError, MissingFileError
from ._shared import (add_allow_other_backbone, add_device, add_json, add_model_dir, batch_size, check_device,
                      diverge_factor, epochs, fraction, positive_float, positive_int, print_json, prompt_length, seed,
                      setup_help, size_text)

NAME = "train"
HELP = ("train a prompt method on SST-2 or CoNLL-2003 (or a decoder's prompt on a text file) and save a "
        "checkpoint of what was trained")
DESCRIPTION = """\
Train METHOD on TASK over the frozen pretrained MiniLM, evaluate on the dev set after every
epoch, and save only what was trained (prompt + task head) to --out: a few KiB to a few MiB.
The checkpoint holds the epoch with the best dev metric; --out is locked while the run writes it.
After every epoch a resume state goes to --out/resume/: `train --resume DIR` continues a run
that was interrupted (Ctrl-C, a killed job), ending exactly where an uninterrupted run would.
A run whose loss climbs far above where it started stops (--diverge-factor) without touching
the best checkpoint.

Methods:
""" + "".join(f"  {name:<13} {about}\n" for name, about in
              [*((n, m.about) for n, m in METHODS.items()), *REFERENCE_METHODS.items()]) + """
Runs unchanged under torchrun, one process per device (--batch-size stays the global batch):
sst2 then trains what one process trains; conll only approximately, since each process averages
the loss over its own number of labelled tokens.

Task lm: a prompt method on a frozen decoder (--model-dir: a GPT-2 or LLaMA-style HF folder with
config.json, model.safetensors and tokenizer.json) learns to lower the next-token loss on the
plain UTF-8 text of --text-file. The text is cut into blocks of --max-length tokens; the last
10% of the blocks (at least one) are held out, and their perplexity after every epoch picks the
epoch the checkpoint keeps (lower is better). The checkpoint holds the prompt only; `generate`
runs it."""
EPILOG = """\
examples:
  python -m minigpt_ptv2 train sst2 prefix --P 16 --epochs 1 --max-train 2000 --out runs/sst2-prefix
  python -m minigpt_ptv2 train conll deep --P 8 --max-train 500 --no-progress --json
  python -m minigpt_ptv2 train --resume runs/sst2-prefix      # continue an interrupted run
  python -m minigpt_ptv2 train conll prefix --max-length 256 --grad-checkpoint --precision bf16
  torchrun --nproc_per_node=2 -m minigpt_ptv2 train sst2 prefix --batch-size 32 --out runs/ddp
  python -m minigpt_ptv2 train lm prefix --text-file notes.txt --model-dir path/to/gpt2 --out runs/lm

recipes (peak lr / warm-up share / init; prefix, deep and soft chosen on held-out training data by
benchmarks/recipe.py, the others as they were):
""" + "\n".join(f"  {m:<13}{r.lr:<8g}{r.warmup:<6g}{r.init}" for m, r in RECIPES.items()) + """
train lm keeps its own peak lr (warm-up 0.1, from noise): """ + ", ".join(f"{m} {lr:g}" for m, lr in LM_LR.items())


class Given(argparse.Action):
    """Stores the value and remembers that it was typed: `--resume` takes every argument of the
    interrupted run from its saved state and refuses only those typed with another value."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        if values is not None or self.nargs == 0:  # an absent optional positional arrives as None
            namespace.given = getattr(namespace, "given", set()) | {self.dest}


def flag(p, name: str, help: str) -> None:
    p.add_argument(name, action=Given, nargs=0, const=True, default=False, help=help)


def add_arguments(p):
    setup_help(p, DESCRIPTION, EPILOG)
    p.add_argument("task", nargs="?", action=Given, choices=sorted(TRAIN_TASKS),
                   help="sst2 (sentence sentiment), conll (NER tags) or lm (a decoder on --text-file)")
    p.add_argument("method", nargs="?", action=Given, choices=list(TRAIN_METHODS), help="what to train")
    p.add_argument("--P", type=prompt_length, default=16, action=Given, help="prompt / prefix length (prompt methods)")
    p.add_argument("--epochs", type=epochs, default=3, action=Given, help="passes over the training set")
    p.add_argument("--lr", type=positive_float, default=None, action=Given,
                   help="peak learning rate (default: the method's recipe, below)")
    p.add_argument("--warmup", type=fraction, default=None, action=Given,
                   help="share of the steps spent rising linearly to the peak lr, then linear decay to 0 "
                        "(default: the method's recipe, below)")
    p.add_argument("--init", choices=INITS, default=None, action=Given,
                   help="tokens: the prompt starts as the first P word pieces of the training set, as the "
                        "frozen model reads them (its embeddings, layer inputs or keys and values); random: "
                        "from noise (default: the method's recipe, below)")
    p.add_argument("--batch-size", type=batch_size, default=32, action=Given,
                   help="global batch size (split evenly over the processes under torchrun)")
    p.add_argument("--batches", choices=BATCHINGS, default=BATCHINGS[0], action=Given,
                   help="grouped (default): each batch drawn from rows of similar length, so it pads little "
                        "(an epoch in about 0.4 of the time on SST-2 and CoNLL, every example still seen once "
                        "an epoch; a token task's loss then weighs every labelled token alike); "
                        "random: a plain shuffle, each batch's loss its own mean")
    p.add_argument("--max-train", type=positive_int, default=None, action=Given,
                   help="use only the first N training examples")
    p.add_argument("--max-dev", type=positive_int, default=None, action=Given,
                   help="evaluate on the first N dev examples")
    p.add_argument("--holdout", type=positive_int, default=None, action=Given, metavar="N",
                   help="score the N training examples after the first --max-train instead of dev: to choose "
                        "settings without looking at dev (benchmarks/recipe.py)")
    p.add_argument("--max-length", type=positive_int, default=128, action=Given,
                   help="max tokens per example, [CLS]/[SEP] included (lm: tokens per block of the text)")
    p.add_argument("--seed", type=seed, default=0, action=Given,
                   help="seed for the prompt/head init, data order and dropout")
    p.add_argument("--positions", choices=POSITIONS, default="real", action=Given,
                   help="real tokens at 0..N-1 (real) or at P..P+N-1 as in HF/PEFT (shifted; needed "
                        "for an exact export-peft)")
    flag(p, "--no-dropout", "turn off every dropout (deterministic: e.g. to compare 1 and 2 processes)")
    p.add_argument("--diverge-factor", type=diverge_factor, default=3.0, action=Given,
                   help="stop when the mean loss of the last 10 steps exceeds this times that of the first "
                        "10 (0 = never)")
    flag(p, "--grad-checkpoint", "recompute each layer's activations in the backward pass instead of keeping "
                                 "them: far less memory for long inputs or large batches (a quarter of it "
                                 "at B=32, N=256), about 1.3x the time per step, the same gradients; "
                                 "a --resume may add it")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", action=Given,
                   help="fp32: everything in float32 (default); bf16: forward passes under bfloat16 autocast "
                        "(fp32's range, fewer digits; no loss scaling); fp16: float16 autocast with a loss "
                        "scaler that skips a step whose gradients overflow (for GPUs: on a CPU it is slow, "
                        "use it to check a run). The prompt and head stay float32 either way")
    p.add_argument("--text-file", default=None, action=Given, metavar="FILE",
                   help="lm: the UTF-8 text to train on (its last 10%% held out for the perplexity)")
    p.add_argument("--out", default=None, help="checkpoint folder (default: runs/TASK-METHOD)")
    p.add_argument("--overwrite", action="store_true",
                   help="let this run replace the checkpoint (and interrupted run) --out holds, at the end of its "
                        "first epoch: stopped before, it leaves them as they were. Files that are not a run's own "
                        "are never deleted, and a folder the run reads is never written")
    p.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the interrupted run in DIR with the arguments it was started with")
    p.add_argument("--data-dir", default=None,
                   help="folder holding sst2/ and conll2003/ (default: $MINIGPT_PTV2_DATA or shared/data)")
    add_model_dir(p, "HuggingFace-format folder: a BERT for sst2 / conll (default: $MINIGPT_PTV2_MODEL or the "
                     "shipped MiniLM); for lm a GPT-2 or LLaMA-style decoder with its tokenizer.json (required)")
    add_allow_other_backbone(p, "--resume")
    add_device(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")
    add_json(p)


def run_arguments(args) -> dict:
    """train_task's arguments: the typed ones, and under --resume the saved run's for the rest."""
    given = getattr(args, "given", set())
    typed = {"task": args.task, "method": args.method, "P": args.P, "epochs": args.epochs, "lr": args.lr,
             "batch_size": args.batch_size, "max_train": args.max_train, "max_dev": args.max_dev,
             "max_length": args.max_length, "seed": args.seed, "dropout": not args.no_dropout,
             "diverge_factor": args.diverge_factor, "grad_checkpoint": args.grad_checkpoint,
             "precision": args.precision, "warmup": args.warmup, "init": args.init, "holdout": args.holdout,
             "batches": args.batches}
    if args.resume is None:
        if args.allow_other_backbone:
            raise InputError("--allow-other-backbone goes with --resume (continuing a run on another backbone): "
                             "a new run records the backbone it trains on")
        if args.task is None or args.method is None:
            raise InputError("train needs TASK and METHOD (e.g. train sst2 prefix), or --resume DIR")
        typed["method_kwargs"] = {"positions": args.positions} if args.method not in ("head-only", "full") else {}
        if args.task == LM_TASK:
            return lm_arguments(args, typed, given)
        return {**_no_text_file(args, typed), "model_dir": args.model_dir, "data_dir": args.data_dir}
    from ..training.run import saved_arguments
    if args.out is not None and args.out != args.resume:
        raise InputError(f"--resume {args.resume} continues the run in that folder: drop --out {args.out}")
    if args.overwrite:
        raise InputError("--resume continues a run and --overwrite starts a new one: choose one")
    saved = saved_arguments(args.resume)
    merged = {k: v for k, v in typed.items() if k in given}  # each key is its option's dest...
    if "positions" in given:  # ... but these two
        method = merged.get("method", saved["method"])
        merged["method_kwargs"] = {"positions": args.positions} if method not in ("head-only", "full") else {}
    if "no_dropout" in given:
        merged["dropout"] = False
    # The folders the run was started with are saved: a resume reads them again unless another is
    # named (the backbone's and the data's fingerprints are compared once they are read).
    folders = [("model_dir", "--model-dir", Path.is_dir)]
    if saved["task"] == LM_TASK:
        merged = lm_arguments(args, merged, given)
        folders.append(("text_file", "--text-file", Path.is_file))
    else:
        if args.text_file is not None:
            raise InputError(f"--text-file is for task lm; the run in {args.resume} is {saved['task']}, which "
                             f"reads its data from --data-dir")
        folders.append(("data_dir", "--data-dir", Path.is_dir))
    for key, option, exists in folders:
        if getattr(args, key) is not None:
            merged[key] = getattr(args, key)
        elif saved.get(key) and not exists(Path(saved[key])):
            raise MissingFileError(f"{option}: the run in {args.resume} was started with {option} {saved[key]}, "
                                   f"which is gone; name where it is now with {option}")
    return {**saved, **merged}


# What only the encoder tasks read (train lm refuses them): option, and its train_task argument.
NOT_LM = (("--max-train", "max_train"), ("--max-dev", "max_dev"), ("--holdout", "holdout"), ("--init", "init"),
          ("--warmup", "warmup"), ("--batches", "batches"))


def lm_arguments(args, typed: dict, given: set) -> dict:
    """train_lm's arguments from train_task's: no --max-train / --max-dev / --data-dir; --text-file
    and --model-dir instead (both needed to start a run; a resume has them saved)."""
    wrong = [option for option, dest in NOT_LM if dest in given]
    wrong += ["--data-dir"] if args.data_dir is not None else []
    if wrong:
        raise InputError(f"train lm reads --text-file, not {' / '.join(wrong)} (those are for sst2 and conll)")
    typed = {k: v for k, v in typed.items() if k not in dict(NOT_LM).values()}
    if args.resume is None:
        if args.text_file is None or args.model_dir is None:
            raise InputError("train lm needs --text-file FILE (the text) and --model-dir DIR (a GPT-2 or "
                             "LLaMA-style folder with config.json, model.safetensors and tokenizer.json)")
        typed["model_dir"] = args.model_dir
    if "text_file" in given:
        typed["text_file"] = args.text_file
    return typed


def _no_text_file(args, typed: dict) -> dict:
    if args.text_file is not None:
        raise InputError(f"--text-file is for task lm; {args.task} reads its data from --data-dir")
    return typed


def run(args) -> int:
    from ..training import distributed
    from ..training.keeper import Interrupted
    from ..training.run import train_task
    check_device(args.device)
    from ..core.checks import check_max_length
    if args.task != "lm":  # train lm has its own rule (two tokens: one to read, one to predict)
        check_max_length(args.max_length, name="--max-length")  # the rule eval and predict apply too
    kw = run_arguments(args)
    out = next((o for o in (args.resume, args.out) if o is not None), f"runs/{kw['task']}-{kw['method']}")  # "" is refused
    info, device = distributed.setup(args.device)
    common = dict(out_dir=out, device=device, progress=not (args.no_progress or args.json),
                  resume=args.resume is not None, overwrite=args.overwrite,
                  allow_other_backbone=args.allow_other_backbone)
    try:
        if kw["task"] == LM_TASK:
            from ..training.lm import train_lm
            summary, _ = train_lm(**{k: v for k, v in kw.items() if k != "task"}, **common)
        else:
            summary, _ = train_task(**kw, **common)
    except KeyboardInterrupt as e:
        if info.is_main:  # what the folder holds now (training/keeper.py), or what it held at the start
            print(str(e) if isinstance(e, Interrupted) else interrupted(out), file=sys.stderr)
        raise
    finally:
        distributed.teardown()
    if not info.is_main:
        return 0
    if args.json:
        print_json(summary)
        return 0
    print(describe(summary))
    return 0


def interrupted(out: str) -> str:
    from ..training import state
    try:
        done = state.load_meta(out)["epochs_done"]
    except (OSError, ValueError):  # nothing readable to resume from
        return f"interrupted before an epoch of the run in {out} ended: there is nothing to resume"
    return f"interrupted: `train --resume {out}` continues after epoch {done}"


def describe(s: dict) -> str:
    last, kept = s["history"][-1], s["kept"]
    metric = kept["metric"]
    share = 100.0 * s["trainable"] / s["backbone"]
    best = s["history"][kept["epoch"] - 1]
    dev = "held-out" if s["task"] == LM_TASK or s.get("holdout") else "dev"
    lines = [f"{s['task']} / {s['method']} (P={s['P']}): {dev} {metric} {kept['value']:.4f} at epoch "
             f"{kept['epoch']} of {len(s['history'])} (the best: the checkpoint keeps it), train loss "
             f"{best['train_loss']:.4f}, {s['seconds']:.1f} s"]
    if "untrained" in s:
        lines.append(f"before training (the initial prompt): {dev} {metric} {s['untrained'][metric]:.4f}; "
                     f"text: {s['text']['file']}, {s['text']['tokens']:,} tokens in {s['text']['train_blocks']} "
                     f"training and {s['text']['held_out_blocks']} held-out blocks")
    if kept["epoch"] != last["epoch"]:
        lines.append(f"last epoch: {dev} {metric} {last[metric]:.4f}, train loss {last['train_loss']:.4f}")
    if "resumed_after_epoch" in s:
        lines.append(f"resumed after epoch {s['resumed_after_epoch']}")
    lines.append(f"trained {s['trainable']:,} parameters ({share:.3f}% of the {s['backbone']:,}-parameter backbone)")
    if "distributed" in s:
        d = s["distributed"]
        lines.append(f"{d['world_size']} processes, largest parameter difference between ranks: "
                     f"{d['max_rank_difference']:.3g}")
    ck = s["checkpoint"]
    lines.append(f"checkpoint: {ck['path']} ({size_text(ck['bytes'])})")
    return "\n".join(lines)
