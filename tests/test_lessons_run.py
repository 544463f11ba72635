"""Every lesson runs as a script (in quick mode) and imports without side effects.

Lessons are jupytext "percent" files: run top to bottom as a notebook, or as a script. Each
section's cell defines its functions and runs them under `if __name__ == "__main__":`, so in a
notebook the output sits under the section's prose, and importing a lesson (as the shape-trace
tests do) only defines things. `MINIGPT_PTV2_QUICK=1` asks each lesson
for smaller sizes; `MINIGPT_PTV2_FIGURES` sends its figures to a folder instead of nowhere.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from trace_helpers import LESSONS, load_lesson

ALL = sorted(LESSONS.glob("[0-9][0-9]_*.py"))


def trace_lesson(path: Path, figures: Path):
    env = {**os.environ, "MINIGPT_PTV2_QUICK": "1", "MINIGPT_PTV2_FIGURES": str(figures),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}  # quick-mode tensors are tiny: one thread each, two lessons at a time
    return subprocess.run([sys.executable, str(path)], cwd=LESSONS.parent, env=env,
                          capture_output=True, text=True, timeout=240)


class _Runs:
    """Lessons started on demand, two at a time: asking for lesson i also starts lesson i+1, so
    the selected lessons run in pairs and `-k` runs only what it selects (plus one)."""

    def __init__(self, figures_root):
        self.pool, self.futures, self.root = ThreadPoolExecutor(max_workers=2), {}, figures_root

    def _start(self, path):
        if path not in self.futures:
            self.futures[path] = self.pool.submit(trace_lesson, path, self.root / path.stem[:2] / "figures")

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
    assert text.count('if __name__ == "__main__":') >= 3, "the sections run their own cells"
    assert "/work" not in text and "/tmp" not in text


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
