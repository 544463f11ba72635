"""Train a byte-level BPE tokenizer on a text: what a decoder trained from scratch reads.

    texts --GPT-2's regex--> pieces --UTF-8 bytes as characters--> counted words
          --repeat: join the most frequent adjacent pair, everywhere--> merges, vocabulary

The reading side (bpe.py) explains the three steps of encoding; training builds the list the
third step reads. Every word starts as its single byte characters (the 256 of them are the first
256 ids, in byte order, so any text can be encoded); each round counts the adjacent pairs over
all words, weighted by how often each word occurs, joins the most frequent pair in every word
where it occurs, and appends that merge to the list and the joined symbol to the vocabulary.
A tie goes to the pair that sorts first, so a text and a size give one tokenizer, always.

Only the words a merge touches are recounted (`where` remembers which words hold each pair), and a
heap hands out the most frequent pair: training on the SST-2 sample's 45,000 words takes about
a second, where recounting every word each round would take a minute.

`write_tokenizer` writes the result as a tokenizer.json in the format of the `tokenizers`
library (which transformers reads): bpe.py and that library give the same ids for it
(tests/test_pretrain.py).
"""
from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from pathlib import Path

from ..errors import InputError
from .bpe import GPT2_PATTERN, _isolate, bytes_to_chars, python_regex


def count_words(texts) -> Counter:
    """Each piece GPT-2's regex cuts the texts into, as a tuple of byte characters, and its count."""
    regex, byte = python_regex(GPT2_PATTERN), bytes_to_chars()
    words = Counter()
    for text in texts:
        for piece in _isolate(regex, text):
            words[tuple(byte[b] for b in piece.encode("utf-8"))] += 1
    return words


def train_bpe(texts, vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab {symbol: id}, merges in the order learned) for a byte-level BPE of at most vocab_size
    symbols. Stops early when no pair occurs twice (a merge used once saves nothing)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
        raise InputError(f"vocab_size must be an int >= 256 (the 256 byte symbols come first), got {vocab_size!r}")
    byte = bytes_to_chars()
    vocab = {byte[b]: b for b in range(256)}
    counted = count_words(texts)
    words = [list(w) for w in counted]  # each word's current symbols
    freq = list(counted.values())
    pairs, where = Counter(), defaultdict(set)  # pair -> weighted count; pair -> indices of words holding it
    for i, w in enumerate(words):
        for p in zip(w, w[1:]):
            pairs[p] += freq[i]
            where[p].add(i)
    heap = [(-n, p) for p, n in pairs.items()]  # most frequent first, then the pair that sorts first
    heapq.heapify(heap)
    merges = []
    while len(vocab) < vocab_size and heap:
        n, best = heapq.heappop(heap)
        if -n != pairs.get(best, 0):
            continue  # a stale entry: this pair's count changed since it was pushed
        if -n < 2:
            break
        joined = best[0] + best[1]
        merges.append(best)
        vocab.setdefault(joined, len(vocab))
        changed = set()  # pairs whose count this merge moves
        for i in sorted(where.pop(best)):
            old, new, j = words[i], [], 0
            while j < len(old):  # join every occurrence of the pair, left to right
                if j + 1 < len(old) and (old[j], old[j + 1]) == best:
                    new.append(joined)
                    j += 2
                else:
                    new.append(old[j])
                    j += 1
            for p in zip(old, old[1:]):
                pairs[p] -= freq[i]
                changed.add(p)
            for p in zip(new, new[1:]):
                pairs[p] += freq[i]
                where[p].add(i)
                changed.add(p)
            words[i] = new
        pairs.pop(best, None)
        for p in changed - {best}:
            heapq.heappush(heap, (-pairs[p], p))
    return vocab, merges


def tokenizer_json(vocab: dict[str, int], merges: list[tuple[str, str]], bos: str | None = None) -> dict:
    """The tokenizer.json the `tokenizers` library writes for a GPT-2-style byte-level BPE (no
    special tokens, no normaliser, no space added before a text). bos: a symbol of the vocabulary
    put before a text when special tokens are asked for (transformers' tokenizer asks by default;
    `generate` does; a text stream for `train lm` does not)."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    post = byte_level
    if bos is not None:
        if bos not in vocab:
            raise InputError(f"bos {bos!r} is not a symbol of the vocabulary")
        first, a = {"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}
        post = {"type": "TemplateProcessing", "single": [first, a],
                "pair": [first, a, first, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [vocab[bos]], "tokens": [bos]}}}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": byte_level, "post_processor": post, "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab, "merges": [list(m) for m in merges]}}


def write_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], folder, bos: str | None = None,
                    max_length: int | None = None) -> Path:
    """Write folder/tokenizer.json, and tokenizer_config.json, which tells transformers'
    AutoTokenizer the class to read it with (and max_length, the model's positions); returns the
    tokenizer.json path. bos: see tokenizer_json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.json"
    path.write_text(json.dumps(tokenizer_json(vocab, merges, bos), ensure_ascii=False) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False,
              # none of GPT-2's <|endoftext|>: transformers would add it as a token the model lacks
              "bos_token": None, "eos_token": None, "unk_token": None, "pad_token": None,
              **({"model_max_length": max_length} if max_length else {})}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path
