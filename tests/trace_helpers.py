"""Compare a recorded shape trace with an expected table written out in a test.

An expected table looks exactly like `ShapeTrace.table()` prints it (the header is optional):

    embeddings.out   [16, 128, 768]  [B, N, D]
    layer0.inject    [16, 148, 768]  [B, P+N, D]

The letters column is optional too; when present it is checked against the trace's dims.
On a mismatch the failure message lines the two tables up row by row:

    !  layer0.inject  [16, 148, 768]  [B, P+N, D]   |  layer0.inject  [16, 128, 768]  [B, N, D]
    -  layer0.prompt  [16, 20, 768]   [B, P, D]     |
    +                                               |  layer0.extra   [1]  [1]
"""
from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parent.parent / "lessons"


def lesson_path(number: str) -> Path:
    """lessons/NN_*.py for NN = "01" ... "13"."""
    found = sorted(LESSONS.glob(f"{number}_*.py"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one lessons/{number}_*.py, found {[p.name for p in found]}")
    return found[0]


def load_lesson(number: str):
    """Import a lesson file as a module (lesson names start with a digit, so no plain import).
    Importing runs only definitions: the lesson's work sits behind `if __name__ == "__main__"`."""
    path = lesson_path(number)
    spec = importlib.util.spec_from_file_location(f"lesson_{number}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

_ROW = re.compile(r"^(?P<name>\S+)\s+\[(?P<shape>[\d,\s]*)\](?:\s+\[(?P<letters>[^\]]*)\])?\s*$")


def parse_table(text: str) -> list[tuple]:
    """Rows `(name, shape)` or `(name, shape, letters)` from a printed table."""
    rows = []
    for line in text.strip().splitlines():
        line = line.strip()
        if not line or line.split()[0] == "name":
            continue
        m = _ROW.match(line)
        if m is None:
            raise ValueError(f"cannot read expected trace row {line!r}; write 'name  [1, 2]  [B, N]'")
        shape = tuple(int(s) for s in m["shape"].split(",") if s.strip())
        rows.append((m["name"], shape) if m["letters"] is None
                    else (m["name"], shape, "[" + m["letters"].strip() + "]"))
    return rows


def _render(rows: list[tuple]) -> list[str]:
    if not rows:
        return []
    w = max(len(r[0]) for r in rows)
    nums = ["[" + ", ".join(str(s) for s in r[1]) + "]" for r in rows]
    wn = max(len(n) for n in nums)
    return [f"{r[0]:<{w}}  {n:<{wn}}  {r[2] if len(r) > 2 else ''}".rstrip() for r, n in zip(rows, nums)]


def assert_trace(actual, expected) -> None:
    """actual: a ShapeTrace or a list of (name, shape) rows; expected: a table (str) or rows."""
    want = parse_table(expected) if isinstance(expected, str) else [tuple(r) for r in expected]
    rows = actual.rows if hasattr(actual, "rows") else list(actual)
    with_letters = bool(want) and all(len(r) == 3 for r in want)
    if with_letters:
        if not hasattr(actual, "letters"):
            raise TypeError("expected rows carry letters: pass the ShapeTrace itself, not its rows")
        got = [(n, tuple(s), actual.letters(tuple(s), n)) for n, s in rows]
    else:
        got = [(n, tuple(s)) for n, s in rows]
    if got == want:
        return
    left, right = _render(want), _render(got)
    wl = max([len("expected")] + [len(x) for x in left])
    out = [f"   {'expected':<{wl}}  |  actual"]
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=want, b=got, autojunk=False).get_opcodes():
        if op == "equal":
            out += [f"   {left[i]:<{wl}}  |  {right[j]}" for i, j in zip(range(i1, i2), range(j1, j2))]
            continue
        n = max(i2 - i1, j2 - j1)
        for k in range(n):
            a = left[i1 + k] if i1 + k < i2 else ""
            b = right[j1 + k] if j1 + k < j2 else ""
            mark = "!" if a and b else ("-" if a else "+")
            out.append(f"{mark}  {a:<{wl}}  |  {b}")
    pytest.fail(f"shape trace differs from the expected table "
                f"({len(want)} expected rows, {len(got)} recorded; ! changed, - missing, + extra):\n"
                + "\n".join(out), pytrace=False)
