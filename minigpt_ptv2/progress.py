"""One progress display for every long command: a tqdm bar on stderr.

    for batch in progress(loader, "eval sst2 dev", enabled=not args.json):
        ...

Shown only where someone watches: `enabled=False` (the commands' --json and --no-progress) turns
it off, and so does a standard error that is not a terminal (a log file, a pipe, CI), where a bar
redrawn a hundred times a second is only noise. stdout stays clean for results.
"""
from __future__ import annotations

import sys

from tqdm import tqdm  # plain text bars: tqdm.auto wants ipywidgets in a notebook and warns without them


def progress(iterable=None, desc: str = "", total: int | None = None, enabled: bool = True,
             unit: str = "it", leave: bool = False):
    """`iterable` wrapped in a progress bar (or a bar to `update()` by hand when iterable is None)."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, dynamic_ncols=True, file=sys.stderr,
                disable=None if enabled else True)  # None: off when stderr is not a terminal


def write(line: str, enabled: bool = True) -> None:
    """A result line (an epoch's scores) on stdout, printed above any bar, which is redrawn below it.
    stdout, not stderr: a log of a run that nobody watched still holds every epoch."""
    if enabled:
        tqdm.write(line, file=sys.stdout)
