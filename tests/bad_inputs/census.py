"""Count the bad-input table's rows by file and by what they did before they were handled.

    python tests/bad_inputs/census.py        # runs tests/bad_inputs, then prints the counts

A row is one `Case` run through `harness.check` (a row checked twice counts once). "was" is the
class the row had before it was handled (harness.WAS); every row in a green run now either is
refused at the door by name, or works (`works=True`).
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "census.json"
        env = {**os.environ, "MINIGPT_PTV2_CENSUS": str(out)}
        run = subprocess.run([sys.executable, "-m", "pytest", str(HERE), "-q", "-p", "no:cacheprovider"], env=env)
        rows = json.loads(out.read_text()) if out.exists() else []
    rows = [r for r in rows if r[0] != "test_harness.py"]  # the harness's own checks are not inputs
    by_file = collections.Counter(f for f, *_ in rows)
    by_was = collections.Counter(was for _, _, was, _ in rows)
    works = sum(1 for *_, w in rows if w)
    print(f"\n{len(rows)} rows ({len(rows) - works} refused by name, {works} that now work)"
          f"{'' if run.returncode == 0 else ' -- the run FAILED, see above'}")
    for f, n in sorted(by_file.items()):
        print(f"  {f:32s} {n:4d}")
    print("before they were handled: " + ", ".join(f"{k} {by_was.get(k, 0)}"
                                                   for k in ("loss", "silent", "escape", "ugly", "held")))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
