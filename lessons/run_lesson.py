"""How a lesson runs, and what importing one gives.

A lesson is plain code, cell after cell, as a notebook shows it: no `if __name__ == "__main__":`
around each section, no quick-mode switch. Two things still need a lesson to behave differently
from a learner's run, and they live here, outside the cells:

- **Importing a lesson** (the shape-trace tests and the answers to "Try this" call its
  functions) must not run it. `definitions(path)` executes only the lesson's imports, its
  `def`s and `class`es, and its constant tables (assignments of a literal, like
  `SENTENCES = [...]`); everything else is the lesson running, and is skipped.
- **The test suite's small sizes.** `run(path, quick=True)` runs the lesson with some of its
  top-level statements replaced, as listed in `quick.py` (one table for all lessons): a
  statement `B, N, P = 16, 128, 20` becomes `B, N, P = 2, 16, 4`. A listed statement that the
  lesson no longer has is an error, so the table cannot go stale in silence. `answers(NN,
  quick=True)` loads solutions/NN_solutions.py with its size constants replaced the same way.

    python lessons/run_lesson.py 07            # the same as python lessons/07_deep_prompts.py
    python lessons/run_lesson.py 07 --quick    # the test suite's sizes, a few seconds

Standard library only.
"""
from __future__ import annotations

import __future__ as future
import argparse
import ast
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent  # the lessons' folder


def lesson_path(number_or_path) -> Path:
    """lessons/NN_*.py for "NN" (or a path, returned as it is)."""
    if isinstance(number_or_path, Path) or str(number_or_path).endswith(".py"):
        return Path(number_or_path)
    found = sorted(HERE.glob(f"{number_or_path}_*.py"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one lesson {number_or_path}_*.py in {HERE}, found {[p.name for p in found]}")
    return found[0]


def _is_constant(node: ast.stmt) -> bool:
    """`NAME = <literal>` (a number, string, tuple, list or dict of them): a table, not work."""
    if not (isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets)):
        return False
    try:
        ast.literal_eval(node.value)
    except ValueError:
        return False
    return True


def is_definition(node: ast.stmt) -> bool:
    """What importing a lesson executes: imports, functions, classes, constant tables."""
    return isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)) or _is_constant(node)


def _flags(tree: ast.Module) -> int:
    """The __future__ features the lesson asks for, for compiling its statements."""
    names = {a.name for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__" for a in n.names}
    return sum(getattr(future, name).compiler_flag for name in names)


def definitions(number_or_path, name: str | None = None) -> types.ModuleType:
    """The lesson as a module holding its definitions, none of its work run (see the docstring)."""
    path = lesson_path(number_or_path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    tree.body = [node for node in tree.body if is_definition(node)]
    _beside(path)
    module = types.ModuleType(name or f"lesson_{path.name[:2]}")
    module.__file__ = str(path)
    exec(compile(tree, str(path), "exec", flags=_flags(tree), dont_inherit=True), module.__dict__)
    return module


def _beside(path: Path) -> None:
    """Let the lesson import the modules beside it, as `python lessons/NN_*.py` does."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))


def quick_table(name: str = "QUICK") -> dict:
    """quick.py's QUICK (lessons) or ANSWERS: {number: {statement: small-size statement}}."""
    namespace: dict = {}
    source = (HERE / "quick.py").read_text(encoding="utf-8")
    exec(compile(source, str(HERE / "quick.py"), "exec"), namespace)
    return namespace[name]


def _statement(source: str) -> list[ast.stmt]:
    return ast.parse(source).body


def quick_replaced(tree: ast.Module, table: dict, where: str) -> ast.Module:
    """`tree` with each top-level statement listed in `table` replaced by its small-size version.

    table: {statement as written in the lesson: its replacement}; statements compare as code
    (spacing and comments do not matter). A listed statement that is not in the lesson raises."""
    wanted = {}
    for old, new in table.items():
        body = _statement(old)
        if len(body) != 1:
            raise ValueError(f"quick.py, {where}: {old!r} must be one statement")
        wanted[ast.dump(body[0])] = (old, new)
    found, out = set(), []
    for node in tree.body:
        key = ast.dump(node)
        if key not in wanted:
            out.append(node)
            continue
        found.add(key)
        for new in _statement(wanted[key][1]):
            for sub in ast.walk(new):  # report errors at the lesson's line
                if "lineno" in sub._attributes:
                    sub.lineno, sub.end_lineno, sub.col_offset, sub.end_col_offset = node.lineno, node.end_lineno, 0, 0
            out.append(new)
    missing = [old for key, (old, _) in wanted.items() if key not in found]
    if missing:
        raise ValueError(f"quick.py, {where}: no top-level statement {missing[0]!r} in the lesson "
                         f"(changed? update quick.py)")
    tree.body = out
    return tree


def run(number_or_path, quick: bool = False) -> dict:
    """Run a lesson top to bottom as a script does; returns its namespace."""
    path = lesson_path(number_or_path).resolve()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    _beside(path)
    if quick:
        tree = quick_replaced(tree, quick_table().get(path.name[:2], {}), path.name)
    namespace = {"__name__": "__main__", "__file__": str(path)}
    exec(compile(tree, str(path), "exec", flags=_flags(tree), dont_inherit=True), namespace)
    return namespace


def answers(number: str, quick: bool = False) -> types.ModuleType:
    """solutions/NN_solutions.py as a module (its try_N functions); `quick`: with ANSWERS' sizes."""
    path = HERE / "solutions" / f"{number}_solutions.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if quick:
        tree = quick_replaced(tree, quick_table("ANSWERS").get(number, {}), path.name)
    _beside(path)  # the answers import _lesson.py, beside them
    module = types.ModuleType(f"solutions_{number}")
    module.__file__ = str(path)
    exec(compile(tree, str(path), "exec", flags=_flags(tree), dont_inherit=True), module.__dict__)
    return module


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="run a lesson as a script, in full or with the test suite's sizes")
    ap.add_argument("lesson", help="lesson number (07) or file")
    ap.add_argument("--quick", action="store_true", help="the small sizes of quick.py (seconds)")
    args = ap.parse_args(argv)
    run(args.lesson, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
