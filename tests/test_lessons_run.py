"""Every lesson runs as a script (at the test suite's sizes) and imports without side effects.

Lessons are jupytext "percent" files of plain code: run top to bottom as a notebook, or as a
script, each section's output under its prose. Two things live outside the cells
(lessons/run_lesson.py): importing a lesson (as the shape-trace tests and the answers do) runs
only its definitions, and `run_lesson.py NN --quick` runs it with the small sizes listed in
lessons/quick.py. `MINIGPT_PTV2_FIGURES` sends its figures to a folder instead of nowhere.
"""
from __future__ import annotations

import ast
import builtins
import math
import os
import re
import subprocess
import symtable
import sys
from pathlib import Path

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from trace_helpers import LESSONS, load_lesson

sys.path.insert(0, str(LESSONS))
import percent  # noqa: E402  (the lessons' cell format)
import run_lesson  # noqa: E402  (how a lesson runs and imports)

ALL = sorted(LESSONS.glob("[0-9][0-9]_*.py"))


def run_quick(path: Path, figures: Path):
    env = {**os.environ, "MINIGPT_PTV2_FIGURES": str(figures),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}  # quick-size tensors are tiny: one thread each, two lessons at a time
    return subprocess.run([sys.executable, str(LESSONS / "run_lesson.py"), str(path), "--quick"],
                          cwd=LESSONS.parent, env=env, capture_output=True, text=True, timeout=240)


class _Runs:
    """Lessons started on demand, two at a time: asking for lesson i also starts lesson i+1, so
    the selected lessons run in pairs and `-k` runs only what it selects (plus one)."""

    def __init__(self, figures_root):
        self.pool, self.futures, self.root = ThreadPoolExecutor(max_workers=2), {}, figures_root

    def _start(self, path):
        if path not in self.futures:
            self.futures[path] = self.pool.submit(run_quick, path, self.root / path.stem[:2] / "figures")

    def __getitem__(self, path):
        self._start(path)
        i = ALL.index(path)
        if i + 1 < len(ALL):
            self._start(ALL[i + 1])
        return self.futures[path]


@pytest.fixture(scope="module")
def lesson_runs(tmp_path_factory):
    runs = _Runs(tmp_path_factory.mktemp("lessons"))
    yield runs
    runs.pool.shutdown(wait=True, cancel_futures=True)


def test_lessons_are_numbered_without_gaps_listed_in_the_readme_and_traced():
    assert len(ALL) > 1, "no lessons found"
    assert [p.name[:2] for p in ALL] == [f"{i:02d}" for i in range(1, len(ALL) + 1)]
    rows = re.findall(r"^\| (\d\d) \| `([^`]+)` \|", (LESSONS / "README.md").read_text(), flags=re.M)
    assert rows == [(p.name[:2], p.name) for p in ALL], "lessons/README.md's reading order is out of date"
    tests = LESSONS.parent / "tests"
    missing = [p.name for p in ALL if not (tests / f"test_lesson_{p.name[:2]}_trace.py").exists()]
    assert missing == [], f"lessons without a shape-trace test: {missing}"


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_lesson_runs_as_a_script(path, lesson_runs):
    done = lesson_runs[path].result()
    assert done.returncode == 0, f"{path.name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{path.name} printed nothing"
    for saved in re.findall(r"^saved (.+\.png)$", done.stdout, flags=re.M):
        assert Path(saved).stat().st_size > 0, f"{path.name} announced {saved} but it is empty"


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_importing_a_lesson_has_no_side_effects(path, capfd):
    rng = torch.random.get_rng_state()
    module = load_lesson(path.name[:2])
    out, err = capfd.readouterr()
    assert out == "" and err == "", f"importing {path.name} printed something"
    assert torch.equal(rng, torch.random.get_rng_state()), f"importing {path.name} used the RNG"
    assert callable(getattr(module, "trace_example", None)), f"{path.name} needs the trace_example its test runs"


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_lesson_is_a_percent_notebook_with_a_summary(path):
    text = path.read_text()
    assert text.startswith("# %% [markdown]\n# # Lesson "), "a lesson opens with a markdown title cell"
    assert "def main(" not in text, "no main(): each section runs its own code, under its own prose"
    last_cell = text.rsplit("# %%", 1)[1]
    assert last_cell.startswith(" [markdown]"), "a lesson ends with its summary, a markdown cell"
    heads = [h for h in ("## What to remember", "## Check your understanding", "## Try this") if h in text]
    assert heads == ["## What to remember", "## Check your understanding", "## Try this"], heads
    assert text.index("## What to remember") < text.index("## Check your understanding") < text.index("## Try this")
    assert "/work" not in text and "/tmp" not in text


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_lesson_cells_are_plain_code(path):
    """What a notebook shows is what runs: no script-mode guard, no quick-mode switch in a cell
    (run_lesson.py and quick.py hold that mechanism)."""
    for kind, source in percent.cells(path):
        if kind == "code":
            assert not re.search(r"\bif\s+__name__\s*==", source), f"{path.name}: a script-mode guard:\n{source[:300]}"
            assert not re.search(r"\bQUICK\b|_QUICK", source), f"{path.name}: a quick-mode switch:\n{source[:300]}"


MAX_CELL_LINES = 45  # "about 40": a cell a reader takes in at once; plumbing goes to lessons/_course.py
LONG_CELLS_ALLOWED = ()  # lessons allowed long cells while they are rewritten (none now)


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_no_code_cell_is_longer_than_a_screen(path):
    """A long cell hides its idea in plumbing: a lesson's code cells stay short, with the
    measuring, printing and drawing that is not the lesson's subject in lessons/_course.py."""
    if path.name[:2] in LONG_CELLS_ALLOWED:
        pytest.skip(f"{path.name}: long cells allowed while it is rewritten")
    long = [(len(source.splitlines()), source.splitlines()[0]) for kind, source in percent.cells(path)
            if kind == "code" and len(source.splitlines()) > MAX_CELL_LINES]
    assert not long, f"{path.name}: code cells over {MAX_CELL_LINES} lines (lines, first line): {long}"


def test_every_quick_size_names_a_statement_its_lesson_has():
    table = run_lesson.quick_table()
    assert set(table) <= {p.name[:2] for p in ALL}, "quick.py names a lesson that does not exist"
    for path in ALL:
        tree = ast.parse(path.read_text())
        run_lesson.quick_replaced(tree, table.get(path.name[:2], {}), path.name)  # raises if one is missing
    answers = run_lesson.quick_table("ANSWERS")
    for number, sizes in answers.items():
        path = LESSONS / "solutions" / f"{number}_solutions.py"
        run_lesson.quick_replaced(ast.parse(path.read_text()), sizes, path.name)


def test_quick_replaces_listed_statements_and_refuses_a_missing_one(tmp_path):
    tree = ast.parse("B, N = 16, 128  # the sizes\nx = f(B)\n")
    small = run_lesson.quick_replaced(tree, {"B, N = 16,128": "B, N = 2, 8"}, "x.py")
    assert ast.unparse(small) == "B, N = (2, 8)\nx = f(B)"
    with pytest.raises(ValueError, match="x.py: no top-level statement 'B = 3'"):
        run_lesson.quick_replaced(ast.parse("B = 4\n"), {"B = 3": "B = 1"}, "x.py")


def test_importing_runs_definitions_only(tmp_path):
    f = tmp_path / "99_x.py"
    f.write_text("import math\nTABLE = {'a': (1, 2)}\ndef g():\n    return math.pi + TABLE['a'][0]\n"
                 "class C:\n    pass\nprint('ran')\nn = g()\nraise SystemExit\n")
    module = run_lesson.definitions(f)
    assert module.g() == math.pi + 1 and isinstance(module.C(), module.C) and not hasattr(module, "n")


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_a_lessons_functions_use_only_what_importing_it_defines(path):
    """A function that reads a global set by the lesson's running code (a size, a model) works in
    the notebook but breaks once imported: the answers and the trace tests would call it."""
    tree = ast.parse(path.read_text())
    defined = set(dir(builtins))
    for node in tree.body:
        if run_lesson.is_definition(node):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, ast.Assign):
                defined |= {t.id for t in node.targets}
            else:
                defined.add(node.name)
    table = symtable.symtable(path.read_text(), str(path), "exec")
    missing = {}

    def walk(scope, where):
        for child in scope.get_children():
            if child.get_type() == "function":
                used = {s.get_name() for s in child.get_symbols() if s.is_global() and s.is_referenced()}
                if used - defined:
                    missing[f"{where}{child.get_name()}"] = sorted(used - defined)
            walk(child, f"{where}{child.get_name()}.")
    walk(table, "")
    assert not missing, f"{path.name}: functions read globals that only the lesson's run defines: {missing}"


def test_lesson_04_compares_with_transformers_only_when_it_is_importable(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    lesson = load_lesson("04")
    assert lesson.compare_with_transformers(None, None, {}) is None
    assert "skipping the comparison" in capsys.readouterr().out


def test_save_figure_writes_only_to_the_named_folder(tmp_path, monkeypatch, capsys):
    from matplotlib.figure import Figure

    from minigpt_ptv2.viz import save_figure
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    monkeypatch.delenv("MINIGPT_PTV2_FIGURES", raising=False)
    assert save_figure(fig, "a.png") is None and capsys.readouterr().out == ""
    monkeypatch.setenv("MINIGPT_PTV2_FIGURES", str(tmp_path / "figs"))
    path = save_figure(fig, "a.png")
    assert path == tmp_path / "figs" / "a.png" and path.stat().st_size > 0
    assert capsys.readouterr().out == f"saved {path}\n"
    with pytest.raises(ValueError, match="plain file name"):
        save_figure(fig, "sub/a.png")
