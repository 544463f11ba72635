"""A pip user gets the course in one command: `python -m minigpt_ptv2 lessons` copies every lesson,
its executed notebook and the answers to its exercises, and a copied lesson runs where it lands."""
from __future__ import annotations

import os
import subprocess
import sys

from minigpt_ptv2.cli import main
from trace_helpers import LESSONS

ALL = sorted(p.name for p in LESSONS.glob("[0-9][0-9]_*.py"))


def test_lessons_command_copies_the_whole_course(tmp_path, capsys):
    out = tmp_path / "course"
    assert main(["lessons", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(ALL)} lessons" in printed and f"python {out}/{ALL[0]}" in printed
    assert sorted(p.name for p in out.glob("[0-9][0-9]_*.py")) == ALL
    assert sorted(p.name for p in (out / "notebooks").glob("*.ipynb")) == [n[:-3] + ".ipynb" for n in ALL]
    assert sorted(p.name for p in (out / "solutions").glob("[0-9][0-9]_solutions.py")) == \
        [n[:2] + "_solutions.py" for n in ALL]
    assert (out / "README.md").exists() and not (out / "make.py").exists() and not (out / "__init__.py").exists()
    # what the answers import a lesson with comes along; what builds the book does not
    assert (out / "run_lesson.py").exists() and (out / "quick.py").exists() and not (out / "book.py").exists()
    # refuses to write over files, names the folder
    entries = len(list(out.iterdir()))
    assert main(["lessons", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} already holds {entries} entries" in err and "--overwrite" in err


def test_a_copied_lesson_and_its_answers_run_where_they_land(tmp_path):
    out = tmp_path / "course"
    assert main(["lessons", "--out", str(out)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    lesson = sorted(out.glob("15_*.py"))[0]
    done = subprocess.run([sys.executable, str(out / "run_lesson.py"), str(lesson), "--quick"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-c", "import importlib.util as u, sys; sys.path.insert(0, 'course/solutions');"
                           "s = u.spec_from_file_location('s', 'course/solutions/15_solutions.py'); m = u.module_from_spec(s);"
                           "s.loader.exec_module(m); print(m.try_3()['prefix'])"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and done.stdout.strip().endswith("262144"), done.stderr[-2000:]
