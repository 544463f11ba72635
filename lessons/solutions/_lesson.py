"""What the answers share: `load("15")` gives lesson 15's definitions (its functions, classes and
constant tables, from the folder above; the lesson's own work is not run: see ../run_lesson.py),
`cli(...)` runs a command in this process, `letters(table)` reads a printed trace."""
from __future__ import annotations

import sys
from pathlib import Path

LESSONS = Path(__file__).resolve().parents[1]


def load(number: str):
    if str(LESSONS) not in sys.path:
        sys.path.insert(0, str(LESSONS))
    import run_lesson
    return run_lesson.definitions(number)


def cli(*args) -> str:
    """What `python -m minigpt_ptv2 ARGS` prints, run in this process (no second interpreter to
    start): the same parser and code as the command line; a non-zero exit is an error here."""
    import contextlib
    import io

    from minigpt_ptv2.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    if code:
        raise RuntimeError(f"python -m minigpt_ptv2 {' '.join(map(str, args))} exited {code}")
    return out.getvalue()


def letters(table: str) -> dict:
    """name -> shape in letters, from a printed trace table ("name  [numbers]  [letters]")."""
    out = {}
    for line in table.splitlines():
        parts = [p.strip() for p in line.split("  ") if p.strip()]
        if len(parts) == 3 and parts[2].startswith("["):
            out[parts[0]] = parts[2]
    return out
