"""What the answers share: `load("15")` imports lesson 15 from the folder above (its file name
starts with a digit, so it cannot be imported by name; importing a lesson runs only its
definitions), `cli(...)` runs a command in this process, `letters(table)` reads a printed trace."""
from __future__ import annotations

import importlib.util
from pathlib import Path

LESSONS = Path(__file__).resolve().parents[1]


def load(number: str):
    path = next(LESSONS.glob(f"{number}_*.py"))
    spec = importlib.util.spec_from_file_location(f"lesson_{number}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
