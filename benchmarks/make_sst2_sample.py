"""Redraw the SST-2 sample shipped in minigpt_ptv2/data/sst2_sample/ from a full copy of GLUE SST-2.

    python benchmarks/make_sst2_sample.py --data-dir PATH        # PATH holds sst2/train.tsv, sst2/dev.tsv
    python benchmarks/make_sst2_sample.py --data-dir PATH --check  # compare with the shipped files

The rule (SOURCE.md states it too), chosen so anyone can redraw the same rows without our code:

- train.tsv: the distinct lines of GLUE SST-2 train.tsv (after the header), ordered by the
  SHA-256 hex digest of each line's UTF-8 bytes (without the newline); walk that order and keep
  a line while its label has fewer than PER_LABEL lines kept. The kept lines are written in
  that order, byte for byte (so both labels are interleaved and equally many).
- dev.tsv: every line of GLUE SST-2 dev.tsv, in file order (the whole split, so the embedded
  sample and a full data folder score on the same sentences).

A hash order is a fixed pseudo-random shuffle that needs no random-number generator: it is the
same in every language and every Python version.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "minigpt_ptv2" / "data" / "sst2_sample"
HEADER = "text\tlabel"
PER_LABEL = 1500  # training lines per label


def read_lines(path: Path) -> list[str]:
    """The data lines of an SST-2 TSV file (header checked and dropped, newlines stripped)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines[0].rstrip("\r") != HEADER:
        raise ValueError(f"{path}: expected the header {HEADER!r}, got {lines[0]!r}")
    return [line.rstrip("\r") for line in lines[1:] if line.strip()]


def label_of(line: str) -> str:
    return line.rsplit("\t", 1)[1]


def draw_train(lines: list[str], per_label: int = PER_LABEL) -> list[str]:
    """The first `per_label` lines of each label in SHA-256 order, among the distinct lines."""
    pool = sorted(set(lines), key=lambda line: hashlib.sha256(line.encode("utf-8")).hexdigest())
    kept, count = [], {"0": 0, "1": 0}
    for line in pool:
        label = label_of(line)
        if count[label] < per_label:
            kept.append(line)
            count[label] += 1
    if min(count.values()) < per_label:
        raise ValueError(f"only {count} lines available, {per_label} per label asked for")
    return kept


def write(path: Path, lines: list[str]) -> None:
    path.write_text(HEADER + "\n" + "".join(line + "\n" for line in lines), encoding="utf-8")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="folder holding sst2/train.tsv and sst2/dev.tsv")
    p.add_argument("--out", default=str(OUT), help="where train.tsv and dev.tsv are written")
    p.add_argument("--per-label", type=int, default=PER_LABEL)
    p.add_argument("--check", action="store_true", help="only compare the drawn rows with the files in --out")
    args = p.parse_args(argv)
    src, out = Path(args.data_dir) / "sst2", Path(args.out)
    drawn = {"train": draw_train(read_lines(src / "train.tsv"), args.per_label),
             "dev": read_lines(src / "dev.tsv")}
    for split, lines in drawn.items():
        n_pos = sum(label_of(line) == "1" for line in lines)
        print(f"{split}: {len(lines)} rows ({len(lines) - n_pos} negative, {n_pos} positive)")
    if args.check:
        same = all(read_lines(out / f"{split}.tsv") == lines for split, lines in drawn.items())
        print("the shipped files match the rule" if same else "the shipped files DIFFER from the rule")
        return 0 if same else 1
    out.mkdir(parents=True, exist_ok=True)
    for split, lines in drawn.items():
        write(out / f"{split}.tsv", lines)
    print(f"wrote {out}/train.tsv and dev.tsv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
