"""`lessons`: copy the course (lessons, their executed notebooks, answers) into a folder."""
from __future__ import annotations

from ._shared import add_overwrite, setup_help

NAME = "lessons"
HELP = "copy the lessons, their executed notebooks and the answers to their exercises into a folder"
DESCRIPTION = """\
Write the course that ships with the package into OUT: the lessons read in order (each a Python
script that also opens as a notebook), lessons/notebooks/ with every lesson already run (outputs
and figures under each section), lessons/solutions/ with the answers to every "Try this", and the
lessons' README (reading order, notation, times). Nothing is downloaded.

Run a lesson as a script, or open its notebook in Jupyter or VS Code (`pip install
"minigpt_ptv2[notebooks]"` for a kernel and jupytext). In a clone of the repository the same files
are in lessons/, next to the shape-trace tests (tests/test_lesson_*_trace.py).

--out (./minigpt_ptv2_lessons unless given) must be new or empty: a folder that holds anything is
refused unless --overwrite, which replaces it whole (no file of an older copy stays behind)."""
EPILOG = """\
examples:
  python -m minigpt_ptv2 lessons                      # into ./minigpt_ptv2_lessons
  python -m minigpt_ptv2 lessons --out course
  python course/01_notation_and_shapes.py"""

SKIP = ("__init__.py", "make.py", "percent.py", "book.py", "check_book.py")  # build machinery, not the course


def add_arguments(p):
    setup_help(p, DESCRIPTION, EPILOG)
    p.add_argument("--out", default="minigpt_ptv2_lessons", help="folder to write (created; new or empty)")
    add_overwrite(p, "the course", "minigpt_ptv2_lessons")


def copy_lessons(out, overwrite: bool = False) -> list:
    """Copy the shipped course into `out`; returns the files written (relative paths). `out` is
    checked first (outdir.py): refused if it holds anything, unless overwrite, which replaces it whole."""
    import importlib.resources
    from pathlib import Path

    from .. import outdir
    source = importlib.resources.files("minigpt_ptv2.lessons")
    reads = {"the course it copies": source} if isinstance(source, Path) else {}  # a zip has no folder to guard
    with outdir.writing(out, "--out", reads, overwrite) as stage:
        return _copy(source, stage)


def _copy(source, out) -> list:
    import importlib.resources
    import shutil
    from pathlib import Path

    from ..errors import InputError
    written = []

    def walk(node, rel):
        for entry in sorted(node.iterdir(), key=lambda e: e.name):
            if entry.name in SKIP or entry.name.startswith((".", "__pycache__")):
                continue
            if entry.is_dir():
                walk(entry, rel / entry.name)
            elif entry.name.endswith((".py", ".ipynb", ".md")):
                target = out / rel / entry.name
                target.parent.mkdir(parents=True, exist_ok=True)
                with importlib.resources.as_file(entry) as real:
                    shutil.copyfile(real, target)
                written.append(str(rel / entry.name))
    walk(source, Path("."))
    if not any(name.endswith(".ipynb") for name in written):
        raise InputError("this installation carries no lessons (a build without them?): clone the repository instead")
    return written


def run(args) -> int:
    written = copy_lessons(args.out, args.overwrite)
    lessons = sorted(n for n in written if n[:2].isdigit())
    notebooks = [n for n in written if n.endswith(".ipynb")]
    print(f"wrote {len(written)} files to {args.out}: {len(lessons)} lessons, {len(notebooks)} executed notebooks, "
          f"answers in solutions/")
    print(f"start with: python {args.out}/{lessons[0]}   (or open {args.out}/notebooks/"
          f"{lessons[0][:-3]}.ipynb; reading order in {args.out}/README.md)")
    return 0
