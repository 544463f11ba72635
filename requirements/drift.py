"""Upstream drift: do the reference facts still hold on the newest transformers and peft?

    python requirements/drift.py              # ~8 minutes: a fresh venv, then the whole suite
    python requirements/drift.py --keep DIR   # keep the environment in DIR for a closer look

Not part of CI, on purpose: CI runs the locked versions (requirements/test.lock), so that a
release upstream cannot turn a green suite red overnight. This script is how we learn what such
a release changes. It builds a fresh environment with the locked runtime (torch, tokenizers...)
and the *newest* transformers and peft, runs the whole suite, and prints one line per reference
fact (a test that compares us with transformers or peft: its docstring, or its name) that no
longer holds, with the error that says why, and separately any of our own tests that fail. Our
package never imports either library, so the second list should stay empty: a change in the
first is a change in the reference, not in us (the README's "Upstream drift" says what it means).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A test file compares with the references if it imports them, or tests/reference.py (which does).
REFERENCE_IMPORT = re.compile(r"^\s*(import|from)\s+(transformers|peft|reference)\b"
                              r"|importorskip\(\"(transformers|peft|reference)\"", re.MULTILINE)

# A pytest plugin, written next to the environment: one JSON line per test with its outcome,
# the first line of its docstring (the fact it checks) and the last line of any error.
PLUGIN = '''
import json, os
def pytest_runtest_logreport(report):
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    with open(os.environ["DRIFT_OUT"], "a") as f:
        crash = getattr(report.longrepr, "reprcrash", None)
        error = (crash.message if crash else str(report.longrepr)).strip().splitlines() if report.failed else [""]
        f.write(json.dumps({"id": report.nodeid, "outcome": report.outcome, "error": error[0][:300]}) + "\\n")
def pytest_collection_modifyitems(items):
    with open(os.environ["DRIFT_OUT"] + ".docs", "w") as f:
        for it in items:
            doc = (getattr(it.function, "__doc__", None) or "").strip().splitlines()
            json.dump({"id": it.nodeid, "doc": doc[0] if doc else ""}, f)
            f.write("\\n")
'''


def sh(*cmd, **kw) -> subprocess.CompletedProcess:
    """Run a command; pip's chatter goes to a log, shown only if the command fails."""
    kw.setdefault("stdout", subprocess.PIPE)
    done = subprocess.run([str(c) for c in cmd], text=True, stderr=subprocess.PIPE, **kw)
    if done.returncode:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{done.stderr[-3000:]}")
    return done


def reference_tests() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if REFERENCE_IMPORT.search(p.read_text()))


def build_env(where: Path) -> Path:
    py = where / "venv" / "bin" / "python"
    sh(sys.executable, "-m", "venv", where / "venv")
    sh(py, "-m", "pip", "install", "-q", "--no-deps", "-r", ROOT / "requirements" / "demo.lock", "-e", ROOT)
    torch_pin = next(line for line in (ROOT / "requirements" / "demo.lock").read_text().splitlines()
                     if line.startswith("torch=="))
    (where / "keep-torch.txt").write_text(torch_pin + "\n")
    # Newest transformers and peft; the constraint keeps the locked CPU torch in place.
    sh(py, "-m", "pip", "install", "-q", "-U", "-c", where / "keep-torch.txt", "transformers", "peft",
       "pytest", "hypothesis")
    return py


def versions(py: Path) -> dict:
    out = sh(py, "-c", "import json, transformers, peft, torch; print(json.dumps({'transformers': "
             "transformers.__version__, 'peft': peft.__version__, 'torch': torch.__version__}))").stdout
    return json.loads(out)


def locked() -> dict:
    pins = {}
    for line in (ROOT / "requirements" / "test.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, default=None, help="build the environment in DIR and keep it")
    args = ap.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="drift-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"building a fresh environment with the newest transformers and peft in {work} ...", flush=True)
    py = build_env(work)
    now, pins = versions(py), locked()
    print(f"newest: transformers {now['transformers']}, peft {now['peft']} "
          f"(locked: transformers {pins['transformers']}, peft {pins['peft']}); torch {now['torch']}")
    (work / "drift_plugin.py").write_text(PLUGIN)
    out = work / "results.jsonl"
    out.unlink(missing_ok=True)
    reference = reference_tests()
    print(f"running the test suite ({len(reference)} of its files compare with transformers or peft) ...",
          flush=True)
    subprocess.run([str(py), "-m", "pytest", "-q", "-p", "drift_plugin", "-p", "no:cacheprovider"],
                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(work), "DRIFT_OUT": str(out)},
                   stdout=subprocess.DEVNULL)
    docs = {d["id"]: d["doc"] for d in map(json.loads, Path(str(out) + ".docs").read_text().splitlines())}
    results = [json.loads(line) for line in out.read_text().splitlines()]
    is_reference = [r["id"].split("::")[0] in reference for r in results]
    facts = [r for r, ref in zip(results, is_reference) if ref]
    ours = [r for r, ref in zip(results, is_reference) if not ref]
    changed = [r for r in facts if r["outcome"] == "failed"]
    broken = [r for r in ours if r["outcome"] == "failed"]
    held = sum(r["outcome"] == "passed" for r in facts)
    print(f"\nreference facts: {held} hold, {len(changed)} changed")
    for r in changed:
        name = docs.get(r["id"]) or r["id"].split("::")[-1].replace("_", " ")
        print(f"- {name}\n    test: {r['id']}\n    now:  {r['error']}")
    print(f"our own tests: {sum(r['outcome'] == 'passed' for r in ours)} pass, {len(broken)} fail")
    for r in broken:
        print(f"- {r['id']}\n    now:  {r['error']}")
    if not changed and not broken:
        print("(nothing changed: the newest releases agree with the locked ones on everything we check)")
    return 1 if changed or broken else 0


if __name__ == "__main__":
    sys.exit(main())
