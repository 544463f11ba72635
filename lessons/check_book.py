"""Check the built book (build/book/) in headless Chromium, as a learner's browser shows it.

Every page must load, decode every image and resolve every internal link (to its #anchor too).
And the course must be navigable and readable:

- every lesson has a page, linked from the landing page (an unlinked lesson is lost);
- every lesson has an answers page, linked from the landing page and from the lesson;
- every page with two or more sections lists them, each linked, near its top;
- no text is italicised by a stray `*` in arithmetic (`L*2*D` written outside a code span
  renders as L<em>2</em>D): an <em> or <strong> glued to a letter or digit on both sides;
- no line of code or output is wider than its box (at a 1280-pixel window): a learner reads
  every line whole, without scrolling sideways.

`problems(info, lessons)` turns what the browser saw into the list of problems (no browser
needed, so each rule is tested on its own case); `check_book()` drives the browser, prints a
line per page and saves screenshots of the landing page, one lesson and one answers page.
"""
from __future__ import annotations

import html
import re
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

HERE = Path(__file__).resolve().parent  # lessons/
BOOK = HERE.parent / "build" / "book"
WINDOW = (1280, 1600)

COLLECT = """
const text = n => n ? n.textContent : "";
const glued = Array.from(document.querySelectorAll('main em, main strong')).filter(e => {
  const before = text(e.previousSibling).slice(-1), after = text(e.nextSibling).slice(0, 1);
  return /[A-Za-z0-9)\\]]/.test(before) && /[A-Za-z0-9(\\[]/.test(after);
}).map(e => text(e.previousSibling).slice(-12) + '<' + e.tagName.toLowerCase() + '>' + text(e) + '</>' +
       text(e.nextSibling).slice(0, 12));
const wide = Array.from(document.querySelectorAll('pre')).filter(p => p.scrollWidth > p.clientWidth + 1)
  .map(p => p.textContent.split('\\n').reduce((a, b) => b.length > a.length ? b : a, ''));
return {ready: document.readyState, title: document.title,
        imgs: Array.from(document.images).map(i => ({src: i.src.slice(0, 160), ok: i.complete && i.naturalWidth > 0})),
        links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
        h2: Array.from(document.querySelectorAll('main h2[id]')).map(h => h.id),
        listed: Array.from(document.querySelectorAll('nav.sections a')).map(a => a.getAttribute('href')),
        glued: glued, wide: wide};
"""


def lesson_pages(book: Path = BOOK, sources=None) -> dict:
    """{lesson page: its answers page} that the book must have, one per lessons/NN_*.py."""
    sources = sources if sources is not None else sorted(HERE.glob("[0-9][0-9]_*.py"))
    return {book / "lessons" / (p.stem + ".html"): book / "lessons" / "solutions" / f"{p.name[:2]}_solutions.html"
            for p in sources}


def _target(href: str) -> tuple[Path | None, str]:
    url = urlparse(href)
    return (Path(unquote(url.path)), url.fragment) if url.scheme == "file" else (None, "")


def problems(info: dict, book: Path, lessons: dict) -> list[str]:
    """What is wrong, as one line each. info: {page path: what COLLECT returned on it}."""
    out = []
    landing = book / "index.html"
    linked_from = {page: {_target(h)[0] for h in got["links"]} for page, got in info.items()}
    for page, answers in lessons.items():
        name = page.relative_to(book)
        if page not in info:
            out.append(f"{name}: no page for this lesson")
        elif page not in linked_from.get(landing, set()):
            out.append(f"{name}: the landing page does not link this lesson")
        if answers not in info:
            out.append(f"{answers.relative_to(book)}: no answers page for {name}")
        else:
            for where in (landing, page):
                if where in info and answers not in linked_from[where]:
                    out.append(f"{where.relative_to(book)}: no link to the answers page {answers.relative_to(book)}")
    for page, got in sorted(info.items()):
        name = page.relative_to(book)
        if got["ready"] != "complete":
            out.append(f"{name}: did not finish loading (document.readyState {got['ready']!r})")
        out += [f"{name}: image does not decode: {i['src']}" for i in got["imgs"] if not i["ok"]]
        for href in got["links"]:
            target, anchor = _target(href)
            if target is None:
                continue
            if not target.exists():
                out.append(f"{name}: link does not resolve: {href}")
            elif anchor and target.suffix == ".html":
                ids = {html.unescape(x) for x in re.findall(r'id="([^"]+)"', target.read_text(errors="replace"))}
                if anchor not in ids and unquote(anchor) not in ids:
                    out.append(f"{name}: link to a missing anchor: {href}")
        needs_list = len(got["h2"]) >= 2 or page in lessons or page in lessons.values()
        if needs_list and not got["listed"]:
            out.append(f"{name}: no section list")
        elif needs_list:
            unlisted = [h for h in got["h2"] if f"#{h}" not in got["listed"]]
            if unlisted:
                out.append(f"{name}: the section list misses {unlisted}")
        out += [f"{name}: text italicised by a stray '*' (use a code span): {g}" for g in got["glued"]]
        out += [f"{name}: a line wider than the page ({len(w)} characters): {w.strip()[:100]}" for w in got["wide"]]
    return out


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        opts.add_argument(flag)
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def look(driver, page: Path) -> dict:
    driver.get(page.as_uri())
    for _ in range(50):  # get() returns at the load event; give a slow page up to 10 s more
        got = driver.execute_script(COLLECT)
        if got["ready"] == "complete":
            return got
        time.sleep(0.2)
    return got


def screenshot(driver, page: Path, out: Path, max_height: int = 5000) -> Path:
    driver.get(page.as_uri())
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(WINDOW[0], min(max(height, 800), max_height))
    driver.save_screenshot(str(out))
    driver.set_window_size(*WINDOW)
    return out


def check_book(book: Path = BOOK, sources=None, shots=("index.html", "lessons/07_", "lessons/solutions/07_")) -> list:
    """Open every page of `book`; print what is wrong; return the problems (empty: all good)."""
    if not (book / "index.html").exists():
        raise SystemExit(f"error: no book in {book}: run `python lessons/make.py book` first")
    driver = _browser()
    info, saved = {}, []
    try:
        for page in sorted(book.rglob("*.html")):
            info[page] = look(driver, page)
            rel = page.relative_to(book).as_posix()
            if any(rel.startswith(s) for s in shots):
                (book / "screenshots").mkdir(exist_ok=True)
                saved.append(screenshot(driver, page, book / "screenshots" / (rel.replace("/", "_")[:-5] + ".png")))
    finally:
        driver.quit()
    found = problems(info, book, lesson_pages(book, sources))
    for page, got in sorted(info.items()):
        bad = [p for p in found if p.startswith(f"{page.relative_to(book)}:")]
        print(f"{'ok' if not bad else 'PROBLEM':8s}{page.relative_to(book)}: {len(got['imgs'])} images, "
              f"{len(got['links'])} links, {len(got['h2'])} sections")
        for p in bad:
            print(f"        {p.split(': ', 1)[1]}")
    for p in found:
        if not any(p.startswith(f"{page.relative_to(book)}:") for page in info):
            print(f"PROBLEM {p}")
    for shot in saved:
        print(f"screenshot {shot}")
    print(f"{len(info)} pages checked, {len(found)} problem(s)")
    return found
