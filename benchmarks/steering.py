"""Prompts that steer a frozen decoder, measured by a frozen classifier: one command, from a fresh clone.

    python benchmarks/steering.py             # benchmarks/steering_results.json, benchmarks/steering.png, the table
    python benchmarks/steering.py --replot    # table and figure again from the results, no training
    python benchmarks/steering.py --trial "P=20" --P 20    # one line in benchmarks/steering_trials.jsonl instead
    python benchmarks/steering.py --lam 1 --epochs 3       # the two prompts trained against each other

What runs, all offline on what the package ships (the SST-2 sample, the MiniLM), nothing cached needed:
1. the decoder: `pretrain`'s defaults (training/pretrain.decoder_dir; reused from runs/decoder
   when it is there), a small LLaMA-style decoder trained from scratch on the sample's sentences;
2. the judge: a K/V prefix on the frozen MiniLM trained on the sample's 3,000 SST-2 training
   sentences with `train sst2 prefix`'s defaults (the prefix's recipe), scored on the 872 dev rows;
3. for each seed: two K/V prefixes trained with `train lm` on the frozen decoder, one on the
   sample's 1,500 positive training sentences and one on its 1,500 negative ones (one sentence per
   line, training/steer.sentiment_texts), and two deep hidden-state prompts the same way;
   With --lam > 0 each pair is trained at once instead, against each other (training/contrast.py:
   the LM loss plus lam times the cross-entropy of a sentence's label under Bayes' rule on its two
   likelihoods), and Bayes' rule's accuracy on the 872 dev sentences is recorded;
4. for each seed: --samples sentences sampled under each prompt and under none (each from a
   newline to the next), and the judge's share of them it calls positive.

Reported per condition: the mean share over seeds, its standard deviation and range; how many
sentences came out empty, and how many repeat a training sentence word for word; and the
decoder's "preference" under the prompt: the mean NLL per token of the negative dev sentences
minus the positive ones' (each read from its newline). A prompt that steers towards positive
text raises it above the no-prompt value, one towards negative text lowers it. Beside it, the
mean NLL per token of the prompt's own class's dev sentences: what steering costs in fluency.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = ["none", "prefix/positive", "prefix/negative", "deep/positive", "deep/negative"]
LABELS = {"none": "no prompt", "prefix/positive": "K/V prefix\npositive", "prefix/negative": "K/V prefix\nnegative",
          "deep/positive": "deep prompt\npositive", "deep/negative": "deep prompt\nnegative"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="of prompt training and of sampling")
    p.add_argument("--samples", type=int, default=200, help="sentences sampled per condition and seed")
    p.add_argument("--methods", nargs="+", default=["prefix", "deep"], choices=["prefix", "deep"])
    p.add_argument("--P", type=int, default=10)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr-prefix", type=float, default=1e-2)
    p.add_argument("--lr-deep", type=float, default=1e-2)
    p.add_argument("--batch-size", type=int, default=None,
                   help="train lm's blocks per batch (default 8); --lam > 0 uses --contrast-batch-size instead")
    p.add_argument("--lam", type=float, default=0.0,
                   help="weight of the discriminative term (training/contrast.py): 0 trains each prompt alone with "
                        "train lm (the LM loss only); > 0 trains the positive and negative prompts against each other")
    p.add_argument("--contrast-batch-size", type=int, default=16, help="sentences per batch when --lam > 0")
    p.add_argument("--max-length", type=int, default=None,
                   help="train lm's block of tokens (default 64); --lam > 0 reads whole sentences instead")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--start", default="", help="text every sampled sentence starts with (after the newline)")
    p.add_argument("--decoder", default=None, help="a decoder folder (default: pretrain's, built if missing)")
    p.add_argument("--root", default=str(ROOT / "runs" / "steering"), help="where the runs go")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reuse", action="store_true",
                   help="keep a prompt an earlier run trained with the same settings (to try sampling settings; "
                        "train lm's prompts only, not with --lam > 0)")
    p.add_argument("--trial", default=None, metavar="NOTE",
                   help="append one line to --trials (settings, shares) instead of writing the results and figure")
    p.add_argument("--trials", default=str(ROOT / "benchmarks" / "steering_trials.jsonl"))
    p.add_argument("--replot", action="store_true", help="only redraw the table and figure from --json")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "steering_results.json"))
    p.add_argument("--figure", default=str(ROOT / "benchmarks" / "steering.png"))
    a = p.parse_args(argv)
    if not 0 <= a.lam < float("inf"):
        p.error(f"--lam must be a finite number >= 0 (0: the LM loss alone), got {a.lam}")
    if a.lam > 0:  # the pair reads whole sentences in batches of --contrast-batch-size: refuse what it would ignore
        ignored = [f"--{n.replace('_', '-')}" for n in ("batch_size", "max_length", "reuse") if getattr(a, n)]
        if ignored:
            p.error(f"{', '.join(ignored)} {'apply' if len(ignored) > 1 else 'applies'} to train lm (--lam 0) "
                    f"only; with --lam {a.lam:g} use --contrast-batch-size")
    if a.replot and not Path(a.json).is_file():
        p.error(f"--replot reads --json {a.json}, which is not a file: run without --replot first")
    a.batch_size = 8 if a.batch_size is None else a.batch_size
    a.max_length = 64 if a.max_length is None else a.max_length
    return a


def judge_checkpoint(root: Path) -> tuple[Path, dict]:
    """The SST-2 judge: `train sst2 prefix` with its defaults on the shipped sample (a data folder
    made of the sample's two files, so that no data folder on the machine is read instead)."""
    from minigpt_ptv2.data.sample import sample_file
    from minigpt_ptv2.training.run import train_task
    out = root / "judge"
    record = root / "judge.json"
    if record.is_file() and (out / "checkpoint.json").is_file():
        return out, json.loads(record.read_text())
    data = root / "sample_data" / "sst2"
    data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        shutil.copyfile(sample_file(split), data / f"{split}.tsv")
    summary, _ = train_task("sst2", "prefix", out_dir=out, data_dir=data.parent, overwrite=True, progress=True)
    facts = {"dev_accuracy": summary["kept"]["value"], "epoch": summary["kept"]["epoch"],
             "seconds": summary["seconds"], "train_examples": summary["train_examples"],
             "dev_examples": summary["dev_examples"]}
    record.write_text(json.dumps(facts, indent=2) + "\n")
    return out, facts


def same_prompt(out: Path, method: str, P: int, settings: dict) -> bool:
    """Whether `out` holds a prompt trained with these settings (--reuse)."""
    try:
        meta = json.loads((out / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("method") == method and meta.get("P") == P and \
        all(meta.get("train", {}).get(k) == v for k, v in settings.items())


def shown(value):
    """A path inside the repository as a relative one: the results name no machine's folders."""
    if isinstance(value, (str, Path)) and str(value).startswith(str(ROOT)):
        return str(Path(value).relative_to(ROOT))
    return value


def spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def run(a) -> dict:
    import torch
    from minigpt_ptv2.data.bpe import ByteLevelBPE
    from minigpt_ptv2.training.lm import load_decoder, load_lm_checkpoint, train_lm
    from minigpt_ptv2.training.predict import Predictor
    from minigpt_ptv2.data.sample import load_sst2_sample
    from minigpt_ptv2.training.pretrain import decoder_dir, held_out_nll
    from minigpt_ptv2.training.contrast import train_contrast
    from minigpt_ptv2.training.steer import sample_sentences, sentiment_texts, share_positive

    torch.set_num_threads(a.threads)
    begin = time.perf_counter()
    root = Path(a.root)
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(a.decoder) if a.decoder else decoder_dir(ROOT / "runs" / "decoder")
    pretrained = json.loads((folder / "pretrain.json").read_text()) if (folder / "pretrain.json").is_file() else {}
    tok = ByteLevelBPE.from_model_dir(folder)
    judge_dir, judge_facts = judge_checkpoint(root)
    judge = Predictor.from_checkpoint(judge_dir)
    texts = dict(zip(("positive", "negative"), sentiment_texts(root)))
    seen = {line for path in texts.values() for line in path.read_text().splitlines()}
    lr = {"prefix": a.lr_prefix, "deep": a.lr_deep}
    sampling = dict(temperature=a.temperature, top_k=a.top_k, start=a.start)

    dev = load_sst2_sample("dev")
    dev_by_label = {name: [e.text for e in dev if e.label == label] for label, name in ((1, "positive"), (0, "negative"))}

    def dev_nll(decoder) -> dict:
        """Mean NLL per token of the positive and of the negative dev sentences, each read from its
        newline. Their difference (negative - positive) is the preference: > 0 when the decoder
        finds positive sentences likelier; a class's own is what a prompt costs in fluency."""
        nll = {}
        for name, sentences in dev_by_label.items():
            total, count, _ = held_out_nll(decoder, tok, sentences)
            nll[name] = total / count
        return nll

    def measure(decoder, seed) -> dict:
        said = sample_sentences(decoder, tok, a.samples, seed=seed, **sampling)
        verdict = share_positive(judge, said)
        verdict["copied"] = sum(s in seen for s in said if s) / max(1, verdict["n"])
        verdict["examples"] = [s for s in said if s][:6]
        nll = dev_nll(decoder)
        verdict["dev_preference"] = nll["negative"] - nll["positive"]
        verdict["dev_nll"] = nll
        return verdict

    results = {c: [] for c in CONDITIONS if c == "none" or c.split("/")[0] in a.methods}
    trained = {}
    bare = load_decoder(folder).eval()
    for seed in a.seeds:
        results["none"].append({"seed": seed, **measure(bare, seed)})
        for method in a.methods:
            if a.lam > 0:  # the two prompts against each other: one run writes both
                pair = root / f"{method}-contrast-seed{seed}"
                done = train_contrast(method, folder, pair, P=a.P, lam=a.lam, epochs=a.epochs, lr=lr[method],
                                      batch_size=a.contrast_batch_size, seed=seed, overwrite=True, progress=False,
                                      held_out=[(e.text, e.label) for e in dev])
                trained[f"{method}/contrast/{seed}"] = {k: done[k] for k in ("history", "held_out", "seconds")}
            for label, path in texts.items():
                out = root / f"{method}-{label}-seed{seed}" if a.lam == 0 else pair / label
                settings = {"epochs": a.epochs, "lr": lr[method], "seed": seed, "batch_size": a.batch_size,
                            "max_length": a.max_length, "model_dir": str(folder.resolve())}
                if a.lam == 0 and not (a.reuse and same_prompt(out, method, a.P, settings)):
                    summary, _ = train_lm(method, path, folder, P=a.P, epochs=a.epochs, lr=lr[method],
                                          batch_size=a.batch_size, max_length=a.max_length, seed=seed,
                                          out_dir=out, overwrite=True, progress=False)
                    trained[f"{method}/{label}/{seed}"] = {
                        "held_out_perplexity": summary["kept"]["value"],
                        "untrained_perplexity": summary["untrained"]["perplexity"], "seconds": summary["seconds"]}
                decoder, _ = load_lm_checkpoint(out)
                results[f"{method}/{label}"].append({"seed": seed, **measure(decoder, seed)})
                print(f"seed {seed} {method}/{label}: judged positive {results[f'{method}/{label}'][-1]['positive']:.3f}"
                      f" (no prompt: {results['none'][-1]['positive']:.3f})", flush=True)
    return {"settings": {k: shown(v) for k, v in vars(a).items() if k not in ("replot", "json", "figure", "trials")},
            "decoder": {"folder": shown(folder.resolve()), **{k: pretrained.get(k) for k in (
                "config", "parameters", "vocab_size", "held_out_perplexity", "held_out_sentences", "seconds",
                "threads")}},
            "judge": judge_facts, "prompts": trained,
            "conditions": {c: {"per_seed": rows, "positive": spread([r["positive"] for r in rows]),
                               "empty": sum(r["empty"] for r in rows), "copied": spread([r["copied"] for r in rows])}
                           for c, rows in results.items()},
            "seconds": time.perf_counter() - begin}


def table(res: dict) -> str:
    lines = ["| condition | judged positive, mean ± sd over seeds | min–max | per seed | empty | copied | "
             "preference (nats) | own class's dev NLL (nats/token) |", "|---|---:|---:|---|---:|---:|---:|---:|"]
    for c, r in res["conditions"].items():
        s = r["positive"]
        per = ", ".join(f"{x['positive']:.2f}" for x in r["per_seed"])
        lines.append(f"| {LABELS[c].replace(chr(10), ' ')} | {s['mean']:.2f} ± {s['sd']:.2f} (n={len(r['per_seed'])}) "
                     f"| {s['min']:.2f}–{s['max']:.2f} | {per} | {r['empty']} | {r['copied']['mean']:.2f} | "
                     f"{statistics.mean(x['dev_preference'] for x in r['per_seed']):+.4f} | {own_nll(c, r)} |")
    return "\n".join(lines)


def own_nll(condition: str, r: dict) -> str:
    """The mean NLL per token of the prompt's own class's dev sentences (both classes' for no
    prompt): what steering costs in fluency. Results made before it was measured have none."""
    rows = [x["dev_nll"] for x in r["per_seed"] if "dev_nll" in x]
    if not rows:
        return "–"
    label = condition.split("/")[-1]
    names = ["positive", "negative"] if label == "none" else [label]
    return " / ".join(f"{statistics.mean(x[n] for x in rows):.4f}" for n in names)


def plot(res: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    conds = list(res["conditions"])
    colors = {"none": "0.6", "positive": "#2a7f3f", "negative": "#b8402e"}
    fig = plt.figure(figsize=(11, 4.9))
    ax = fig.add_axes([0.06, 0.15, 0.36, 0.70])
    for i, c in enumerate(conds):
        r = res["conditions"][c]
        color = colors[c.split("/")[-1]]
        ax.bar(i, r["positive"]["mean"], yerr=r["positive"]["sd"], color=color, alpha=0.85, capsize=4)
        ax.scatter([i] * len(r["per_seed"]), [x["positive"] for x in r["per_seed"]], color="k", s=10, zorder=3)
    for y in (0.3, 0.7):
        ax.axhline(y, color="k", lw=0.6, ls=":")
    ax.set_xticks(range(len(conds)), [LABELS[c] for c in conds], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share judged positive by the SST-2 prefix on MiniLM")
    n, seeds = res["settings"]["samples"], len(res["settings"]["seeds"])
    ax.set_title(f"{n} sampled sentences per bar and seed; {seeds} seeds (dots)", fontsize=9)
    text = fig.add_axes([0.45, 0.02, 0.54, 0.84])
    text.axis("off")
    y = 1.0
    for c in conds:
        text.text(0, y, LABELS[c].replace("\n", " "), fontsize=8.5, weight="bold", color=colors[c.split("/")[-1]],
                  va="top", transform=text.transAxes)
        y -= 0.045
        for s in res["conditions"][c]["per_seed"][0]["examples"][:3]:
            s = s if len(s) <= 95 else s[:92] + "..."
            text.text(0.02, y, s, fontsize=7.5, va="top", family="monospace", transform=text.transAxes)
            y -= 0.04
        y -= 0.015
    d = res["decoder"]
    arch = {"llama": "LLaMA-style", "gpt2": "GPT-2-style"}[d["config"]["arch"]]
    fig.suptitle(f"Prompts trained on positive or negative sentences, on a frozen {arch} decoder (L={d['config']['layers']}, "
                 f"D={d['config']['hidden']}, {d['parameters']:,} parameters)\npretrained from scratch on the shipped "
                 f"SST-2 sample; the judge: a K/V prefix on MiniLM (dev accuracy {res['judge']['dev_accuracy']:.3f})",
                 fontsize=9.5)
    fig.savefig(path, dpi=130)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.replot:
        res = json.loads(Path(a.json).read_text())
    else:
        os.environ.pop("MINIGPT_PTV2_DATA", None)  # the judge trains on the shipped sample, as a learner's does
        res = run(a)
        if a.trial is not None:
            line = {"note": a.trial, **res["settings"], "decoder": res["decoder"],
                    **{c: {k: round(v, 3) for k, v in r["positive"].items()} for c, r in res["conditions"].items()},
                    "empty": {c: r["empty"] for c, r in res["conditions"].items()},
                    "copied": {c: round(r["copied"]["mean"], 3) for c, r in res["conditions"].items()},
                    "dev_preference": {c: [round(x["dev_preference"], 3) for x in r["per_seed"]]
                                       for c, r in res["conditions"].items()},
                    "dev_nll": {c: [{k: round(v, 4) for k, v in x["dev_nll"].items()} for x in r["per_seed"]]
                                for c, r in res["conditions"].items()},
                    "prompts": res["prompts"],
                    "examples": {c: r["per_seed"][0]["examples"][:3] for c, r in res["conditions"].items()},
                    "seconds": round(res["seconds"], 1)}
            with open(a.trials, "a") as f:
                f.write(json.dumps(line) + "\n")
            print(table(res))
            return 0
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    plot(res, a.figure)
    print(table(res))
    print(f"judge: dev accuracy {res['judge']['dev_accuracy']:.3f}; decoder: held-out perplexity "
          f"{res['decoder']['held_out_perplexity']:.1f}; {res['seconds'] / 60:.1f} minutes in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
