"""Build the course from the lessons' .py sources: executed notebooks, their run times, a static
HTML book, and a check of the book in a real browser.

    python lessons/make.py notebooks [NN ...]   # lessons/notebooks/NN_*.ipynb, run as a learner's first run
    python lessons/make.py times [NN ...]       # run each lesson as a script, write lessons/README.md's times
    python lessons/make.py book                 # build/book/: the course, lessons, answers, READMEs (book.py)
    python lessons/make.py check-book           # headless Chromium: the checks of check_book.py, screenshots

A learner's first run has no data folder and no model of their own: `notebooks` and `times` run
every lesson with MINIGPT_PTV2_DATA=none (the SST-2 sample shipped in the package, even where a
data folder would be found beside the checkout) and without MINIGPT_PTV2_MODEL (the shipped
MiniLM), unless `--data-dir PATH` says otherwise; each notebook records which in its metadata
(`"data": "shipped"` or `"data folder"`), and tests/test_notebooks.py refuses a committed notebook
that used data a learner does not have.

Needs the `notebooks` extra (executing and rendering: jupytext, ipykernel, nbclient, nbconvert), and
for check-book the `book` extra (selenium) plus Chromium and its driver from the system's packages
(Debian: `apt install chromium chromium-driver`). The notebooks are committed with their outputs, so
they read on a code host without running anything; tests/test_notebooks.py fails when one is out of
sync with its source.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent  # lessons/
ROOT = HERE.parent
NOTEBOOKS = HERE / "notebooks"
sys.path.insert(0, str(HERE))
import percent  # noqa: E402  (the lessons' cell format, standard library only)

SHIPPED, DATA_FOLDER = "shipped", "data folder"  # what a notebook's metadata says it ran with


def lesson_files(numbers=None) -> list[Path]:
    found = sorted(HERE.glob("[0-9][0-9]_*.py"))
    return [p for p in found if not numbers or p.name[:2] in numbers]


def _need(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError:
        sys.exit(f"error: {module} is not installed: pip install -e '.[{extra}]' "
                 f"(or: pip install --no-deps -r requirements/notebooks.lock -e .)")


def learner_env(data_dir=None) -> dict:
    """The environment of a learner's first run: no data folder (unless one is given), the
    shipped model, figures shown rather than saved."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MINIGPT_PTV2_FIGURES", "MINIGPT_PTV2_MODEL", "MINIGPT_PTV2_DATA")}
    env["MINIGPT_PTV2_DATA"] = str(Path(data_dir).resolve()) if data_dir else "none"
    return env


@contextlib.contextmanager
def _environment(env: dict):
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


# --- notebooks ---------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a running process so far (Linux's /proc), None where unknown.
    Unlike wall time it does not grow when other work shares the machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def build_notebooks(numbers=None, data_dir=None, timeout: int = 600) -> list[Path]:
    """Execute each lesson as a notebook, as a learner runs it, and write it with its outputs."""
    _need("nbclient", "notebooks")
    import nbformat
    from nbclient import NotebookClient
    NOTEBOOKS.mkdir(exist_ok=True)
    written = []
    for path in lesson_files(numbers):
        nb = nbformat.reads(json.dumps(percent.notebook(path)), as_version=4)
        start = time.perf_counter()
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}})
        cpu = []  # the kernel's CPU time after each cell
        client.on_cell_executed = lambda **_: cpu.append(cpu_seconds(client.km.provisioner.pid))
        with _environment(learner_env(data_dir)):  # the kernel starts with this environment
            client.execute()
        seconds = time.perf_counter() - start
        nb.metadata["minigpt_ptv2"] = {"source": path.name, "seconds": round(seconds, 1),
                                       "cpu_seconds": round(cpu[-1], 1) if cpu and cpu[-1] is not None else None,
                                       "data": DATA_FOLDER if data_dir else SHIPPED}
        out = NOTEBOOKS / (path.stem + ".ipynb")
        nbformat.write(nb, str(out))
        written.append(out)
        used = nb.metadata["minigpt_ptv2"]["cpu_seconds"]
        print(f"{out.relative_to(ROOT)}: executed in {seconds:.0f} s ({used} s of CPU)", flush=True)
    return written


# --- times --------------------------------------------------------------------------------------------
TOTAL = re.compile(r"\*\*[\d,]+ s for the whole course\*\* \(measured on \d+ CPU cores?[^)]*\)")


DECODER = ROOT / "runs" / "decoder"  # where lessons 05, 12, 15 and 16 cache the course's decoder (_course.RUNS)


def measure_times(numbers=None) -> tuple[dict, float, str]:
    """({NN: seconds}, the mean load average while measuring, what happened to the decoder): each
    lesson run as a script (`python lessons/NN_*.py`), wall time, as a learner's first run; the
    lessons run one after another, each in a fresh interpreter. The CPU time and the load average
    are printed beside it: on a busy machine the wall time says more about the others' work than
    about the lesson's. A learner's first run has no runs/decoder, and the first decoder lesson
    builds it: delete that folder first to measure that. The third value says which: "the decoder
    already built", "lesson NN building the decoder", or "" when no lesson measured built it."""
    import resource
    found, loads = {}, []
    decoder = "the decoder already built" if DECODER.is_dir() else ""
    print(f"{os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f} before the first lesson; "
          f"{DECODER.relative_to(ROOT)} {'already built' if decoder else 'not built yet'}", flush=True)
    for path in lesson_files(numbers):
        start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=learner_env(), capture_output=True, text=True)
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode:
            sys.exit(f"error: {path.name} exited {done.returncode}:\n{done.stderr[-2000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        found[path.name[:2]] = seconds
        if not decoder and DECODER.is_dir():
            decoder = f"lesson {path.name[:2]} building the decoder"
        loads.append(os.getloadavg()[0])
        print(f"{path.name}: {seconds:.1f} s wall, {cpu:.1f} s CPU, load average {os.getloadavg()[0]:.1f}", flush=True)
    return found, sum(loads) / len(loads), decoder


def write_times(found: dict, load: float, decoder: str, readme: Path = HERE / "README.md") -> str:
    """Put the measured times in the reading-order table, the course total, the load average it
    was measured under (a quiet machine shows about 0 to 1) and what happened to the decoder
    (measure_times' third value) in its sentence."""
    text = readme.read_text(encoding="utf-8")
    for number, seconds in found.items():
        text, n = re.subn(rf"^(\| {number} \| `[^`]+` \| .+? \| )[^|]*( \|)$",
                          lambda m: f"{m.group(1)}{seconds:.0f} s{m.group(2)}", text, flags=re.M)
        if n != 1:
            sys.exit(f"error: {readme.name} has no reading-order row for lesson {number}")
    rows = re.findall(r"^\| \d\d \| `[^`]+` \| .+? \| (\d+) s \|$", text, flags=re.M)
    total = (f"**{sum(int(s) for s in rows):,} s for the whole course** (measured on {os.cpu_count()} CPU cores, "
             f"load average {load:.1f}{', ' + decoder if decoder else ''})")
    text, n = TOTAL.subn(total, text)
    if n != 1:
        sys.exit(f"error: {readme.name} has no sentence matching {TOTAL.pattern!r} to hold the total")
    readme.write_text(text, encoding="utf-8")
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    nb = sub.add_parser("notebooks", help="execute the lessons into lessons/notebooks/*.ipynb")
    nb.add_argument("numbers", nargs="*", help="lesson numbers (default: all), e.g. 07 15")
    nb.add_argument("--timeout", type=int, default=600, help="seconds a cell may run before the build fails")
    nb.add_argument("--data-dir", default=None,
                    help="run with this data folder (default: none, as a learner's first run; the notebooks "
                         "record it, and a committed notebook must not have one)")
    tm = sub.add_parser("times", help="time each lesson run as a script; write lessons/README.md's times")
    tm.add_argument("numbers", nargs="*", help="lesson numbers (default: all)")
    sub.add_parser("book", help="render the course into build/book/")
    sub.add_parser("check-book", help="open every page of build/book/ in headless Chromium and check it")
    args = ap.parse_args(argv)
    if args.what == "notebooks":
        build_notebooks(args.numbers, args.data_dir, args.timeout)
        return 0
    if args.what == "times":
        print(write_times(*measure_times(args.numbers)))
        return 0
    if args.what == "book":
        _need("nbconvert", "notebooks")
        import book
        book.build_book()
        return 0
    _need("selenium", "book")
    import check_book
    return 1 if check_book.check_book() else 0


if __name__ == "__main__":
    sys.exit(main())
