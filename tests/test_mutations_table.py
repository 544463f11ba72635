"""The table of same-shape bugs (tests/mutations.py) stays true to the code, checked cheaply on
every test run without planting anything: each snippet is found exactly once in its file, inside
the function its row names; each replacement is new to that file; each test a row expects to
catch it exists. The planting run itself is `python tests/mutations.py`, before a release."""
from __future__ import annotations

import dataclasses

from mutations import BUGS, problems
from trace_helpers import LESSONS


def test_every_row_of_the_mutation_table_matches_the_code():
    found = problems()
    assert not found, "tests/mutations.py is stale:\n" + "\n".join(found)


def test_the_table_plants_at_least_twelve_bugs_across_every_lesson():
    lessons = {node.split("test_lesson_")[1][:2] for b in BUGS for node in b.tests}
    assert len(BUGS) >= 12
    every = {p.name[:2] for p in LESSONS.glob("[0-9][0-9]_*.py")}
    assert lessons == every, f"lessons without a planted bug: {sorted(every - lessons)}"


def test_a_stale_row_is_reported():
    """The check can fail: a moved snippet, a wrong function, a missing test, a no-op replacement."""
    row = BUGS[0]
    stale = [dataclasses.replace(row, name="moved", snippet=row.snippet + " # gone"),
             dataclasses.replace(row, name="elsewhere", function="concat_prefix"),
             dataclasses.replace(row, name="untested", tests=(row.tests[0] + "_renamed",)),
             dataclasses.replace(row, name="no-op", replacement=row.snippet)]
    found = problems(bugs=stale)
    for name in ("moved", "elsewhere", "untested", "no-op"):
        assert any(line.startswith(name + ":") for line in found), (name, found)
