"""The book (lessons/book.py builds it, lessons/check_book.py checks it in Chromium) is a course
you can navigate and read: `check_book.problems` fails on each way it can fail, shown one case at a
time on a small book (no browser needed); the browser's half (what the page really shows: text
italicised by a stray `*`, a line wider than its box) is checked in headless Chromium when it is
installed; and the lessons' sources keep what the book needs (arithmetic in code spans, code lines
that fit the book's code box)."""
from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path

import pytest

from trace_helpers import LESSONS

sys.path.insert(0, str(LESSONS))
import check_book  # noqa: E402
import percent  # noqa: E402

ALL = sorted(LESSONS.glob("[0-9][0-9]_*.py"))
CODE_WIDTH = 120  # characters: what the book's code box shows whole at a 1280-pixel window (131 fit)


def _page(links=(), h2=("a", "b"), listed=None, glued=(), wide=()):
    return {"ready": "complete", "title": "", "imgs": [], "links": list(links), "h2": list(h2),
            "listed": [f"#{h}" for h in h2] if listed is None else list(listed), "glued": list(glued),
            "wide": list(wide)}


def _book(tmp_path):
    """A book of two lessons, as the browser would report it, with nothing wrong."""
    book = tmp_path / "book"
    lessons = check_book.lesson_pages(book, [Path("01_a.py"), Path("02_b.py")])
    for page in [book / "index.html", *lessons, *lessons.values()]:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text('<h2 id="a"></h2><h2 id="b"></h2>')
    uri = lambda p: p.as_uri()  # noqa: E731
    info = {book / "index.html": _page([uri(p) for pair in lessons.items() for p in pair])}
    for page, answers in lessons.items():
        info[page] = _page([uri(answers), uri(book / "index.html") + "#a"])
        info[answers] = _page([uri(page)])
    return book, lessons, info


def test_a_sound_book_has_no_problems(tmp_path):
    book, lessons, info = _book(tmp_path)
    assert check_book.problems(info, book, lessons) == []


def test_an_unlinked_or_missing_lesson_is_a_problem(tmp_path):
    book, lessons, info = _book(tmp_path)
    lesson = next(iter(lessons))
    info[book / "index.html"]["links"].remove(lesson.as_uri())
    assert check_book.problems(info, book, lessons) == ["lessons/01_a.html: the landing page does not link this lesson"]
    del info[lesson]
    assert "lessons/01_a.html: no page for this lesson" in check_book.problems(info, book, lessons)


def test_a_page_without_its_section_list_is_a_problem(tmp_path):
    book, lessons, info = _book(tmp_path)
    page = next(iter(lessons))
    info[page]["listed"] = []
    assert check_book.problems(info, book, lessons) == ["lessons/01_a.html: no section list"]
    info[page]["listed"] = ["#a"]
    assert check_book.problems(info, book, lessons) == ["lessons/01_a.html: the section list misses ['b']"]


def test_a_missing_or_unlinked_answers_page_is_a_problem(tmp_path):
    book, lessons, info = _book(tmp_path)
    page, answers = next(iter(lessons.items()))
    info[page]["links"].remove(answers.as_uri())
    assert check_book.problems(info, book, lessons) == [
        "lessons/01_a.html: no link to the answers page lessons/solutions/01_solutions.html"]
    del info[answers]
    assert check_book.problems(info, book, lessons)[0] == \
        "lessons/solutions/01_solutions.html: no answers page for lessons/01_a.html"


def test_stray_italics_wide_lines_and_broken_links_are_problems(tmp_path):
    book, lessons, info = _book(tmp_path)
    page = next(iter(lessons))
    info[page]["glued"] = ["width L<em>2</>D would"]
    info[page]["wide"] = ["x" * 150]
    info[page]["links"].append((book / "nowhere.html").as_uri())
    info[page]["links"].append((book / "index.html").as_uri() + "#no-such-section")
    found = check_book.problems(info, book, lessons)
    assert [p.split(": ", 2)[1] for p in found] == [
        "link does not resolve", "link to a missing anchor", "text italicised by a stray '*' (use a code span)",
        "a line wider than the page (150 characters)"], found


def _has_browser() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return bool((shutil.which("chromium") or shutil.which("chromium-browser")) and shutil.which("chromedriver"))


@pytest.mark.skipif(not _has_browser(), reason="needs selenium, Chromium and chromedriver (the book extra)")
def test_the_browser_sees_stray_italics_and_lines_wider_than_the_page(tmp_path, capsys):
    book = tmp_path / "book"
    head = '<!DOCTYPE html><html><head><style>body{width:600px} pre{overflow-x:auto}</style></head><body><main>'
    pages = {"index.html": '<a href="lessons/01_a.html">1</a><a href="lessons/solutions/01_solutions.html">a</a>',
             "lessons/01_a.html": ('<nav class="sections"><a href="#s">s</a></nav><h2 id="s">s</h2>'
                                   '<p>width L<em>2</em>D would, but <em>every</em> layer is fine</p>'
                                   f'<pre>{"x = 1  " * 40}</pre><pre>short</pre>'
                                   '<a href="solutions/01_solutions.html">answers</a>'),
             "lessons/solutions/01_solutions.html": '<nav class="sections"><a href="#t">t</a></nav><h2 id="t">t</h2>'}
    for name, body in pages.items():
        (book / name).parent.mkdir(parents=True, exist_ok=True)
        (book / name).write_text(head + body + "</main></body></html>")
    found = check_book.check_book(book, [Path("01_a.py")], shots=())
    assert [p.split(": ", 2)[1][:40] for p in found] == [
        "text italicised by a stray '*' (use a co", "a line wider than the page (280 characte"], found
    assert "width L<em>2</>D would" in found[0] and "3 pages checked, 2 problem(s)" in capsys.readouterr().out


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_arithmetic_in_the_lessons_prose_sits_in_code_spans(path):
    """`L*2*D` outside a code span renders as L<em>2</em>D: a `*` between a letter or digit and
    another is multiplication, and belongs in backticks (check-book catches what this misses)."""
    found = []
    for kind, source in percent.cells(path):
        fenced = False
        for line in source.splitlines() if kind == "markdown" else []:
            if line.strip().startswith("```"):
                fenced = not fenced
            elif not fenced and not line.startswith("    "):
                prose = re.sub(r"`[^`]*`", "``", line)
                found += [line.strip()] if re.search(r"[\w)\]]\*[\w(\[]", prose) else []
    assert not found, f"{path.name}: put these products in code spans:\n" + "\n".join(found)


@pytest.mark.parametrize("path", ALL + sorted((LESSONS / "solutions").glob("[0-9][0-9]_solutions.py")),
                         ids=lambda p: p.stem)
def test_code_lines_fit_the_books_code_box(path):
    """The book never wraps code (a wrapped line reads as two statements), so every line it shows
    as code must fit: a lesson's code cells, an answer's code without its docstrings (those are
    shown as prose)."""
    if path.parent == LESSONS:
        lines = [line for kind, source in percent.cells(path) if kind == "code" for line in source.splitlines()]
    else:
        text = path.read_text()
        docs = {i for node in ast.walk(ast.parse(text)) if isinstance(node, (ast.Module, ast.FunctionDef))
                and ast.get_docstring(node) is not None for i in range(node.body[0].lineno, node.body[0].end_lineno + 1)}
        lines = [line for i, line in enumerate(text.splitlines(), 1) if i not in docs]
    wide = [line for line in lines if len(line) > CODE_WIDTH]
    assert not wide, f"{path.name}: {len(wide)} code line(s) over {CODE_WIDTH} characters:\n" + "\n".join(wide)


def test_the_answers_page_puts_each_exercise_beside_its_answer():
    pytest.importorskip("mistune")
    pytest.importorskip("pygments")
    import book
    lesson = next(x for x in book.course() if x.number == "07")
    html = book.answers_page(lesson, book.markdown())
    items = book.try_items(lesson.source)
    assert len(items) >= 2 and all(f'<h2 id="try-{n}">Try {n}</h2>' in html for n in items)
    assert html.index('<nav class="sections">') < html.index('<h2 id="try-1">')
    answers = re.findall(r"</blockquote>(.*?)<div class=\"answer-code\">", html, flags=re.S)
    assert len(answers) == len(items) and all(len(a) > 40 for a in answers)
    assert not [a for a in answers if "<em>" in a], "an answer's prose was read as markdown: L*D became L<em>..."
