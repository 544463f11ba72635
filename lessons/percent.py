"""The lessons' "percent" format (jupytext's `# %%` cells) read into notebook cells, with nothing
but the standard library, so the notebooks can be built and checked without extra packages.

    # %% [markdown]            a markdown cell: each line's leading "# " is its text
    # # Lesson 07 — ...
    #
    # %%                       a code cell: the lines as they are
    import torch

Leading and trailing blank lines of a cell are dropped. `cells(path)` -> [(kind, source)], and
`notebook(path)` -> an nbformat-4 notebook dict with no outputs (`make.py notebooks` executes it).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

MARKER = "# %%"


def _strip(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _markdown_line(line: str, path, number: int) -> str:
    if line.startswith("# "):
        return line[2:].rstrip()
    if line.rstrip() == "#":
        return ""
    raise ValueError(f"{path}:{number}: a markdown cell's lines start with '# ' (or are a lone '#'), got {line!r}")


def cells(path) -> list[tuple[str, str]]:
    """[(kind, source)] of a percent-format file; kind is "markdown" or "code"."""
    path = Path(path)
    out, kind, lines, start = [], None, [], 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines() + [MARKER], start=1):
        if line.startswith(MARKER):
            if kind is not None:
                body = _strip(lines)
                if kind == "markdown":
                    first = start + 1 + next((i for i, x in enumerate(lines) if x.strip()), 0)
                    body = _strip([_markdown_line(x, path, first + i) if x.strip() else "" for i, x in enumerate(body)])
                if body:
                    out.append((kind, "\n".join(body)))
            rest = line[len(MARKER):].strip()
            if rest not in ("", "[markdown]"):
                raise ValueError(f"{path}:{number}: unknown cell marker {line!r}: use '# %%' or '# %% [markdown]'")
            kind, lines, start = ("markdown" if rest == "[markdown]" else "code"), [], number
        elif kind is None:
            if line.strip():
                raise ValueError(f"{path}:{number}: text before the first '# %%' cell marker")
        else:
            lines.append(line)
    return out


def _cell(kind: str, source: str, index: int, path) -> dict:
    cell_id = hashlib.sha1(f"{Path(path).name}:{index}".encode()).hexdigest()[:8]
    cell = {"cell_type": kind, "id": cell_id, "metadata": {}, "source": source.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def notebook(path) -> dict:
    """An nbformat 4.5 notebook holding the cells of `path`, not executed."""
    return {"cells": [_cell(kind, src, i, path) for i, (kind, src) in enumerate(cells(path))],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"},
                         "jupytext": {"formats": "ipynb,py:percent"}},
            "nbformat": 4, "nbformat_minor": 5}


def sources(nb: dict) -> list[tuple[str, str]]:
    """[(kind, source)] of a notebook dict: what `cells` gives for its .py, if they are in sync."""
    return [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]
