"""The trials that chose `pretrain`'s defaults (catalog.PretrainConfig): one line per setting.

    python benchmarks/pretrain_trials.py '{"hidden": 64, "vocab_size": 4000, "steps": 1000}' ...
    python benchmarks/pretrain_trials.py --table        # what benchmarks/pretrain_trials.jsonl holds

Each argument is a JSON object of PretrainConfig fields (the rest stay at their defaults; "note"
is a free comment). Each trial pretrains on the SST-2 sample exactly as `pretrain` does and
records: the held-out perplexity per token, and per word (exp of the summed NLL over the words
and sentence ends: comparable across vocabulary sizes, where a token is not); the share of the
words in 200 sampled sentences (top-k 40) that occur in the training text ("real words": a
decoder that strings word pieces into non-words scores low, and so does its judge's reading); the
process's CPU seconds (comparable between trials on a busy machine, where wall time is not) and
wall seconds; and five of the sentences.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trial(kw: dict, threads: int) -> dict:
    import torch
    from minigpt_ptv2.catalog import PretrainConfig
    from minigpt_ptv2.training.pretrain import pretrain, sst2_sentences
    from minigpt_ptv2.training.steer import sample_sentences
    torch.set_num_threads(threads)
    note = kw.pop("note", "")
    summary, model, tok = pretrain(PretrainConfig(**kw), show_progress=False)
    known = {w for s in sst2_sentences()[0] for w in s.split()}
    said = sample_sentences(model, tok, 200, seed=0, top_k=40)
    words = [w for s in said for w in s.split()]
    return {"note": note, **summary, "real_word_rate": sum(w in known for w in words) / max(1, len(words)),
            "samples": said[:5]}


def table(path: Path) -> str:
    lines = ["| trial | steps | per-token ppl | per-word ppl | real words | CPU s | wall s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for line in path.read_text().splitlines():
        r = json.loads(line)
        lines.append(f"| {r['note']} | {r['config']['steps']} | {r['held_out_perplexity']:.1f} | "
                     f"{r['held_out_word_perplexity']:.0f} | {r.get('real_word_rate', float('nan')):.2f} | "
                     f"{r['cpu_seconds']:.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trials", nargs="*", help="JSON objects of PretrainConfig fields")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU seconds compare best)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "pretrain_trials.jsonl"))
    p.add_argument("--table", action="store_true")
    a = p.parse_args(argv)
    for text in a.trials:
        record = trial(json.loads(text), a.threads)
        with open(a.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{record['note']}: held-out perplexity {record['held_out_perplexity']:.1f}, per word "
              f"{record['held_out_word_perplexity']:.0f}, real words {record['real_word_rate']:.2f}, "
              f"{record['cpu_seconds']:.0f} CPU s", flush=True)
    if a.table:
        print(table(Path(a.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
