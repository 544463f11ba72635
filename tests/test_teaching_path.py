"""The README's teaching path is true: every file it lists exists, its line count is the file's,
the total is their sum, and the top of the README quotes that total. The "afternoon" claim holds
while the path stays under 2,500 lines (about three and a half hours at a steady 12 lines a
minute, docstrings and shape comments included); a path that grows past it must drop the claim
or lose files."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AFTERNOON = 2_500  # lines


def _path_table(readme: str) -> list[tuple[str, int]]:
    section = readme.split("### The teaching path", 1)[1].split("\n#", 1)[0]
    return [(f, int(n)) for f, n in re.findall(r"^\| \d+ \| `([^`]+)` \| (\d+) \|", section, flags=re.M)]


def test_the_teaching_paths_line_counts_are_the_files():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = _path_table(readme)
    assert len(rows) >= 10, "the README's teaching-path table is missing or unreadable"
    counted = {f: len((ROOT / f).read_text(encoding="utf-8").splitlines()) for f, _ in rows}
    stale = [f"| `{f}` | {counted[f]} |  (README says {n})" for f, n in rows if counted[f] != n]
    assert not stale, "README's teaching path is out of date:\n" + "\n".join(stale)
    total = sum(counted.values())
    assert f"| | **total** | **{total:,}** |" in readme, f"the teaching path's total row should say {total:,}"
    top = readme.split("## Quickstart", 1)[0]
    assert f"{total:,} lines" in " ".join(top.split()), f"the README's first lines should quote {total:,} lines"
    assert total <= AFTERNOON, f"{total:,} lines is no longer an afternoon: drop the claim or shorten the path"
    assert all(f.startswith(("minigpt_ptv2/core/", "minigpt_ptv2/models/", "minigpt_ptv2/prompts/")) for f in counted)
