"""The notation letters (B, N, P, D, L, H, d, ...) and how a shape is spelled with them.

Sizes are numbers; a learner thinks in letters. `dims_for` lists each letter with its size for a
model and a batch, and `spell` writes a shape in letters, using what each capture point usually
holds to choose between letters that happen to share a size (BERT-base has L = H = 12).
"""
from __future__ import annotations

import re


def dims_for(config=None, B: int | None = None, N: int | None = None, P: int | None = None,
             **extra) -> dict:
    """The notation letters (lesson 01's table) with their sizes, for `ShapeTrace(dims=...)`.

    From a config: D, L, H, d (and H_kv when grouped-query attention makes it differ from H),
    V (vocabulary), D_ff (feed-forward width) and the width of the flat prefix table, L*2*D
    (L*2*H_kv*d with grouped K/V heads); from the arguments: B, N, P (and P+N when both are given).
    """
    dims = {}
    for letter, value in (("B", B), ("N", N), ("P", P)):
        if value is not None:
            dims[letter] = int(value)
    if config is not None:
        dims.update(config.dims())
        if dims.get("H_kv") == dims.get("H"):
            dims.pop("H_kv")  # one letter for one size: H_kv is worth a name only when it differs
        dims["V"] = config.vocab_size
        dims["D_ff"] = config.intermediate_size
        dims[config.prefix_width_letters] = config.prefix_width
    if P is not None and N is not None:
        dims["P+N"] = int(P) + int(N)
    dims.update(extra)
    return dims


# Which letter wins when a size matches several (BERT-base has L = H = 12): the first in this
# order, unless the capture point's usual spelling (_SPELLING) names one of the candidates.
_LETTER_ORDER = ("B", "P+N", "N", "P", "D", "H", "H_kv", "d", "L", "V", "D_ff", "L*2*D", "L*2*H_kv*d")

# The usual spelling of each capture point, keyed by the end of its name ("out" covers
# embeddings.out, layer{i}.out and layer{i}.attn.out; "prompt" covers shallow.prompt and
# layer{i}.prompt). A hint is used only where its letter has the axis's size.
_SPELLING = {
    "prompt": ("B", "P", "D"),
    "out": ("B", "N", "D"),
    "inject": ("B", "P+N", "D"),
    "slice": ("B", "N", "D"),
    "final.last_hidden_state": ("B", "N", "D"),
    "prefix.table": ("P", "L*2*D"),
    "prefix.kv": ("L", "2", "H_kv", "P", "d"),
    "deep.prompts": ("L", "P", "D"),
    "gated.rows": ("L", "P", "D"),
    "gated.gates": ("L",),
    "mask.keys": ("B", "P+N"),
    "mask.keep": ("B", "1", "N", "P+N"),
    "attn.q": ("B", "H", "N", "d"),
    "attn.k": ("B", "H_kv", "N", "d"),
    "attn.v": ("B", "H_kv", "N", "d"),
    "attn.gated_k": ("B", "H_kv", "P", "d"),
    "attn.gated_v": ("B", "H_kv", "P", "d"),
    "attn.gated_probs": ("B", "H", "N", "P"),
    "attn.gated_read": ("B", "H", "N", "d"),
    "attn.prefix_k": ("B", "H_kv", "P", "d"),
    "attn.prefix_v": ("B", "H_kv", "P", "d"),
    "attn.k_with_prefix": ("B", "H_kv", "P+N", "d"),
    "attn.v_with_prefix": ("B", "H_kv", "P+N", "d"),
    "attn.k_repeated": ("B", "H", "P+N", "d"),
    "attn.v_repeated": ("B", "H", "P+N", "d"),
    "attn.scores": ("B", "H", "N", "P+N"),
    "attn.probs": ("B", "H", "N", "P+N"),
    "attn.context": ("B", "H", "N", "d"),
    "final.pooler": ("B", "D"),
    "final.logits": ("B", "N", "V"),
}

_LAYER = re.compile(r"^layer(\d+)\.")


def layer_of(name: str) -> int | None:
    """`layer3.attn.k` -> 3; names outside the layer loop -> None."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


def fmt(shape) -> str:
    """(16, 128, 768) -> '[16, 128, 768]'."""
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _spelling(name: str) -> tuple | None:
    for key, letters in _SPELLING.items():
        if name == key or name.endswith("." + key):
            return letters
    return None


def spell(shape: tuple, dims: dict, name: str | None = None) -> str:
    """Spell a shape with the notation letters, e.g. (16, 12, 148, 64) -> '[B, H, P+N, d]'.

    A size no letter matches is printed as a number; a size several letters match gets
    the letter the capture point `name` usually has there (L, not H, in `prefix.kv`).
    A size-1 axis prints as "1" unless the usual spelling puts a letter of size 1 there:
    with L = 1, the keep-mask [B, 1, 1, P+N] must not read [B, 1, L, P+N]; with B = 1,
    the batch axis still reads B.
    """
    order = [k for k in _LETTER_ORDER if k in dims] + [k for k in dims if k not in _LETTER_ORDER]
    usual = _spelling(name) if name else None
    if usual is not None and len(usual) != len(shape):
        usual = None
    out = []
    for axis, size in enumerate(shape):
        matches = [k for k in order if dims[k] == size]
        hint = usual[axis] if usual else None
        if hint == "H_kv" and "H_kv" not in dims:  # no grouping: K/V heads are the H heads
            hint = "H"
        if hint is not None and (hint in matches or hint == str(size)):
            out.append(hint)
        elif size == 1:  # a broadcast axis or a single step, not whichever letter is 1
            out.append("1")
        else:
            out.append(matches[0] if matches else str(size))
    return "[" + ", ".join(out) + "]"
