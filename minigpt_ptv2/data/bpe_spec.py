"""What a byte-level BPE tokenizer.json must hold before bpe.py reads it, checked by field.

A tokenizer.json is a file a user can edit, and the tokenizers library (which transformers uses)
refuses a malformed one: a vocabulary that is a list, an id that is a string or negative, a merge
of three symbols, an added token that is a bare string. Read naively, each of these failed with a
KeyError or an AttributeError from inside the reader, or worse, was read: a merge "a b c" never
applies, an id of -5 reaches the embedding lookup. So every field bpe.py reads is checked here
first, and refused naming the file and the field:

    tokenizer.json: model.merges[0] must be two symbols ("a b" or ["a", "b"]), got 'a b c'

Added tokens get the ids the tokenizers library gives them, which are not always the ids the
file writes: a token the vocabulary already holds keeps the vocabulary's id, and any other
takes the next free id after the vocabulary, in the order the file lists them (a token listed
twice keeps its first id). A file whose added ids disagree (edited by hand, or written by a tool
that numbered them otherwise) would give other ids than transformers' tokenizer, without a word;
`check_added_ids` refuses it, naming the token and both ids (bpe.py asks once it has refused
what it does not read at all).
"""
from __future__ import annotations

from ..errors import InputError


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shown(value) -> str:
    return f"{value!r}"[:60] + f" ({type(value).__name__})"


def check_spec(spec: dict, source) -> None:
    """Refuse a tokenizer.json whose fields are not of the shape bpe.py reads (module docstring)."""
    if not isinstance(spec, dict):
        raise InputError(f"{source}: must hold a JSON object {{...}} (a tokenizer.json), got {_shown(spec)}")
    model = spec.get("model")
    if not isinstance(model, dict):
        raise InputError(f"{source}: field 'model' must be an object {{...}}, got {_shown(model)}")
    for name in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        if spec.get(name) is not None and not isinstance(spec[name], dict):
            raise InputError(f"{source}: field {name!r} must be an object {{...}} or null, got {_shown(spec[name])}")
    if model.get("type") != "BPE":
        return  # refused by name in bpe.py, with the rest of what is not read
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise InputError(f"{source}: model.vocab must be a non-empty object {{token: id}}, got {_shown(vocab)}")
    for token, i in vocab.items():
        if not _is_id(i):
            raise InputError(f"{source}: model.vocab[{token!r}] must be a token id (an int >= 0), got {_shown(i)}")
    merges = model.get("merges", [])
    if not isinstance(merges, list):
        raise InputError(f"{source}: model.merges must be a list, got {_shown(merges)}")
    for n, m in enumerate(merges):
        pair = m.split(" ") if isinstance(m, str) else m
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) and p for p in pair)):
            raise InputError(f'{source}: model.merges[{n}] must be two symbols ("a b" or ["a", "b"]), got {m!r}')
    added = spec.get("added_tokens") or []
    if not isinstance(added, list):
        raise InputError(f"{source}: field 'added_tokens' must be a list, got {_shown(added)}")
    for n, t in enumerate(added):
        if not (isinstance(t, dict) and isinstance(t.get("content"), str) and t["content"] and _is_id(t.get("id"))):
            raise InputError(f"{source}: added_tokens[{n}] must be an object with a non-empty 'content' string and "
                             f"an 'id' (an int >= 0), got {_shown(t)}")


def check_added_ids(vocab: dict, added: list, source) -> None:
    """Refuse an added token whose id is not the one the tokenizers library reads it as."""
    given, following = {}, len(vocab)
    for t in added:
        content = t["content"]
        if content in vocab:
            want, why = vocab[content], "the vocabulary's id for it"
        elif content in given:
            want, why = given[content], "the id of its first listing"
        else:
            want, why = following, "the next free id after the vocabulary and the added tokens before it"
            following += 1
            given[content] = want
        if t["id"] != want:
            raise InputError(f"{source}: added token {content!r} has id {t['id']}, but the tokenizers library "
                             f"(and so transformers) reads it as {want}, {why}: fix its id")
