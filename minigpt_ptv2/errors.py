"""Errors about what a user gave us, told apart from bugs.

Every check in this package that refuses an argument, a shape, a file or a field raises one of
these on purpose, with a message naming what to fix. The command line prints them as one line
(exit 2; a WriteError, the machine's fault rather than the input's, exits 1); anything else
is a bug or an internal failure and keeps its full traceback.

Each class also derives from the built-in exception a caller would expect, so code written
against `except ValueError` (or TypeError, FileNotFoundError) keeps working.
"""
from __future__ import annotations


class UserError(Exception):
    """Base class: the input is wrong, not the program."""


class InputError(UserError, ValueError):
    """A bad value: an argument, a shape, a number, a file's content or a config field."""


class InputTypeError(UserError, TypeError):
    """A value of the wrong type (a float where token ids are expected, a list for a dict...)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or that a format requires) is not there."""


class NonFiniteError(UserError, FloatingPointError):
    """A NaN or infinity where a number must be finite: a loss, a weight, a loaded tensor."""


class WriteError(UserError, OSError):
    """The machine refused a write the input was fine for: a full disk, a file-size limit (ulimit
    -f), a read-only or vanished place. The message names the path and the cause, and says what the
    place holds now (a failed save never leaves half a file behind); the command line exits 1.
    `why` is the cause alone, in words (faults.py), for a caller that names another place."""

    def __init__(self, message: str, why: str | None = None):
        super().__init__(message)
        self.why = why
