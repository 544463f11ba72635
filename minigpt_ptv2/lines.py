"""Text read exactly as written: a line ends at "\\n" or "\\r\\n" and nowhere else, and every byte
must be UTF-8. Every reader of text goes through here (datasets, `predict --file` and standard
input, `train lm`'s text file, command-line texts).

Why not str.splitlines()? It also ends a line at \\v, \\f, \\x1c, \\x1d, \\x1e, NEL (U+0085), and
the line and paragraph separators U+2028 and U+2029: a sentence holding one of them would become
two predictions, or two training rows. Files split on b"\\n" and are decoded line by line, so
those characters stay inside their line.

What is not text is named, with where it is (the source, the line, the byte):
- a byte that is not UTF-8 (a file saved as Latin-1 or Windows-1252);
- a NUL byte: no text holds one. Every other byte NUL is UTF-16 saved without its byte-order
  mark; otherwise it is binary data (an archive, a model file...);
- a command-line argument that was not UTF-8: Python hands it over with each bad byte turned
  into a lone surrogate (U+DC80..U+DCFF), which no tokenizer can encode.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from .errors import InputError, InputTypeError


UTF16_BOMS, UTF8_BOM = (b"\xff\xfe", b"\xfe\xff"), b"\xef\xbb\xbf"


def strip_end(line: str) -> str:
    """A line without its end: one "\\n", then one "\\r" before it (nothing else is an end)."""
    if line.endswith("\n"):
        line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
    return line


def decode_line(raw: bytes, source, lineno: int) -> str:
    """One line's bytes as text, refusing a NUL byte or a byte that is not UTF-8 by name."""
    if b"\x00" in raw:
        at = raw.index(b"\x00")
        nuls = raw.count(b"\x00")
        odd_or_even = {i % 2 for i, b in enumerate(raw.rstrip(b"\r\n")) if b == 0}
        utf16 = nuls * 3 >= len(raw) and len(odd_or_even) == 1  # every other byte NUL, on one side
        what = ("UTF-16 text saved without its byte-order mark? Save it as UTF-8" if utf16
                else "a NUL byte is never text: a binary file?")
        raise InputError(f"{source}:{lineno}: byte 0x00 (byte {at + 1} of the line) is NUL; {what}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{source}:{lineno}: byte 0x{raw[e.start]:02x} (byte {e.start + 1} of the line) is not UTF-8 "
            f"({e.reason}); saved as Latin-1 or Windows-1252? Save it as UTF-8") from None


def read_line(raw: bytes, source, lineno: int) -> str:
    """One line's text without its end (decode_line, strip_end)."""
    return strip_end(decode_line(raw, source, lineno))


def one_record(line: str, source, lineno: int) -> str:
    """`line`, refusing a carriage return inside it where a line is one record (a dataset row, one
    sentence to predict): a file whose lines end in "\\r" alone (classic Mac OS) reads as a single
    line, and would be blamed on whatever that line fails next (the header, a column count) or
    give one prediction for all its sentences. In running text (`train lm`) a lone "\\r" is text."""
    if "\r" in line:
        raise InputError(f"{source}:{lineno}: a carriage return (\\r) without \\n after it, at character "
                         f"{line.index(chr(13)) + 1}: lines end at \\n or \\r\\n only; are its line ends \\r "
                         f"alone (classic Mac OS)? Save it with \\n line ends")
    return line


def byte_lines(raw_lines: Iterable[bytes], source) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without its end) for lines of bytes split at b"\\n": what
    iterating over a file opened in binary mode gives (sys.stdin.buffer too). A UTF-8 byte-order
    mark before the first line is dropped; a UTF-16 one is named."""
    for lineno, raw in enumerate(raw_lines, start=1):
        if lineno == 1 and raw[:2] in UTF16_BOMS:
            raise InputError(f"{source}:1: the text is UTF-16 (it starts with a UTF-16 byte-order mark); "
                             f"save it as UTF-8")
        if lineno == 1 and raw.startswith(UTF8_BOM):  # written by editors on Windows: not part of the text
            raw = raw[len(UTF8_BOM):]
        yield lineno, read_line(raw, source, lineno)


def check_text(text: str, source) -> str:
    """A str that can be written as UTF-8, as every tokenizer needs. A lone surrogate U+DC80..U+DCFF
    is how Python hands over a byte that was not UTF-8 (a command-line argument): named as that
    byte; any other lone surrogate as itself. Anything but a str (bytes, None) is refused by type."""
    if not isinstance(text, str):
        raise InputTypeError(f"{source} must be a str, got {type(text).__name__}"
                             + (" (decode the bytes first: data.decode('utf-8'))" if isinstance(text, bytes) else ""))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        ch = text[e.start]
        what = (f"byte 0x{ord(ch) - 0xdc00:02x} (character {e.start + 1}) is not UTF-8" if "\udc80" <= ch <= "\udcff"
                else f"character {e.start + 1} (U+{ord(ch):04X}) is a lone surrogate, not text")
        raise InputError(f"{source}: {what}") from None
    return text
