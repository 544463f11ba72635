"""The course as a static website, build/book/: a landing page that is the course, every lesson
with its outputs, every answer, and the READMEs they link to.

    index.html                          the course: what you will learn, the lessons (title, one
                                        line, reading time, run time), links to lessons and answers
    lessons/NN_*.html                   a lesson (its executed notebook): prev/next, its section
                                        list, its answers' link; outputs framed and labelled "Out"
    lessons/solutions/NN_solutions.html each "Try this" item beside its worked answer and code
    readme.html, lessons/readme.html... the READMEs, links pointing into the book

The one-line summaries and run times come from the reading-order table of lessons/README.md
(`| NN | `file` | in one line | time |`), the titles from each lesson's first heading, the
reading time from its words (prose at 200 words a minute, code at 30 lines a minute).
Used by `python lessons/make.py book`; needs the `notebooks` extra (nbconvert, mistune).
"""
from __future__ import annotations

import ast
import html
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import percent

HERE = Path(__file__).resolve().parent  # lessons/
ROOT = HERE.parent
NOTEBOOKS = HERE / "notebooks"
SOLUTIONS = HERE / "solutions"
BOOK = ROOT / "build" / "book"
MARKDOWN = [ROOT / "README.md", HERE / "README.md", ROOT / "benchmarks" / "README.md",
            ROOT / "requirements" / "README.md", ROOT / "minigpt_ptv2" / "data" / "sst2_sample" / "SOURCE.md"]
WORDS_PER_MINUTE, CODE_LINES_PER_MINUTE = 200, 30

STYLE = """
body { max-width: 66rem; margin: 0 auto; padding: 0 1rem 3rem; font-family: system-ui, sans-serif;
       line-height: 1.5; color: #1d1d1d; }
p, li, dd, blockquote { max-width: 48rem; }
p:has(> img) { max-width: none; }  /* a figure takes the whole width */
a { color: #0b5cad; }
nav.book { display: flex; justify-content: space-between; gap: 1rem; padding: .6rem 0; font-size: .95rem;
           border-bottom: 1px solid #ccc; margin-bottom: 1rem; }
nav.book.bottom { border-top: 1px solid #ccc; border-bottom: none; margin-top: 2rem; }
nav.sections { background: #f7f7f2; border: 1px solid #e2e2d8; border-radius: 4px; padding: .5rem 1rem;
               margin: 1rem 0; max-width: 46rem; }
nav.sections ul { margin: .3rem 0; padding-left: .2rem; list-style: none; } nav.sections li { margin: .1rem 0; }
a.anchor-link { visibility: hidden; text-decoration: none; margin-left: .3rem; font-size: .8em; }
h1:hover a.anchor-link, h2:hover a.anchor-link, h3:hover a.anchor-link { visibility: visible; }
td.nowrap { white-space: nowrap; }
p.meta { color: #555; font-size: .95rem; margin-top: -.4rem; }
p.answers a, a.answers { font-weight: 600; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; }
pre { margin: 0; padding: .5rem .7rem; overflow-x: auto; line-height: 1.35; }
:not(pre) > code { background: #f1f1ef; padding: 0 .2em; border-radius: 3px; }
table { border-collapse: collapse; margin: .6rem 0; }
td, th { border: 1px solid #ddd; padding: .25rem .55rem; vertical-align: top; text-align: left; }
img { max-width: 100%; }
details { margin: .4rem 0; } summary { cursor: pointer; color: #0b5cad; }
/* notebook cells (nbconvert's basic template): code on grey, its output framed below it, labelled */
.prompt { display: none; }
.cell { margin: .8rem 0; }
.input_area { background: #f4f4f4; border-left: 4px solid #a9a9a9; position: relative; }
.output_wrapper { border: 1px solid #c6d9ec; border-left: 4px solid #4a86c5; background: #fff;
                  margin-top: 2px; position: relative; }
.input_area::before, .output_wrapper::before { position: absolute; top: 0; right: 0; font: 600 11px system-ui;
                  padding: 1px 6px; color: #fff; border-bottom-left-radius: 3px; }
.input_area::before { content: "In"; background: #8a8a8a; }
.output_wrapper::before { content: "Out"; background: #4a86c5; }
.output_area pre { background: transparent; white-space: pre-wrap; overflow-wrap: anywhere; }  /* text: wraps */
.output_png { padding: .4rem; } .output_png img { display: block; }
/* an answer: the exercise, then the answer, then its code */
blockquote.exercise { margin: .5rem 0; padding: .3rem .9rem; border-left: 4px solid #c9b458; background: #fbf8ea; }
div.answer-code { background: #f4f4f4; border-left: 4px solid #a9a9a9; position: relative; }
"""


@dataclass
class Lesson:
    number: str
    source: Path  # lessons/NN_*.py
    title: str  # its first heading, without "Lesson NN — "
    summary: str  # one line, from lessons/README.md
    time: str  # its run time, from lessons/README.md ("6 s")
    minutes: int  # reading time

    @property
    def page(self) -> Path:
        return BOOK / "lessons" / (self.source.stem + ".html")

    @property
    def answers(self) -> Path:
        return SOLUTIONS / f"{self.number}_solutions.py"

    @property
    def answers_page(self) -> Path:
        return BOOK / "lessons" / "solutions" / f"{self.number}_solutions.html"


def lesson_files() -> list[Path]:
    return sorted(HERE.glob("[0-9][0-9]_*.py"))


def reading_order() -> dict:
    """{NN: (one-line summary, time)} from lessons/README.md's reading-order table."""
    rows = re.findall(r"^\| (\d\d) \| `[^`]+` \| (.+?) \| ([^|]*) \|$", (HERE / "README.md").read_text(), flags=re.M)
    return {n: (summary.strip(), time.strip()) for n, summary, time in rows}


def reading_minutes(path: Path) -> int:
    words = code = 0
    for kind, source in percent.cells(path):
        if kind == "markdown":
            words += len(source.split())
        else:
            code += sum(1 for line in source.splitlines() if line.strip())
    return max(1, math.ceil(words / WORDS_PER_MINUTE + code / CODE_LINES_PER_MINUTE))


def course() -> list[Lesson]:
    order = reading_order()
    lessons = []
    for path in lesson_files():
        heading = percent.cells(path)[0][1].splitlines()[0].lstrip("# ").strip()
        title = re.sub(r"^Lesson \d+\s*[—-]\s*", "", heading)
        summary, time = order.get(path.name[:2], ("", ""))
        lessons.append(Lesson(path.name[:2], path, title, summary, time, reading_minutes(path)))
    return lessons


# --- pieces of a page ---------------------------------------------------------------------------------
def slug(text: str) -> str:
    """A heading's anchor as a code host spells it ("The teaching path" -> "the-teaching-path"), so
    a README's links to its own sections work in the book too."""
    words = html.unescape(re.sub(r"<[^>]+>", "", text)).strip().lower()
    return re.sub(r"[^\w\- ]", "", words).replace(" ", "-") or "section"


def add_heading_ids(body: str) -> str:
    """id="..." on every h2/h3 that has none (mistune writes none), unique within the page."""
    seen: set = set()

    def fix(m):
        tag, attrs, text = m.group(1), m.group(2), m.group(3)
        if "id=" in attrs:
            return m.group(0)
        base = slug(text)
        key, i = base, 2
        while key in seen:
            key, i = f"{base}-{i}", i + 1
        seen.add(key)
        return f'<{tag}{attrs} id="{key}">{text}</{tag}>'
    return re.sub(r"<(h[23])([^>]*)>(.*?)</\1>", fix, body, flags=re.S)


def sections(body: str) -> list[tuple[str, str]]:
    """[(id, text)] of the page's h2 headings, in order."""
    out = []
    for anchor, inner in re.findall(r'<h2[^>]*\bid="([^"]+)"[^>]*>(.*?)</h2>', body, flags=re.S):
        text = re.sub(r'<a class="anchor-link".*?</a>', "", inner)
        out.append((anchor, re.sub(r"<[^>]+>", "", text).strip()))
    return out


def section_list(body: str, title: str = "In this page") -> str:
    items = "".join(f'<li><a href="#{a}">{t}</a></li>' for a, t in sections(body))
    return f'<nav class="sections"><strong>{title}</strong><ul>{items}</ul></nav>' if items else ""


def rel(target: Path, page: Path) -> str:
    return os.path.relpath(target, page.parent)


def nav(page: Path, prev, nxt, where: str) -> str:
    """prev / next: (page, label) or None."""
    left = f'<a href="{rel(prev[0], page)}">&larr; {html.escape(prev[1])}</a>' if prev else "<span></span>"
    right = f'<a href="{rel(nxt[0], page)}">{html.escape(nxt[1])} &rarr;</a>' if nxt else "<span></span>"
    return f'<nav class="book {where}">{left}<a href="{rel(BOOK / "index.html", page)}">the course</a>{right}</nav>'


def document(page: Path, title: str, body: str, prev=None, nxt=None) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="{rel(BOOK / "book.css", page)}"></head><body>'
            f'{nav(page, prev, nxt, "top")}<main>{body}</main>{nav(page, prev, nxt, "bottom")}</body></html>\n')


def rewrite_links(text: str, source: Path, pages: dict, page: Path, copies: set) -> str:
    """Point a page's links at the book's pages (lessons, answers, READMEs) or at copies of the
    files they name, so every internal link resolves inside the book."""
    def fix(m):
        attr, target = m.group(1), m.group(2)
        if re.match(r"^[a-z]+:|^#|^data:", target):
            return m.group(0)
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve()
        if resolved in pages:
            href = rel(pages[resolved], page)
        elif resolved.is_file() and ROOT in resolved.parents:
            copies.add(resolved)
            href = rel(BOOK / resolved.relative_to(ROOT), page)
        else:
            return m.group(0)  # left as it is: check-book reports it if it does not resolve
        return f'{attr}="{href}{"#" + anchor if anchor else ""}"'
    return re.sub(r'(href|src)="([^"]+)"', fix, text)


def prose(text: str) -> str:
    """A docstring as HTML: its paragraphs, `code spans` as code, nothing else read as markdown
    (a docstring's `L*2*D` is arithmetic, not emphasis)."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    code = lambda p: re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(p, quote=False))  # noqa: E731
    return "".join(f"<p>{code(p)}</p>" for p in paragraphs)


def markdown():
    import mistune
    return mistune.create_markdown(plugins=["table", "strikethrough"], escape=False)


# --- the pages ----------------------------------------------------------------------------------------
def landing(lessons: list[Lesson], to_html) -> str:
    """The course page: the lessons README's opening, what you will learn, the lessons, where next."""
    text = (HERE / "README.md").read_text(encoding="utf-8")
    opening = text.split("\n\n")[1].split(". Each lesson is")[0] + "."
    learn = re.search(r"^## What you will learn\n(.*?)(?=^## )", text, flags=re.M | re.S)
    page = BOOK / "index.html"
    rows = []
    for x in lessons:
        rows.append(f'<tr><td>{x.number}</td><td><a href="{rel(x.page, page)}"><strong>{html.escape(x.title)}'
                    f'</strong></a><br>{re.sub(r"^<p>|</p>$", "", to_html(x.summary).strip())}</td>'
                    f'<td class="nowrap">{x.minutes} min</td><td class="nowrap">{html.escape(x.time)}</td>'
                    f'<td><a class="answers" href="{rel(x.answers_page, page)}">answers</a></td></tr>')
    total = sum(x.minutes for x in lessons)
    body = (f"<h1>Deep prompt tuning, from scratch: the course</h1>{to_html(opening)}"
            f"<p>Each lesson is code you read and run: every section's output sits under it, the claims are "
            f"checked by the code that prints them, and each lesson ends with what to remember, questions "
            f"with hidden answers, and exercises whose answers are worked out and run.</p>"
            + (f'<h2 id="what-you-will-learn">What you will learn</h2>{to_html(learn.group(1))}' if learn else "")
            + f'<h2 id="the-lessons">The lessons</h2><p>Read in order; about {total} minutes of reading in all '
              f"(prose at {WORDS_PER_MINUTE} words a minute, code at {CODE_LINES_PER_MINUTE} lines a minute). "
              f'"Runs in" is a full run of the lesson on 2 CPU cores.</p>'
              f'<table><tr><th>#</th><th>lesson</th><th>read</th><th>runs in</th><th></th></tr>{"".join(rows)}</table>'
            + '<h2 id="more">More</h2><ul>'
              f'<li><a href="lessons/readme.html">How to run the lessons</a>: as notebooks, as scripts, '
              f'the notation, the five tutorials the lessons take apart.</li>'
              f'<li><a href="readme.html">The project README</a>: the package, its guarantees, its commands.</li>'
              f"</ul>")
    return body.replace("</h1>", "</h1>" + section_list(body, "On this page"), 1)


def lesson_page(x: Lesson, exporter, pages: dict, copies: set) -> str:
    import nbformat
    notebook = NOTEBOOKS / (x.source.stem + ".ipynb")
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4))
    body = rewrite_links(body, notebook, pages, x.page, copies)  # links are relative to the notebook
    meta = (f'<p class="meta">Lesson {x.number} &middot; about {x.minutes} min to read'
            + (f" &middot; runs in {html.escape(x.time)}" if x.time else "")
            + f' &middot; <a class="answers" href="{rel(x.answers_page, x.page)}">answers to its exercises</a></p>')
    body = re.sub(r"(</h1>)", lambda m: m.group(1) + meta + section_list(body, "In this lesson"), body, count=1)
    link = (f'<p class="answers"><a href="{rel(x.answers_page, x.page)}">The answers, worked and run: '
            f'lesson {x.number}\'s solutions &rarr;</a></p>')
    return re.sub(r'(<h2 id="Try-this">.*?</h2>)', lambda m: m.group(1) + link, body, count=1, flags=re.S)


def try_items(path: Path) -> dict:
    """{n: markdown} of a lesson's "Try this" items."""
    text = "\n".join(source for kind, source in percent.cells(path) if kind == "markdown")
    m = re.search(r"^## Try this\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    items, current = {}, None
    for line in (m.group(1) if m else "").splitlines():
        start = re.match(r"^(\d+)\. (.*)", line)
        if start:
            current = int(start.group(1))
            items[current] = start.group(2)
        elif current is not None and (line.startswith("   ") or not line.strip()):
            items[current] += "\n" + line.strip()
    return items


def answers_page(x: Lesson, to_html) -> str:
    """Each "Try this" item of the lesson, its answer (the docstring) and the code that shows it."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer
    source = x.answers.read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines()

    def code(node) -> str:  # the function without its docstring (shown above it as the answer)
        skip = range(node.body[0].lineno, node.body[0].end_lineno + 1) if ast.get_docstring(node) else range(0)
        return "\n".join(line for i, line in enumerate(lines[node.lineno - 1:node.end_lineno], node.lineno)
                         if i not in skip)
    shown = lambda text: highlight(text, PythonLexer(), HtmlFormatter(nowrap=False))  # noqa: E731
    items = try_items(x.source)
    parts, shared = [], []
    for node in tree.body:
        name = getattr(node, "name", "")
        if re.fullmatch(r"try_\d+", name):
            n = int(name[4:])
            doc = ast.get_docstring(node) or ""
            parts.append(f'<h2 id="try-{n}">Try {n}</h2>'
                         f'<blockquote class="exercise">{to_html(items.get(n, "(not in the lesson)"))}</blockquote>'
                         f"<p><strong>Answer.</strong></p>{prose(doc)}"
                         f'<div class="answer-code">{shown(code(node))}</div>')
        elif isinstance(node, ast.If) or (isinstance(node, ast.Expr) and node is tree.body[0]):
            continue  # the module docstring, and the block that runs every answer as a script
        else:
            shared.append("\n".join(lines[node.lineno - 1 - len(getattr(node, "decorator_list", [])):node.end_lineno]))
    lesson_link = f'<a href="{rel(x.page, x.answers_page)}">lesson {x.number}, {html.escape(x.title)}</a>'
    body = (f"<h1>Answers: lesson {x.number}, {html.escape(x.title)}</h1>"
            f"<p>The exercises of {lesson_link}, each with its answer and the code that finds it. The test "
            f"suite runs every one, so each answer stays true. Run them yourself: "
            f"<code>python lessons/solutions/{x.answers.name}</code>.</p>"
            + "".join(parts)
            + f'<h2 id="shared-code">The code the answers share</h2>'
              f'<div class="answer-code">{shown(chr(10).join(shared))}</div>')
    return body.replace("</h1>", "</h1>" + section_list(body, "On this page"), 1)


def build_book() -> Path:
    """Write build/book/ from the lessons, their executed notebooks, the answers and the READMEs."""
    from nbconvert import HTMLExporter
    from pygments.formatters import HtmlFormatter
    lessons = course()
    missing = [x.source.name for x in lessons if not (NOTEBOOKS / (x.source.stem + ".ipynb")).exists()]
    if missing:
        raise SystemExit(f"error: no executed notebook for {missing}: run `python lessons/make.py notebooks` first")
    if BOOK.exists():
        shutil.rmtree(BOOK)
    BOOK.mkdir(parents=True)
    (BOOK / "book.css").write_text(STYLE + HtmlFormatter().get_style_defs(".highlight"))
    pages = {ROOT / "README.md": BOOK / "readme.html", HERE / "README.md": BOOK / "lessons" / "readme.html"}
    for md in MARKDOWN[2:]:
        pages[md] = BOOK / md.relative_to(ROOT).with_suffix(".html")
    for x in lessons:
        pages[x.source.resolve()] = x.page
        pages[(NOTEBOOKS / (x.source.stem + ".ipynb")).resolve()] = x.page
        pages[x.answers.resolve()] = x.answers_page
    copies: set = set()
    to_html = markdown()

    def write(page: Path, title: str, body: str, prev=None, nxt=None):
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(document(page, title, body, prev, nxt), encoding="utf-8")

    first = (lessons[0].page, f"Lesson {lessons[0].number}")
    write(BOOK / "index.html", "minigpt_ptv2: the course", landing(lessons, to_html), None, first)
    for md in MARKDOWN:
        page = pages[md]
        body = add_heading_ids(rewrite_links(to_html(md.read_text(encoding="utf-8")), md, pages, page, copies))
        body = re.sub(r"(</h1>)", lambda m: m.group(1) + section_list(body), body, count=1) \
            if "</h1>" in body else section_list(body) + body
        write(page, md.relative_to(ROOT).as_posix(), body)

    exporter = HTMLExporter(template_name="basic")
    for i, x in enumerate(lessons):
        prev = (lessons[i - 1].page, f"Lesson {lessons[i - 1].number}") if i else None
        nxt = (lessons[i + 1].page, f"Lesson {lessons[i + 1].number}") if i + 1 < len(lessons) else None
        write(x.page, f"Lesson {x.number}: {x.title}", lesson_page(x, exporter, pages, copies), prev, nxt)
        prev = (lessons[i - 1].answers_page, f"Answers {lessons[i - 1].number}") if i else None
        nxt = (lessons[i + 1].answers_page, f"Answers {lessons[i + 1].number}") if i + 1 < len(lessons) else None
        write(x.answers_page, f"Answers: lesson {x.number}", answers_page(x, to_html), prev, nxt)
    for src in sorted(copies):
        dst = BOOK / src.relative_to(ROOT)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    n = len(list(BOOK.rglob("*.html")))
    print(f"{BOOK.relative_to(ROOT)}/index.html: {n} pages, {len(copies)} linked files copied")
    return BOOK / "index.html"
