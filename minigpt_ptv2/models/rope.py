"""RoPE settings in a config.json, in every spelling transformers 5 reads: matched, or refused by name.

What transformers 5.23 does with each (modeling_rope_utils.py, configuration_utils.py; each line
measured against it in tests/test_rope_config.py):
- `rope_parameters` {rope_type, rope_theta, ...} holds the settings; "type" is an older name of
  rope_type (rope_type wins when both are there); a missing rope_type is "default".
- `rope_scaling` (transformers 4's name), when it is a non-empty object, REPLACES rope_parameters
  whole: a rope_theta inside rope_parameters is then lost (10000 unless given at the top level).
  Null or {} leaves rope_parameters alone.
- a top-level `rope_theta` fills in the object's when it has none; the object's own wins.
- `partial_rotary_factor` (top level or inside): LlamaForCausalLM's plain RoPE ignores it and
  turns the whole head; the rescaled types compute frequencies for part of the head, then fail
  at the first forward pass.
- a top-level `original_max_position_embeddings` wins over the object's for llama3 (and yarn,
  longrope); without either, max_position_embeddings is used.
- rope_type "linear" needs factor; "llama3" needs factor, low_freq_factor, high_freq_factor
  (and original_max_position_embeddings); "dynamic" and "longrope" change the frequencies with
  the sequence length while running, "yarn" also scales attention; an unknown type fails.
- a key the type does not use: a logged warning, then ignored.

What this module does: the plain RoPE, "linear" and "llama3" are read (core/rotary.py computes
them, tested equal to transformers); everything else is refused by name, never ignored:
- two spellings of one setting that disagree (rope_scaling beside rope_parameters, a top-level
  rope_theta or original_max_position_embeddings beside the object's, type beside rope_type) are
  refused naming both, where transformers silently keeps one; agreeing spellings are read;
- a partial_rotary_factor other than 1, a key the type does not use, a top-level rope_type (which
  transformers does not read), and every other rope_type.
"""
from __future__ import annotations

from ..core.rotary import SCALINGS, check_scaling
from ..errors import InputError

DEFAULT_THETA = 10000.0
FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max
COMMON = ("rope_type", "type", "rope_theta", "partial_rotary_factor")
# the top-level config.json fields rope_from_hf reads (or refuses by name)
FIELDS = ("rope_parameters", "rope_scaling", "rope_theta", "rope_type", "partial_rotary_factor",
          "original_max_position_embeddings")


def rope_from_hf(hf: dict, source) -> tuple[float, dict | None]:
    """(rope_theta, scaling) of a Llama config.json: scaling None for the plain RoPE, else what
    core/rotary.py's Rotary takes (module docstring)."""
    if "rope_type" in hf:
        raise InputError(f"{source}: a top-level rope_type ({hf['rope_type']!r}) is not read (by transformers "
                         f"either): it belongs in rope_parameters")
    read = {name: _settings(hf, name, source) for name in ("rope_parameters", "rope_scaling")
            if _object(hf, name, source)}
    if len(read) == 2 and read["rope_parameters"] != read["rope_scaling"]:
        raise InputError(f"{source}: rope_scaling {hf['rope_scaling']} and rope_parameters {hf['rope_parameters']} "
                         f"disagree (transformers would read rope_scaling and ignore rope_parameters): keep one")
    theta, scaling = read.get("rope_scaling") or read.get("rope_parameters") or _settings(hf, None, source)
    return theta, scaling


def _object(hf: dict, name: str, source) -> dict:
    value = hf.get(name)
    if value is not None and not isinstance(value, dict):
        raise InputError(f"{source}: field {name!r} must be an object {{...}} or null, got {value!r}")
    return value or {}


def _settings(hf: dict, name: str | None, source) -> tuple[float, dict | None]:
    """(theta, scaling) as the object `hf[name]` (None: no object) and the top level say together."""
    obj = _object(hf, name, source) if name else {}
    where = f"{source}: {name}" if name else str(source)
    kind = obj.get("rope_type")
    if "type" in obj and kind is not None and obj["type"] != kind:
        raise InputError(f"{where} has type={obj['type']!r} and rope_type={kind!r}: they disagree (transformers "
                         f"reads rope_type): keep one")
    kind = kind or obj.get("type") or "default"
    wanted = SCALINGS.get(kind, ())
    unknown = sorted(set(obj) - set(COMMON) - set(wanted))
    if kind != "default" and kind not in SCALINGS:
        check_scaling({"rope_type": kind}, where)  # refuses it, saying what is implemented
    if unknown:
        raise InputError(f"{where}: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not used by "
                         f"rope_type {kind!r} (transformers ignores {'it' if len(unknown) == 1 else 'them'}): "
                         f"remove, or fix the rope_type")
    theta = _one(hf, obj, "rope_theta", where, DEFAULT_THETA)
    if _one(hf, obj, "partial_rotary_factor", where, 1.0) != 1.0:
        raise InputError(f"{where}: partial_rotary_factor other than 1 is not supported (transformers' Llama turns "
                         f"the whole head under the plain RoPE and fails under the rescaled ones)")
    if "original_max_position_embeddings" not in wanted and hf.get("original_max_position_embeddings") is not None:
        raise InputError(f"{source}: original_max_position_embeddings only matters to llama3's rescaled RoPE; "
                         f"this one is rope_type {kind!r}")
    if kind == "default":
        return theta, None
    scaling = {"rope_type": kind, **{k: obj[k] for k in wanted if k in obj}}
    if "original_max_position_embeddings" in wanted:
        top, inner = hf.get("original_max_position_embeddings"), obj.get("original_max_position_embeddings")
        if top is not None and inner is not None and top != inner:
            raise InputError(f"{where}: original_max_position_embeddings is {inner} there and {top} at the top "
                             f"level (transformers reads the top level's): keep one")
        given = top if top is not None else inner  # 0 is given (and refused), not absent
        scaling["original_max_position_embeddings"] = given if given is not None else hf.get("max_position_embeddings",
                                                                                             2048)
    check_scaling(scaling, where)
    # an angle is position x inv_freq / factor with inv_freq <= 1 (a positions field that is not a
    # number is refused with the other fields)
    positions = hf.get("max_position_embeddings", 2048)
    if isinstance(positions, (int, float)) and not positions / scaling["factor"] < FLOAT32_MAX:
        raise InputError(f"{where}: factor {scaling['factor']} is so small that the rescaled angles (position / "
                         f"factor, up to {positions} positions) overflow float32 to inf, and every logit is NaN: "
                         f"the factor is a context-length ratio, e.g. 2 or 8")
    return theta, scaling


def _one(hf: dict, obj: dict, key: str, where: str, default):
    """A setting given inside the object and/or at the top level: refused if the two disagree."""
    inner, top = obj.get(key), hf.get(key)
    if key in obj and inner is None:
        raise InputError(f"{where}: {key} is null: give a number or leave it out")
    if inner is not None and top is not None and inner != top:
        raise InputError(f"{where}: {key} is {inner} there and {top} at the top level (transformers reads "
                         f"the first): keep one")
    value = inner if inner is not None else top if top is not None else default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: {key} must be a number, got {value!r}")
    return value
