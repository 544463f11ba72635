"""Byte-level BPE, GPT-2's tokenizer, read from a folder's tokenizer.json and written out in full.

    text --split into pieces (a regex)--> bytes of each piece --as printable chars--> merges --> ids

1. Pre-tokenise: GPT-2's regex cuts text into pieces such as "Hello", " world", "!", " 123"
   (a leading space stays with the word after it). A LLaMA-3-style file gives its own regex
   (a "Split" pre-tokenizer before a ByteLevel one without a regex); both are read.
2. Bytes as characters: each of the 256 byte values gets one printable character (bytes_to_chars),
   so a piece's UTF-8 bytes become a string the vocabulary can hold: " world" -> "Ġworld".
   Any text can be encoded, emoji and all; no unknown token is ever needed.
3. Merges: starting from single characters, repeatedly join the adjacent pair that comes first
   in the `merges` list, until no listed pair is left. Each final symbol is a vocabulary entry.
   `merge_plain` says it in five lines, but rescans every pair after each join: quadratic in the
   length of a piece (a 20,000-character word: 40 s). `merge` gives the same symbols in
   O(n log n): the pieces form a linked list and a heap holds the listed pairs by rank.

Added tokens (e.g. "<|endoftext|>") are cut out of the text first and map to their own ids,
matched literally; an added token that asks for more (lstrip, rstrip or single_word: swallow the
spaces beside it, match only a whole word) is refused by name. encode(text, add_special_tokens=
True) puts the special tokens of the file's post-processor template around the text (LLaMA's
BOS, say), as the `tokenizers` library does by default; the default here is False: a text
stream (train lm) is not a string of documents. A folder with GPT-2's older vocab.json +
merges.txt instead of tokenizer.json is read as the same tokenizer. What is not read is refused
by name (a normaliser, a SentencePiece-style BPE with byte fallback, WordPiece, another
post-processor...). The file's truncation and padding settings are not applied: the callers cut
and pad themselves. Tested to give the ids the `tokenizers` library gives (tests/test_train_lm.py, tests/test_bpe.py);
that library is a dependency for BERT's WordPiece, not used here.
"""
from __future__ import annotations

import functools
import heapq
import os
import re
import unicodedata
from pathlib import Path

from ..errors import InputError, MissingFileError
from ..lines import check_text
from ..validate import read_json, token_id_list
from .bpe_spec import check_added_ids, check_spec
from .paths import text_lines

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Unicode's White_Space: what \s means in the tokenizers library (Python's \s differs on a few).
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


@functools.lru_cache(maxsize=1)
def _categories() -> str:
    """Every code point's general category, 2 characters each, in code point order."""
    return "".join(map(unicodedata.category, map(chr, range(0x110000))))


@functools.lru_cache(maxsize=None)
def _class(kind: str) -> str:
    """The inside of a [...] character class for \\p{L} (letters) or \\p{N} (numbers).

    Every code point's general category is two characters ("Lu", "Nd", "Cn", ...), and only the
    first is upper case, so in the categories of all code points joined into one string the runs
    of (kind, any) pairs are exactly the runs of code points of that kind. Joined and searched in
    C, that takes a tenth of a second instead of the two of a Python loop over 1,114,112 points."""
    if kind == "s":
        return WHITE_SPACE
    spans = []
    for run in re.finditer(f"(?:{kind}.)+", _categories()):
        first, last = run.start() // 2, run.end() // 2 - 1  # code points: each category starts at an even index
        spans.append(re.escape(chr(first)) + ("" if last == first else "-" + re.escape(chr(last))))
    return "".join(spans)


def python_regex(pattern: str) -> re.Pattern:
    """A tokenizer.json regex (Rust syntax) for Python's re: \\p{L}, \\p{N}, \\s and \\S spelled out."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        two = pattern[i:i + 2]
        if pattern.startswith(("\\p{L}", "\\p{N}"), i):
            body, i = _class(pattern[i + 3]), i + 5
        elif two in ("\\s", "\\S") and not (two == "\\S" and in_class):
            body, i = _class("s"), i + 2
            if two == "\\S":
                body = "^" + body
        else:
            if two[:1] == "\\":
                out.append(two)
                i += 2
                continue
            in_class = {"[": True, "]": False}.get(pattern[i], in_class)
            out.append(pattern[i])
            i += 1
            continue
        out.append(body if in_class else f"[{body}]")
    return re.compile("".join(out))


@functools.lru_cache(maxsize=1)
def bytes_to_chars() -> dict[int, str]:
    """GPT-2's byte -> character table: printable bytes stand for themselves, the other 68
    (controls, space, ...) are moved to 256 + k, so b" " -> "Ġ" (U+0120) and b"\\n" -> "Ċ"."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + k) for k, b in enumerate(moved)}}


class ByteLevelBPE:
    """encode(text) -> ids and decode(ids) -> text for a byte-level BPE tokenizer.json."""

    def __init__(self, spec: dict, source="tokenizer.json"):
        check_spec(spec, source)  # each field of the shape read below, else refused by name (bpe_spec.py)
        model = spec["model"]
        unsupported = [] if model.get("type") == "BPE" else [f"model type {model.get('type')!r}"]
        if spec.get("normalizer"):
            unsupported.append(f"a normalizer ({spec['normalizer'].get('type')})")
        unsupported += [f"BPE option {k}={model[k]!r}" for k in ("byte_fallback", "continuing_subword_prefix",
                                                                 "end_of_word_suffix", "dropout") if model.get(k)]
        splits, self.prefix_space = self._pre_tokenizer(spec.get("pre_tokenizer"), unsupported)
        self.around = self._template(spec.get("post_processor"), unsupported)
        unsupported += [f"added token {t.get('content')!r} with {k}=true" for t in spec.get("added_tokens") or []
                        for k in ("lstrip", "rstrip", "single_word") if t.get(k)]
        if unsupported:
            raise InputError(f"{source}: this is not a byte-level BPE tokenizer minigpt_ptv2 reads (GPT-2 style): "
                             f"unsupported {', '.join(unsupported)}")
        self.splits = [_compiled(p, source) for p in splits]
        self.vocab = dict(model["vocab"])
        check_added_ids(self.vocab, spec.get("added_tokens") or [], source)
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
        self.ranks = {pair: r for r, pair in enumerate(merges)}  # pair -> its place in the list
        self.ignore_merges = bool(model.get("ignore_merges"))
        self.unk = self.vocab.get(model.get("unk_token")) if model.get("unk_token") else None
        self.added = {t["content"]: t["id"] for t in spec.get("added_tokens") or []}
        self.special = {t["id"] for t in spec.get("added_tokens") or [] if t.get("special")}
        self._added_ids = set(self.added.values())
        self.id_to_token = {i: t for t, i in {**self.vocab, **self.added}.items()}
        self.vocab_size = max(self.id_to_token, default=-1) + 1
        self._added_re = (re.compile("|".join(re.escape(t) for t in sorted(self.added, key=len, reverse=True)))
                          if self.added else None)
        self._byte = bytes_to_chars()
        self._unbyte = {c: b for b, c in self._byte.items()}
        self.source = str(source)
        self._seen: dict[str, list[str]] = {}

    @staticmethod
    def _pre_tokenizer(pre: dict | None, unsupported: list) -> tuple[list[str], bool]:
        """The regexes that cut a text into pieces, and whether a space is put before the text."""
        steps = (pre or {}).get("pretokenizers", [pre]) if (pre or {}).get("type") == "Sequence" else [pre]
        splits, prefix_space, byte_level = [], False, False
        for step in steps if isinstance(steps, list) else [steps]:
            if step is not None and not isinstance(step, dict):
                unsupported.append(f"pre_tokenizer step {str(step)[:40]!r} (not an object)")
                continue
            kind, pattern = (step or {}).get("type"), (step or {}).get("pattern")
            if kind == "ByteLevel":
                byte_level, prefix_space = True, bool(step.get("add_prefix_space"))
                splits += [GPT2_PATTERN] if step.get("use_regex", True) else []
            elif (kind == "Split" and isinstance(pattern, dict) and isinstance(pattern.get("Regex"), str)
                  and step.get("behavior") == "Isolated" and not step.get("invert")):
                splits.append(step["pattern"]["Regex"])
            else:
                unsupported.append(f"pre_tokenizer {kind!r}")
        if not byte_level and not unsupported:
            unsupported.append("a pre_tokenizer without ByteLevel")
        return splits, prefix_space

    @staticmethod
    def _template(post: dict | None, unsupported: list) -> tuple[list[int], list[int]]:
        """The ids a post-processor puts before and after a single text (its "single" template;
        ByteLevel's post-processing only moves offsets): ([], []) without one."""
        steps = (post or {}).get("processors", [post]) if (post or {}).get("type") == "Sequence" else [post]
        before, after = [], []
        for step in steps:
            kind = (step or {}).get("type")
            if kind in (None, "ByteLevel"):
                continue
            if kind != "TemplateProcessing":
                unsupported.append(f"post_processor {kind!r}")
                continue
            seen = False
            for piece in step.get("single", []):
                if "Sequence" in piece:
                    seen = True
                elif "SpecialToken" in piece:
                    special = step.get("special_tokens", {}).get(piece["SpecialToken"]["id"], {})
                    (after if seen else before).extend(special.get("ids", []))
        return before, after

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike) -> "ByteLevelBPE":
        """tokenizer.json, else GPT-2's older pair vocab.json + merges.txt (the same tokenizer)."""
        path, model_dir = Path(model_dir) / "tokenizer.json", Path(model_dir)
        if path.is_file():
            return cls(read_json(path), path)
        if (model_dir / "vocab.json").is_file() and (model_dir / "merges.txt").is_file():
            vocab = read_json(model_dir / "vocab.json")
            merges = [line for n, line in text_lines(model_dir / "merges.txt")
                      if line.strip() and not (n == 1 and line.startswith("#version"))]
            added = [{"id": vocab[t], "content": t, "special": True} for t in ("<|endoftext|>",) if t in vocab]
            return cls({"model": {"type": "BPE", "vocab": vocab, "merges": merges}, "added_tokens": added,
                        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}}, model_dir / "vocab.json")
        raise MissingFileError(f"{path} not found: a decoder folder needs its tokenizer.json (the HF "
                               f"'fast tokenizer' file, as save_pretrained or tokenizers' save() writes it), "
                               f"or GPT-2's vocab.json and merges.txt")

    def _pieces(self, text: str) -> list[str]:
        pieces = [text]
        for regex in self.splits:  # Isolated: every match is a piece, and so is every gap between matches
            pieces = [p for piece in pieces for p in _isolate(regex, piece)]
        return pieces

    def _merge(self, word: str) -> list[str]:
        """BPE on one piece (already bytes-as-characters), see `merge`."""
        if self.ignore_merges and word in self.vocab:
            return [word]
        if word not in self._seen:  # a text repeats its words: each is merged once
            self._seen[word] = merge(list(word), self.ranks)
        return self._seen[word]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Ids of `text`; add_special_tokens: with the post-processor's special tokens around it."""
        check_text(text, "text to encode")  # a lone surrogate has no UTF-8 bytes to merge
        ids, start, chunks = [], 0, []  # chunks: (text, is it an added token?)
        for m in (self._added_re.finditer(text) if self._added_re else []):
            chunks += [(text[start:m.start()], False), (m.group(), True)]
            start = m.end()
        chunks.append((text[start:], False))
        for chunk, is_added in chunks:
            if is_added:
                ids.append(self.added[chunk])
                continue
            if self.prefix_space and chunk and not chunk.startswith(" "):
                chunk = " " + chunk  # add_prefix_space: "Hello" is encoded as " Hello" would be
            for piece in self._pieces(chunk):
                for symbol in self._merge("".join(self._byte[b] for b in piece.encode("utf-8"))):
                    if symbol not in self.vocab and self.unk is None:
                        raise InputError(f"{self.source}: symbol {symbol!r} is not in the vocabulary (a byte-level "
                                         f"vocabulary must hold all 256 byte characters)")
                    ids.append(self.vocab.get(symbol, self.unk))
        return [*self.around[0], *ids, *self.around[1]] if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Ids (list or 1-D tensor) back to text; bytes that are not valid UTF-8 become U+FFFD."""
        out = bytearray()
        for i in token_id_list(ids, "decode: ids"):
            if skip_special_tokens and i in self.special:
                continue
            token = self.id_to_token.get(i, "")
            if i in self._added_ids and token not in self.vocab:
                out += token.encode("utf-8")  # an added token is its own text, not byte characters
            else:
                out += bytes(self._unbyte[c] for c in token if c in self._unbyte)
        return out.decode("utf-8", errors="replace")


def _compiled(pattern, source) -> re.Pattern:
    try:
        return python_regex(pattern)
    except (re.error, TypeError) as e:
        raise InputError(f"{source}: the pre_tokenizer's regex does not compile ({e}): {str(pattern)[:60]!r}") from None


def _isolate(regex: re.Pattern, text: str) -> list[str]:
    out, start = [], 0
    for m in regex.finditer(text):
        if m.start() > start:
            out.append(text[start:m.start()])
        if m.end() > m.start():
            out.append(m.group())
        start = m.end()
    if start < len(text):
        out.append(text[start:])
    return out


def merge_plain(symbols: list[str], ranks: dict) -> list[str]:
    """The merge rule as plainly as it can be written: join the adjacent pair that comes first in
    the merges list (`ranks`: pair -> its place), the leftmost on a tie, until no listed pair is
    left. Every join rescans every pair: quadratic in the length of the piece."""
    symbols, none = list(symbols), len(ranks)
    while len(symbols) > 1:
        rank, i = min((ranks.get(p, none), i) for i, p in enumerate(zip(symbols, symbols[1:])))
        if rank == none:
            break
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def merge(symbols: list[str], ranks: dict) -> list[str]:
    """What merge_plain gives, in O(n log n). The symbols form a linked list: text[i] is the symbol
    that starts at character i ("" once joined into its left neighbour), right[i] and left[i] the
    starts of its neighbours. A heap holds (rank, start) of every adjacent listed pair. The best is
    popped; if its pair has changed since it was pushed (one side was joined to something else) it
    is stale and skipped, else the two are joined and the pairs the new symbol makes with its
    neighbours are pushed. The smallest (rank, start) is merge_plain's choice: starts keep the order
    of the symbols, so the leftmost of equal ranks wins in both."""
    n = len(symbols)
    text = list(symbols)
    right, left = list(range(1, n + 1)), list(range(-1, n - 1))  # n, -1: no neighbour
    heap = [(ranks[p], i) for i, p in enumerate(zip(text, text[1:])) if p in ranks]
    heapq.heapify(heap)
    while heap:
        rank, i = heapq.heappop(heap)
        j = right[i]
        if not text[i] or j >= n or ranks.get((text[i], text[j])) != rank:
            continue  # stale: symbol i was joined to its left, or its right neighbour changed
        text[i], text[j] = text[i] + text[j], ""
        right[i] = right[j]
        if right[i] < n:
            left[right[i]] = i
        for a in (left[i], i):  # the new symbol with its left neighbour, and with its right one
            b = right[a] if a >= 0 else n
            if a >= 0 and b < n and (text[a], text[b]) in ranks:
                heapq.heappush(heap, (ranks[(text[a], text[b])], a))
    return [t for t in text if t]
