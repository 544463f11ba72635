"""What every architecture's configuration has in common, and how its fields are checked.

Each architecture (models/bert.py, models/gpt2.py, models/llama.py, ...) defines its own frozen
dataclass on top of `ModelConfig`, with HuggingFace's field names so a `config.json` maps onto it
one key at a time. The core and the prompt methods read only what is defined here: the notation
letters (`dims()`: D, L, H, H_kv, d), the vocabulary, the position limit and the prefix width;
a decoder's config (`DecoderConfig`) adds the token ids generation reads: bos, eos (one id or
several: generation stops at any of them) and pad.

Every field is checked for its kind and range (`check_fields`), both when a config is built in
Python and, naming the file and the file's own spelling of the field, when it comes from a
`config.json`: "384" (a string) is not a width, JSON's `true` is not a head count (Python would
take it as 1), and a NaN LayerNorm eps would turn every output into NaN. Each config class says
the kinds of the fields it adds, in its own `field_kinds` (a name from KINDS below, or that
name + " or null"); this module names no architecture's fields. A field without a declared kind
is a mistake in the class, refused by name the first time the class is built.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from ..errors import InputError
from ..validate import _json_repr

TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")  # DecoderConfig's: an id >= 0 or None; eos also a list

# kind -> (accepted Python types, test or None, what the test asks, how the kind is described).
# bool is never an int or a number here: JSON's `true` is not a length.
KINDS = {
    "size": ((int,), lambda x: x > 0, "positive", "an int"),
    "count": ((int,), lambda x: x >= 0, ">= 0", "an int"),
    "positive": ((int, float), lambda x: x > 0, "> 0", "a number"),
    "probability": ((int, float), lambda x: 0 <= x < 1, "in [0, 1)", "a number"),
    "flag": ((bool,), None, None, "true or false"),
    "object": ((dict,), None, None, "an object {...}"),
    "names": ((list, tuple), lambda x: all(isinstance(n, str) for n in x), "a list of strings", "a list [...]"),
    "token id": None,  # an id >= 0 (or null): _check_token_id
    "token ids": None,  # eos: an id, or a non-empty list of them (or null)
}


def kinds_of(cls) -> dict:
    """Every field's declared kind: each class's own `field_kinds`, from the base up."""
    return {name: kind for c in reversed(cls.__mro__) for name, kind in vars(c).get("field_kinds", {}).items()}


def check_fields(cls, values: dict, source: str, spelled: dict | None = None) -> None:
    """Refuse a field of `cls` of the wrong kind, a non-finite number or one out of range.
    `spelled` maps our field name to the name the file uses (GPT-2's n_embd for hidden_size),
    for the message."""
    spelled, declared = spelled or {}, kinds_of(cls)
    for name, value in values.items():
        if name not in declared:
            raise TypeError(f"{cls.__name__} declares no kind for its field {name!r}: add it to field_kinds")
        kind, shown = declared[name], spelled.get(name, name)
        nullable = kind.endswith(" or null")
        kind = kind.removesuffix(" or null")
        if kind.startswith("token id"):
            _check_token_id(shown, value, source, many=kind == "token ids")
            continue
        if value is None and nullable:
            continue
        types, test, wanted, desc = KINDS[kind]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise InputError(f"{source}: field {shown!r} must be {desc}{' or null' if nullable else ''}, "
                             f"got {_json_repr(value)}")
        if types == (int, float) and not math.isfinite(value):
            raise InputError(f"{source}: field {shown!r} must be a finite number, got {value}")
        if test is not None and not test(value):
            raise InputError(f"{source}: {shown} must be {wanted}, got {value!r}")


def _check_token_id(shown: str, value, source: str, many: bool) -> None:
    """A token id is an int >= 0 or None (JSON null); with `many` (eos) also a non-empty list of them."""
    def one(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if value is None or one(value) or (many and isinstance(value, (list, tuple)) and value and all(map(one, value))):
        return
    kind = "a token id (an int >= 0), a non-empty list of them" if many else "a token id (an int >= 0)"
    raise InputError(f"{source}: field {shown!r} must be {kind} or null, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The fields every architecture has (BERT-base's values as defaults)."""
    vocab_size: int = 30522  # V
    hidden_size: int = 768  # D
    num_hidden_layers: int = 12  # L
    num_attention_heads: int = 12  # H
    max_position_embeddings: int = 512
    intermediate_size: int = 3072  # D_ff

    model_type = "none"  # a class attribute: "bert", "gpt2", "llama" (the registry's key)
    field_kinds = {name: "size" for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                             "max_position_embeddings", "intermediate_size")}

    def __post_init__(self):
        check_fields(type(self), {f.name: getattr(self, f.name) for f in fields(self)}, type(self).__name__)
        D, H = self.hidden_size, self.num_attention_heads
        if D % H and not self.free_head_dim:
            raise InputError(f"num_attention_heads={H} does not divide hidden_size={D}: "
                             f"each head needs d = D/H features")
        if H % self.num_key_value_heads:
            raise InputError(f"num_key_value_heads={self.num_key_value_heads} must divide num_attention_heads="
                             f"{H}: each K/V head serves a whole group of query heads")

    free_head_dim = False  # True where d is a field of its own (LLaMA), not D/H

    @property
    def num_key_value_heads(self) -> int:  # H_kv: H unless grouped-query attention says fewer
        return self.num_attention_heads

    @property
    def head_dim(self) -> int:  # d
        return self.hidden_size // self.num_attention_heads

    def dims(self) -> dict:
        """The notation letters this config fixes: D, L, H, H_kv, d (B, N, P come from the batch)."""
        return {"D": self.hidden_size, "L": self.num_hidden_layers, "H": self.num_attention_heads,
                "H_kv": self.num_key_value_heads, "d": self.head_dim}

    @property
    def prefix_width(self) -> int:
        """Width of one row of a flat K/V prefix table: L layers x (K, V) x H_kv heads x d."""
        return self.num_hidden_layers * 2 * self.num_key_value_heads * self.head_dim

    @property
    def prefix_width_letters(self) -> str:
        plain = self.num_key_value_heads * self.head_dim == self.hidden_size
        return "L*2*D" if plain else "L*2*H_kv*d"

    def to_dict(self) -> dict:
        return {"model_type": self.model_type, **asdict(self)}

    def replace(self, **changes):
        return replace(self, **changes)


@dataclass(frozen=True)
class DecoderConfig(ModelConfig):
    """A decoder's config: the common fields plus the token ids generation reads (core/generate.py).
    eos_token_id may list several ids (a list in config.json, a tuple here): a row stops at any."""
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None

    field_kinds = {"bos_token_id": "token id", "eos_token_id": "token ids", "pad_token_id": "token id"}

    def __post_init__(self):
        if isinstance(self.eos_token_id, list):  # as JSON gives it; a tuple keeps the config immutable
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        super().__post_init__()

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """Every end-of-sequence id, () for none."""
        eos = self.eos_token_id
        return () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
