"""`predict`: labels for new sentences (SST-2) or word/tag pairs (CoNLL-2003) from a checkpoint."""
from __future__ import annotations

import io
import sys
from pathlib import Path

from ..errors import InputError
from ._shared import (add_allow_other_backbone, add_device, add_json, add_model_dir, batch_size, check_device,
                      non_negative_int, positive_int, print_json, setup_help, warn_about_import)

NAME = "predict"
HELP = "predict labels (SST-2) or entity tags (CoNLL) for new text with a checkpoint"
DESCRIPTION = """\
Read sentences from the arguments, from --file, or from standard input (one per line; blank lines
are skipped, and a note on stderr says which) and print one prediction per sentence: the label
and its probability for SST-2, word/tag pairs for CoNLL (sentences are split into words on
whitespace).

Long texts. The model reads at most --max-length tokens at once. CoNLL texts of any length are
tagged in full: a longer text is read in overlapping windows sharing --stride sub-tokens, each
word's tag taken from the window where it has the most context; --json gives each text's
"windows". An SST-2 sentence longer than --max-length is classified on its first tokens: a
warning on stderr says how many sentences were cut, and --json gives each one's "cut_tokens".

Several tasks at once. With --also, several checkpoints trained over the same backbone share it
and share every batch: each row reads its own task's prompt (per-row masks) and head. Each input
then starts with its task's name and a tab (or a colon and a space): "sst2<TAB>a witty film",
"conll: John lives in Berlin". A checkpoint is named after its task, or NAME=DIR names it.
Only prompt checkpoints of one kind mix (K/V prefixes of any P, say)."""
EPILOG = """\
examples:
  python -m minigpt_ptv2 predict runs/sst2-prefix "a gorgeous, witty film" "dull and overlong"
  echo "John Smith works for Siemens in Berlin" | python -m minigpt_ptv2 predict runs/conll-prefix
  python -m minigpt_ptv2 predict runs/conll-prefix --file report.txt --max-length 128 --stride 32 --json
  python -m minigpt_ptv2 predict runs/sst2-prefix --also runs/conll-prefix --file tagged.txt
      (tagged.txt lines: "sst2<TAB>a gorgeous, witty film" or "conll: John lives in Berlin")"""


def add_arguments(p):
    setup_help(p, DESCRIPTION, EPILOG)
    p.add_argument("checkpoint", help="folder written by `train` or `import-peft` ([NAME=]DIR with --also)")
    p.add_argument("--also", action="append", default=[], metavar="[NAME=]DIR",
                   help="another checkpoint over the same backbone, served in the same batches; every "
                        "input then names its task (repeatable)")
    p.add_argument("text", nargs="*", help="sentences (default: read --file or standard input)")
    p.add_argument("--file", default=None, help="read sentences from this file, one per line ('-' = stdin)")
    p.add_argument("--batch-size", type=batch_size, default=32,
                   help="sentences (SST-2) or windows (CoNLL) per forward pass")
    p.add_argument("--max-length", type=positive_int, default=None,
                   help="max tokens per forward row, [CLS]/[SEP] included (default: the checkpoint's "
                        "training value)")
    p.add_argument("--stride", type=non_negative_int, default=None,
                   help="CoNLL: sub-tokens shared by consecutive windows of a long text, as in HF "
                        "pipelines (default: half of max-length - 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (none under --json either)")
    add_model_dir(p)
    add_allow_other_backbone(p, "the checkpoints")
    add_device(p)
    add_json(p)


def read_texts(args) -> list[str]:
    """The sentences, one per argument or per line of --file or standard input: lines end at "\\n"
    or "\\r\\n" only, and a byte that is not UTF-8 is named (minigpt_ptv2/lines.py)."""
    from ..data.paths import text_lines
    from ..lines import byte_lines, one_record
    if args.text and args.file:
        raise InputError("give sentences as arguments or with --file, not both")
    if args.text:
        for i, t in enumerate(args.text):
            if not t.strip():
                raise InputError(f"sentence argument {i + 1} is empty" + (" (only whitespace)" if t else ""))
        return [t.strip() for t in args.text]
    if args.file and args.file != "-":
        lines = [one_record(line, args.file, n) for n, line in text_lines(Path(args.file), "--file")]
    else:
        if sys.stdin.isatty() and args.file != "-":
            raise InputError("no sentences: pass them as arguments, with --file, or on standard input")
        raw = getattr(sys.stdin, "buffer", None) or io.BytesIO(sys.stdin.read().encode("utf-8", "surrogateescape"))
        lines = [one_record(line, "standard input", n) for n, line in byte_lines(raw, "standard input")]
    texts = [t.strip() for t in lines if t.strip()]
    if not texts:
        raise InputError("no sentences to predict (all lines were empty)")
    blank = [i + 1 for i, t in enumerate(lines) if not t.strip()]
    if blank:
        shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
        print(f"note: skipped {len(blank)} blank line(s) (line {shown}): one prediction per non-blank line",
              file=sys.stderr)
    return texts


def run(args) -> int:
    from ..core.checks import check_max_length
    from ..training.predict import Predictor
    check_device(args.device)
    if args.max_length is not None:
        check_max_length(args.max_length, name="--max-length")  # before the (slow) model load
    texts = read_texts(args)
    if args.also:
        return run_mixed(args, texts)
    predictor = Predictor.from_checkpoint(args.checkpoint, args.model_dir, args.device, args.max_length,
                                          args.stride, names=("--max-length", "--stride"),
                                          allow_other_backbone=args.allow_other_backbone)
    warn_about_import(predictor.meta)
    results = predictor.predict(texts, args.batch_size, show_progress=not (args.json or args.no_progress))
    summary = _length_summary(predictor.task, predictor.max_length, predictor.stride, results)
    if args.json:
        print_json({"task": predictor.task.name, **summary, "predictions": results})
        return 0
    _warn(summary)
    for r in results:
        if "label" in r:
            print(f"{r['label']}\t{r['score']:.4f}\t{r['text']}")
        else:
            print(" ".join(f"{w}/{t}" for w, t in r["tags"]))
    return 0


def _length_summary(task, max_length: int, stride: int, results: list[dict]) -> dict:
    """What length did to this run: windows (NER) or truncated sentences (sentence task)."""
    out = {"max_length": max_length}
    if task.kind == "sequence":
        out["truncated"] = sum(r["cut_tokens"] > 0 for r in results)
    else:
        out["stride"] = stride
        out["windows"] = sum(r["windows"] for r in results)
        out["long_texts"] = sum(r["windows"] > 1 for r in results)
    out["texts"] = len(results)
    return out


def _warn(s: dict, who: str = "") -> None:
    if s.get("truncated"):
        print(f"warning: {who}{s['truncated']} of {s['texts']} sentences are longer than max_length={s['max_length']} "
              f"tokens; their labels read only the first {s['max_length'] - 2} sub-tokens (--json gives each "
              f"one's cut_tokens)", file=sys.stderr)
    if s.get("long_texts"):
        print(f"note: {who}{s['long_texts']} of {s['texts']} texts are longer than max_length={s['max_length']} tokens "
              f"and were read in {s['windows']} overlapping windows in all (stride {s['stride']}); every word is "
              f"tagged", file=sys.stderr)


def named_checkpoints(args) -> dict:
    """{name: folder} from CHECKPOINT and every --also: NAME=DIR, or DIR named by its task."""
    from ..training import read_meta
    named = {}
    for given in [args.checkpoint, *args.also]:
        name, sep, folder = given.partition("=")
        if not sep or Path(given).is_dir():  # a plain folder (even one whose name holds "=")
            name, folder = None, given
        name = name or read_meta(folder)["task"]
        if name in named:
            raise InputError(f"two checkpoints named {name!r} ({named[name]} and {folder}): name them, "
                             f"e.g. --also {name}-2={folder}")
        named[name] = folder
    return named


def tagged(texts: list[str], names: list[str]) -> list[tuple[str, str]]:
    """"NAME<TAB>text" or "NAME: text" -> (NAME, text), refusing a line that names no member."""
    items = []
    for i, t in enumerate(texts):
        for sep in ("\t", ": "):  # the first separator that follows a member's name
            name, found, text = t.partition(sep)
            if found and name.strip() in names:
                break
        else:
            if t.strip().rstrip(":").strip() in names:
                raise InputError(f"input line {i + 1} names {t.strip().rstrip(':').strip()!r} but holds no text")
            raise InputError(f"input line {i + 1} ({t[:40]!r}) names no task: with several checkpoints "
                             f"every input starts with one of {names}, then a tab or ': ', then its text")
        if not text.strip():
            raise InputError(f"input line {i + 1} names {name.strip()!r} but holds no text")
        items.append((name.strip(), text.strip()))
    return items


def run_mixed(args, texts: list[str]) -> int:
    from ..training.mixed import MixedPredictor
    named = named_checkpoints(args)
    items = tagged(texts, list(named))
    predictor = MixedPredictor.from_checkpoints(named, args.model_dir, args.device, args.max_length, args.stride,
                                                names=("--max-length", "--stride"),
                                                allow_other_backbone=args.allow_other_backbone)
    for m in predictor.members.values():
        warn_about_import(m["meta"])
    results = predictor.predict(items, args.batch_size, show_progress=not (args.json or args.no_progress))
    members = {}
    for n, m in predictor.members.items():
        summary = _length_summary(m["task"], m["max_length"], m["stride"], [r for r in results if r["task"] == n])
        members[n] = {"task": m["task"].name, "method": m["meta"]["method"], "P": m["meta"]["P"],
                      "checkpoint": str(named[n]), **summary}
    if args.json:
        print_json({"members": members, "predictions": results})
        return 0
    for n, summary in members.items():
        _warn(summary, who=f"{n}: ")
    for r in results:
        shown = (f"{r['label']}\t{r['score']:.4f}\t{r['text']}" if "label" in r
                 else " ".join(f"{w}/{t}" for w, t in r["tags"]))
        print(f"{r['task']}\t{shown}")
    return 0
