"""Byte-level BPE (data/bpe.py) beyond the basics of tests/test_train_lm.py: the heap merge gives
what the plain rule gives and what the `tokenizers` library gives, in near-linear time in the
length of a word; what a tokenizer.json asks for and this reader does not do is refused by name;
a post-processor's special tokens come when asked for, as in the library."""
from __future__ import annotations

import json
import random
import re
import time
import unicodedata

import pytest
from test_train_lm import TEXT, UNICODE, bpe
from tokenizers import AddedToken
from tokenizers.processors import RobertaProcessing, TemplateProcessing

from minigpt_ptv2.data import bpe as bpe_module
from minigpt_ptv2.data.bpe import ByteLevelBPE, merge, merge_plain
from minigpt_ptv2.errors import InputError

LONG = ["thecat" * 3400, "a" * 20000, "ab" * 10000, " " * 5000 + "x", "é" * 6000, "the cat " * 2000]


@pytest.fixture(scope="module")
def tokenizers():
    return {style: bpe(style, corpus=[TEXT * 3] * 20 + UNICODE) for style in ("gpt2", "llama3")}


@pytest.mark.parametrize("style", ["gpt2", "llama3"])
def test_long_words_give_the_librarys_ids_in_well_under_a_second(tokenizers, style):
    tok = tokenizers[style]
    for text in UNICODE + [TEXT] + LONG:
        ours = ByteLevelBPE(json.loads(tok.to_str()))  # a fresh one: nothing remembered from an earlier text
        start = time.perf_counter()
        ids = ours.encode(text)
        seconds = time.perf_counter() - start
        assert ids == tok.encode(text).ids, text[:40]
        # 0.1 s measured for the 20,400-character word (the plain rule: 40 s); 1 s leaves room for a busy machine
        assert seconds < 1.0, (text[:20], len(text), seconds)


def test_the_heap_merge_is_the_plain_rule(tokenizers):
    ranks = ByteLevelBPE(json.loads(tokenizers["gpt2"].to_str())).ranks
    pieces = sorted({"".join(pair) for pair in ranks} | {c for pair in ranks for c in pair})
    rng = random.Random(0)
    for _ in range(500):  # words made of the merges' own pieces, so that most pairs are listed
        word = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        assert merge(list(word), ranks) == merge_plain(list(word), ranks), word
    tie = {("a", "a"): 0, ("aa", "a"): 1}  # equal ranks: the leftmost pair first, in both
    assert merge(list("aaaaa"), tie) == merge_plain(list("aaaaa"), tie) == ["aa", "aaa"]  # aa a a a, aa aa a


def test_added_tokens_that_swallow_spaces_or_match_whole_words_are_refused_by_name(tokenizers):
    for option in ("lstrip", "rstrip", "single_word"):
        tok = bpe("gpt2")
        tok.add_tokens([AddedToken("<sep>", **{option: True})])
        with pytest.raises(InputError, match=f"added token '<sep>' with {option}=true"):
            ByteLevelBPE(json.loads(tok.to_str()))
    tok = bpe("gpt2")  # normalized matters only under a normaliser, which is refused anyway: read either way
    tok.add_tokens([AddedToken("<a>", normalized=True), AddedToken("<b>", normalized=False)])
    ours = ByteLevelBPE(json.loads(tok.to_str()))
    for text in ("x<a>y <b> z", " <a><b> the cat<a>"):
        assert ours.encode(text) == tok.encode(text).ids


def test_a_post_processors_special_tokens_come_when_asked_for(tokenizers):
    tok = bpe("gpt2")
    tok.post_processor = TemplateProcessing(single="<|endoftext|> $A <|endoftext|>", pair="$A $B",
                                            special_tokens=[("<|endoftext|>", 0)])
    ours = ByteLevelBPE(json.loads(tok.to_str()))
    assert ours.encode("the cat", add_special_tokens=True) == tok.encode("the cat").ids == [0, 258, 275, 0]
    assert ours.encode("the cat") == tok.encode("the cat", add_special_tokens=False).ids
    tok.post_processor = RobertaProcessing(("</s>", 0), ("<s>", 0))
    with pytest.raises(InputError, match="unsupported post_processor 'RobertaProcessing'"):
        ByteLevelBPE(json.loads(tok.to_str()))


def test_a_lone_surrogate_is_named_not_a_codec_traceback(tokenizers):
    ours = ByteLevelBPE(json.loads(tokenizers["gpt2"].to_str()))
    with pytest.raises(InputError, match=r"byte 0xe9 \(character 4\) is not UTF-8"):
        ours.encode("caf\udce9")


@pytest.mark.parametrize("kind", ["L", "N"])
def test_the_letter_and_number_classes_hold_exactly_their_categorys_code_points(kind):
    """\\p{L} and \\p{N} spelled out as [...] classes (bpe._class) against unicodedata: every 7th
    code point, and both sides of both ends of every run the class matches, where an off-by-one
    in the spans would show."""
    everything = "".join(map(chr, range(0x110000)))
    one = re.compile(f"[{bpe_module._class(kind)}]")
    runs = list(re.finditer(f"{one.pattern}+", everything))
    assert len(runs) > 100, "a class of a handful of runs is not Unicode's letters or numbers"
    edges = {cp for r in runs for cp in (r.start() - 1, r.start(), r.end() - 1, r.end())}
    points = sorted((set(range(0, 0x110000, 7)) | edges) & set(range(0x110000)))
    wrong = [hex(cp) for cp in points if (unicodedata.category(chr(cp))[0] == kind) != bool(one.match(chr(cp)))]
    assert not wrong, f"\\p{{{kind}}} disagrees with unicodedata at {wrong[:10]}"
