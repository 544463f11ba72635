"""`python -m minigpt_ptv2 <command>`: every command is a module in this folder.

A command module defines NAME, HELP, `add_arguments(parser)` and `run(args) -> int`. Errors a
user can fix (bad arguments, missing files, mismatched checkpoints) print one line and exit 2.
Everything else is a bug or an internal failure and keeps its traceback, so it can be reported.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from ..errors import UserError
from ._shared import HelpFormatter


def is_user_error(e: BaseException) -> bool:
    """Errors a user can act on: those this package raises on purpose about its input
    (errors.UserError), and the operating system refusing a path the user named (a PermissionError
    or a full disk on --out: an OSError that carries the file name). A TypeError or ValueError from
    anywhere else is a bug, and keeps its traceback. MINIGPT_PTV2_TRACEBACK=1 shows it for all."""
    return isinstance(e, UserError) or (isinstance(e, OSError) and e.filename is not None)


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
    parser = build_parser()
    args = parse(parser, list(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not is_user_error(e) or os.environ.get("MINIGPT_PTV2_TRACEBACK"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
