"""Build the course from the lessons' .py sources: executed notebooks, a static HTML book, and a
check of the book in a real browser.

    python lessons/make.py notebooks [NN ...]   # lessons/notebooks/NN_*.ipynb, run with their outputs
    python lessons/make.py book                 # build/book/: README, lessons with outputs, navigation
    python lessons/make.py check-book           # headless Chromium: pages load, images decode,
                                                # internal links resolve; screenshots of two lessons

Needs the `notebooks` extra (executing and rendering: jupytext, ipykernel, nbclient, nbconvert), and
for check-book the `book` extra (selenium) plus Chromium and its driver from the system's packages
(Debian: `apt install chromium chromium-driver`). The notebooks are committed with their outputs, so
they read on a code host without running anything; tests/test_notebooks.py fails when one is out of
sync with its source.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent  # lessons/
ROOT = HERE.parent
NOTEBOOKS = HERE / "notebooks"
BOOK = ROOT / "build" / "book"
sys.path.insert(0, str(HERE))
import percent  # noqa: E402  (the lessons' cell format, standard library only)


def lesson_files(numbers=None) -> list[Path]:
    found = sorted(HERE.glob("[0-9][0-9]_*.py"))
    return [p for p in found if not numbers or p.name[:2] in numbers]


def _need(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError:
        sys.exit(f"error: {module} is not installed: pip install -e '.[{extra}]' "
                 f"(or: pip install --no-deps -r requirements/notebooks.lock -e .)")


# --- notebooks ---------------------------------------------------------------------------------------
def build_notebooks(numbers=None, timeout: int = 600) -> list[Path]:
    """Execute each lesson as a notebook (full mode, as a learner runs it) and write it with its outputs."""
    _need("nbclient", "notebooks")
    import nbformat
    from nbclient import NotebookClient
    NOTEBOOKS.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MINIGPT_PTV2_QUICK", "MINIGPT_PTV2_FIGURES")}
    written = []
    for path in lesson_files(numbers):
        nb = nbformat.reads(json.dumps(percent.notebook(path)), as_version=4)
        start = time.perf_counter()
        old = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(HERE)}}).execute()
        finally:
            os.environ.clear()
            os.environ.update(old)
        seconds = time.perf_counter() - start
        nb.metadata["minigpt_ptv2"] = {"source": path.name, "seconds": round(seconds, 1)}
        out = NOTEBOOKS / (path.stem + ".ipynb")
        nbformat.write(nb, str(out))
        written.append(out)
        print(f"{out.relative_to(ROOT)}: executed in {seconds:.0f} s", flush=True)
    return written


# --- the book -----------------------------------------------------------------------------------------
STYLE = """
body { max-width: 60rem; margin: 0 auto; padding: 0 1rem 3rem; font-family: system-ui, sans-serif; line-height: 1.5; }
nav.book { display: flex; justify-content: space-between; gap: 1rem; padding: .6rem 0; border-bottom: 1px solid #ccc;
           margin-bottom: 1rem; font-size: .95rem; }
nav.book.bottom { border-top: 1px solid #ccc; border-bottom: none; margin-top: 2rem; }
pre, code { font-size: .9em; } pre { overflow-x: auto; background: #f6f6f6; padding: .6rem; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: .2rem .5rem; vertical-align: top; }
img { max-width: 100%; }
"""


def _nav(prev, index, nxt, where: str) -> str:
    left = f'<a href="{prev[0]}">&larr; {html.escape(prev[1])}</a>' if prev else "<span></span>"
    right = f'<a href="{nxt[0]}">{html.escape(nxt[1])} &rarr;</a>' if nxt else "<span></span>"
    return f'<nav class="book {where}">{left}<a href="{index}">contents</a>{right}</nav>'


def _page(title: str, body: str, nav: str) -> str:
    bottom = nav.replace('class="book top"', 'class="book bottom"')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{nav}{body}{bottom}</body></html>\n")


def _title(path: Path) -> str:
    first = percent.cells(path)[0][1].splitlines()[0]
    return first.lstrip("# ").strip()


def _rewrite_links(text: str, source: Path, pages: dict, out: Path, copies: set) -> str:
    """Point links of a rendered page at the book's pages (lessons, rendered .md) or at copies
    of the files they name, so every internal link resolves inside the book."""
    def fix(m):
        attr, target = m.group(1), m.group(2)
        if re.match(r"^[a-z]+:|^#|^data:", target):
            return m.group(0)
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve()
        if resolved in pages:
            href = os.path.relpath(pages[resolved], out.parent)
        elif resolved.is_file() and ROOT in resolved.parents:
            copies.add(resolved)
            href = os.path.relpath(BOOK / resolved.relative_to(ROOT), out.parent)
        else:
            return m.group(0)  # left as it is: check-book reports it if it does not resolve
        return f'{attr}="{href}{"#" + anchor if anchor else ""}"'
    return re.sub(r'(href|src)="([^"]+)"', fix, text)


def build_book() -> Path:
    """README + lessons (from the executed notebooks) + the .md files they link to, as HTML."""
    _need("nbconvert", "notebooks")
    import mistune
    import nbformat
    from nbconvert import HTMLExporter
    if BOOK.exists():
        shutil.rmtree(BOOK)
    BOOK.mkdir(parents=True)
    lessons = lesson_files()
    missing = [p.name for p in lessons if not (NOTEBOOKS / (p.stem + ".ipynb")).exists()]
    if missing:
        sys.exit(f"error: no executed notebook for {missing}: run `python lessons/make.py notebooks` first")
    markdown_sources = [ROOT / "README.md", HERE / "README.md", ROOT / "benchmarks" / "README.md",
                        ROOT / "requirements" / "README.md", ROOT / "minigpt_ptv2" / "data" / "sst2_sample" / "SOURCE.md"]
    pages = {ROOT / "README.md": BOOK / "index.html", HERE / "README.md": BOOK / "lessons" / "index.html"}
    for md in markdown_sources[2:]:
        pages[md] = BOOK / md.relative_to(ROOT).with_suffix(".html")
    for p in lessons:
        pages[p.resolve()] = BOOK / "lessons" / (p.stem + ".html")
        pages[(NOTEBOOKS / (p.stem + ".ipynb")).resolve()] = pages[p.resolve()]
    copies: set = set()
    to_html = mistune.create_markdown(plugins=["table", "strikethrough"], escape=False)
    order = [(pages[p.resolve()], _title(p)) for p in lessons]
    contents = BOOK / "lessons" / "index.html"

    for md in markdown_sources:
        out = pages[md]
        out.parent.mkdir(parents=True, exist_ok=True)
        nav = _nav(None, os.path.relpath(contents, out.parent), (os.path.relpath(order[0][0], out.parent),
                   order[0][1]) if md.name == "README.md" and md.parent in (ROOT, HERE) else None, "top")
        body = _rewrite_links(to_html(md.read_text(encoding="utf-8")), md, pages, out, copies)
        out.write_text(_page(md.parent.name if md != ROOT / "README.md" else "minigpt_ptv2", body, nav))

    exporter = HTMLExporter(template_name="lab")
    for i, p in enumerate(lessons):
        out = pages[p.resolve()]
        nb = nbformat.read(str(NOTEBOOKS / (p.stem + ".ipynb")), as_version=4)
        body, _ = exporter.from_notebook_node(nb)
        body = _rewrite_links(body, p, pages, out, copies)
        prev = (os.path.relpath(order[i - 1][0], out.parent), order[i - 1][1]) if i else None
        nxt = (os.path.relpath(order[i + 1][0], out.parent), order[i + 1][1]) if i + 1 < len(order) else None
        nav = _nav(prev, "index.html", nxt, "top")
        bottom = nav.replace('class="book top"', 'class="book bottom"')
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + f"<style>{STYLE}</style>" + nav, body, count=1)
        body = body.replace("</body>", bottom + "</body>", 1)
        out.write_text(body)
    for src in sorted(copies):
        dst = BOOK / src.relative_to(ROOT)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    n = len(list(BOOK.rglob("*.html")))
    print(f"{BOOK.relative_to(ROOT)}/index.html: {n} pages, {len(copies)} linked files copied")
    return BOOK / "index.html"


# --- check the book in a browser ----------------------------------------------------------------------
CHECK = """
const imgs = Array.from(document.images).map(i => ({src: i.src.slice(0, 120), ok: i.complete && i.naturalWidth > 0}));
const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.href);
return {ready: document.readyState, title: document.title, imgs: imgs, links: links,
        errors: Array.from(document.querySelectorAll('.output_error, .jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')).length};
"""


def check_book(screenshots=("07", "15")) -> int:
    """Open every page of the book in headless Chromium; returns the number of problems found."""
    _need("selenium", "book")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from urllib.parse import unquote, urlparse
    if not (BOOK / "index.html").exists():
        sys.exit("error: no book: run `python lessons/make.py book` first")
    opts = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1600"):
        opts.add_argument(flag)
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    problems, pages = 0, sorted(BOOK.rglob("*.html"))
    shots = BOOK / "screenshots"
    shots.mkdir(exist_ok=True)
    try:
        for page in pages:
            driver.get(page.as_uri())
            for _ in range(50):  # get() returns at the load event; give a slow page up to 10 s more
                info = driver.execute_script(CHECK)
                if info["ready"] == "complete":
                    break
                time.sleep(0.2)
            bad_imgs = [i["src"] for i in info["imgs"] if not i["ok"]]
            bad_links = []
            for href in info["links"]:
                url = urlparse(href)
                if url.scheme != "file":
                    continue
                target = Path(unquote(url.path))
                if not target.exists():
                    bad_links.append(href)
                elif url.fragment and target.suffix == ".html":
                    ids = {html.unescape(x) for x in
                           re.findall(r'id="([^"]+)"', target.read_text(encoding="utf-8", errors="replace"))}
                    if url.fragment not in ids and unquote(url.fragment) not in ids:  # as browsers look
                        bad_links.append(href)
            status = "ok" if info["ready"] == "complete" and not bad_imgs and not bad_links else "PROBLEM"
            if info["ready"] != "complete":
                print(f"        did not finish loading (document.readyState {info['ready']!r})")
            problems += len(bad_imgs) + len(bad_links) + (info["ready"] != "complete")
            print(f"{status:8s}{page.relative_to(BOOK)}: {len(info['imgs'])} images, {len(info['links'])} links, "
                  f"error outputs {info['errors']}")
            for x in bad_imgs:
                print(f"        image does not decode: {x}")
            for x in bad_links:
                print(f"        link does not resolve: {x}")
            if page.parent.name == "lessons" and page.name[:2] in screenshots:
                height = driver.execute_script("return document.body.scrollHeight")
                driver.set_window_size(1280, min(max(height, 800), 6000))
                shot = shots / (page.stem + ".png")
                driver.save_screenshot(str(shot))
                driver.set_window_size(1280, 1600)
                print(f"        screenshot {shot.relative_to(ROOT)}")
    finally:
        driver.quit()
    print(f"{len(pages)} pages checked, {problems} problem(s)")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    nb = sub.add_parser("notebooks", help="execute the lessons into lessons/notebooks/*.ipynb")
    nb.add_argument("numbers", nargs="*", help="lesson numbers (default: all), e.g. 07 15")
    sub.add_parser("book", help="render README + notebooks into build/book/")
    sub.add_parser("check-book", help="open every page of build/book/ in headless Chromium")
    args = ap.parse_args(argv)
    if args.what == "notebooks":
        build_notebooks(args.numbers)
        return 0
    if args.what == "book":
        build_book()
        return 0
    return 1 if check_book() else 0


if __name__ == "__main__":
    sys.exit(main())
