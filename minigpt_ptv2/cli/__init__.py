"""`python -m minigpt_ptv2 <command>`: every command is a module in this folder.

A command module defines NAME, HELP, `add_arguments(parser)` and `run(args) -> int`. Errors a
user can fix (bad arguments, missing files, mismatched checkpoints) print one line and exit 2.
A write the machine refused (a full disk, a file-size limit, a read-only place: faults.py) prints
one line naming the path and the cause and exits 1, and so does standard output closed early
(`... | head -1`). Everything else is a bug or an internal failure and keeps its traceback, so
it can be reported.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings

from ..errors import UserError, WriteError
from ..faults import cause
from ..lines import check_text
from ._shared import HelpFormatter, show_warning


def exit_code(e: BaseException) -> int | None:
    """2 for errors a user can act on: those this package raises on purpose about its input
    (errors.UserError) and the operating system refusing a path the user named (an OSError that
    carries the file name); 1 for a write the machine refused (errors.WriteError, or a full disk,
    a file-size limit... met where no code of ours could name the path, faults.py); None for
    anything else: a TypeError or ValueError from anywhere else is a bug, and keeps its traceback.
    MINIGPT_PTV2_TRACEBACK=1 shows it for all."""
    if isinstance(e, WriteError) or (not isinstance(e, UserError) and cause(e) is not None):
        return 1
    if isinstance(e, UserError) or (isinstance(e, OSError) and e.filename is not None):
        return 2
    return None


def message(e: BaseException) -> str:
    """The one line printed for an error that exit_code accepts."""
    why = cause(e)
    if isinstance(e, UserError) or why is None:
        return str(e)
    where = getattr(e, "filename", None)
    return f"{where}: {why}" if where is not None else f"{why} ({e})"


def closed_output() -> int:
    """Standard output was closed before everything was printed (`... | head -1`): say so once on
    stderr, and point stdout at /dev/null so that Python's final flush does not fail again."""
    try:
        if sys.stdout is sys.__stdout__ and sys.stdout is not None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    try:
        print("error: standard output was closed before everything was printed (its reader stopped early, as "
              "`| head` does): the rest of the output was dropped", file=sys.stderr)
    except (OSError, ValueError):
        pass
    return 1


def commands() -> dict:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "NAME"):
            found[mod.NAME] = mod
    return dict(sorted(found.items()))


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument costs one line (plus a pointer to --help), not the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="minigpt_ptv2",
        description="Deep prompt tuning (P-Tuning v2) from scratch: demo, trace, train, evaluate, "
                    "predict, and PEFT interop. Run '<command> --help' for each command's options.")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, mod in commands().items():
        p = sub.add_parser(name, help=mod.HELP.replace("%", "%%"),  # argparse %-formats help strings
                           description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=HelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse a command line, letting a command's words and options come in any order
    (`predict CKPT --also DIR "sst2: text"`): argparse alone stops taking a command's texts at the
    first option, so each command's own parser reads its part with parse_intermixed_args."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if argv and argv[0] in sub.choices:
        args = sub.choices[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def main(argv=None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # also from --help or an argument error printed into a closed pipe
        return closed_output()


def _main(argv) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # a byte that was not UTF-8 comes as a lone surrogate: named here, before it reaches anything
        for i, arg in enumerate(argv):
            check_text(arg, f"command-line argument {i + 1} ({arg!r})")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args = parse(parser, argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    warnings.showwarning = show_warning  # one line each, "warning: ..."
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except Exception as e:
        code = exit_code(e)
        if code is None or os.environ.get("MINIGPT_PTV2_TRACEBACK"):
            raise
        print(f"error: {message(e)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
