"""The bad-input table's rules, checked the same way for every row.

Each row is a `Case`: something a user could do wrong, run through the API or the command line.
It must fail at the door with an error this package raises on purpose (errors.UserError), whose
message names the culprit (the argument, file, line, field or tensor); nothing may be written;
and any checkpoint that was there before must be byte-for-byte intact. On the command line that
is one line, "error: ..." (or argparse's "minigpt_ptv2 CMD: error: argument --x: ..." for an
option refused by the parser), and exit code 2, or 1 for a fault of the machine rather than of
the input (a full disk, a closed pipe: `code=1`).

Some inputs are not mistakes but were once mishandled (a line separator inside a sentence, a
no-break space inside a word): their right answer is to work. Such a row says `works=True`; its
`run` asserts the right result itself and must return without raising.

Every row also says what the package did with it before it was fixed (`was`), so the table keeps
its own history: "loss" (something of the user's was overwritten or destroyed), "silent" (a wrong
result without a word), "escape" (an exception not of ours, with its traceback), "ugly" (refused,
but with a traceback or a message blaming the wrong cause), or "held" (it was always handled).
`python tests/bad_inputs/census.py` counts the rows by file and by class.

    CASES = [Case("P is true", lambda tmp: ..., names=["'P'", "positive int"]), ...]

    @pytest.mark.parametrize("case", CASES, ids=str)
    def test_refused(case, tmp_path):
        check(case, tmp_path)
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from minigpt_ptv2.errors import UserError


WAS = ("loss", "silent", "escape", "ugly", "held")


@dataclass
class Case:
    id: str
    run: Callable  # (tmp_path) -> anything; must raise. A CLI case returns main(argv)'s exit code.
    names: list = field(default_factory=list)  # substrings the message must contain
    error: type = UserError  # the class it must raise (a UserError subclass)
    cli: bool = False  # run is a CLI call: exit `code` and one line "error: ..." on stderr instead
    code: int = 2  # the exit code a CLI row must give (1: the machine's fault, not the input's)
    was: str = "held"  # what the package did before this row was handled (see WAS)
    works: bool = False  # the right answer is to work: run asserts the result and returns

    def __post_init__(self):
        if self.was not in WAS:
            raise ValueError(f"{self.id}: was={self.was!r} is not one of {WAS}")

    def __str__(self) -> str:
        return self.id


@dataclass
class Row(Case):
    """A Case whose bad input is written by setup(tmp) before the snapshot is taken."""
    setup: Callable = lambda tmp: None


def snapshot(root: Path) -> dict:
    """path -> sha256 of every file under root (what 'nothing written, nothing lost' compares)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


CHECKED: list = []  # (test file, row id, was, works) of every row run in this session: census.py counts them


def check(case: Case, tmp_path: Path) -> str:
    """Run one row and assert every rule; returns the message for further checks."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[0]
    CHECKED.append((Path(test).name, case.id, case.was, case.works))
    if case.works:
        result = case.run(tmp_path)
        if case.cli:
            assert result == 0, f"{case.id}: exit code {result}, expected 0"
        return ""
    before = snapshot(tmp_path)
    if case.cli:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = case.run(tmp_path)
            except SystemExit as e:  # argparse refuses an option by exiting
                code = e.code
        message = err.getvalue().strip()
        assert code == case.code, f"{case.id}: exit code {code}, expected {case.code}; stderr: {message[-500:]}"
        assert re.match(r"(minigpt_ptv2 [\w-]+: )?error: ", message) and "Traceback" not in message, message[-500:]
        assert len(message.splitlines()) == 1, f"{case.id}: more than one line:\n{message}"
    else:
        with pytest.raises(case.error) as info:
            case.run(tmp_path)
        assert isinstance(info.value, UserError), f"{case.id}: {type(info.value).__name__} is not a UserError"
        message = str(info.value)
    for name in case.names:
        assert name in message, f"{case.id}: message does not name {name!r}: {message}"
    after = snapshot(tmp_path)
    assert after == before, f"{case.id}: files changed: {sorted(set(after.items()) ^ set(before.items()))}"
    return message
