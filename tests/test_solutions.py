"""Every lesson's "Try this" can be done as written: each item names a function in
lessons/solutions/NN_solutions.py that does it and checks what it finds, and this test runs them
all. Every lesson also asks 3-5 check-your-understanding questions, each with a collapsed answer."""
from __future__ import annotations

import re
import sys

import pytest

from trace_helpers import LESSONS

sys.path.insert(0, str(LESSONS))
import run_lesson  # noqa: E402  (loads the answers with the test suite's sizes)

ALL = sorted(LESSONS.glob("[0-9][0-9]_*.py"))
SOLUTIONS = LESSONS / "solutions"
pytestmark = pytest.mark.usefixtures("one_thread")


def _section(text: str, title: str) -> str:
    """The markdown of one '## title' section of a lesson, comment marks stripped."""
    lines = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in text.splitlines()]
    body = "\n".join(lines)
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |^%%|\Z)", body, flags=re.M | re.S)
    assert m, f"no '## {title}' section"
    return m.group(1)


def _items(section: str) -> list[str]:
    return re.findall(r"^(\d+)\. ", section, flags=re.M)


def _load(number: str):
    """The answers, with the small sizes of lessons/quick.py's ANSWERS (see lessons/run_lesson.py)."""
    path = SOLUTIONS / f"{number}_solutions.py"
    assert path.exists(), f"lessons/solutions/{path.name} is missing"
    return run_lesson.answers(number, quick=True)


def _cases():
    for path in ALL:
        text = path.read_text()
        try:
            items = _items(_section(text, "Try this"))
        except AssertionError:
            items = []
        for n in items:
            yield pytest.param(path.name[:2], int(n), id=f"{path.stem[:2]}-try_{n}")


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_try_this_items_are_numbered_and_each_has_an_answer(path):
    number = path.name[:2]
    items = _items(_section(path.read_text(), "Try this"))
    assert items == [str(i) for i in range(1, len(items) + 1)] and len(items) >= 2, items
    module = _load(number)
    answers = sorted(n for n in dir(module) if re.fullmatch(r"try_\d+", n))
    assert answers == sorted(f"try_{i}" for i in range(1, len(items) + 1)), answers
    for name in answers:
        assert (getattr(module, name).__doc__ or "").strip(), f"{name} says nothing about its answer"


@pytest.mark.parametrize("number, item", list(_cases()))
def test_each_answer_runs(number, item):
    getattr(_load(number), f"try_{item}")()


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_three_to_five_questions_with_collapsed_answers(path):
    section = _section(path.read_text(), "Check your understanding")
    questions = _items(section)
    assert 3 <= len(questions) <= 5, f"{len(questions)} questions"
    answers = re.findall(r"<details><summary>Answer</summary>\s*\n(.*?)</details>", section, flags=re.S)
    assert len(answers) == len(questions) and all(a.strip() for a in answers)
