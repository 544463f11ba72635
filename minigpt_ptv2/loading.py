"""Load a HuggingFace-format folder (config.json + weights) into our Encoder or Decoder, offline.

Loading is a rename table plus two explicit layout changes. Our `Linear` stores W [D_in, D_out]
(y = x W + b), as GPT-2's Conv1D does; BERT's `nn.Linear` stores [D_out, D_in], so BERT's matrices
are transposed. Our attention keeps W_Q, W_K, W_V side by side in one `qkv` [D, 3D], as GPT-2's
`c_attn` does; BERT's separate query/key/value are concatenated. Every checkpoint key is
accounted for: renamed, deliberately ignored (with the reason below), or reported as an error.

What a folder holds is checked before it is used, because a wrong number loaded here would
spoil every result after it without a sign:
- every tensor read must be finite (a NaN weight gives NaN logits, and argmax of NaN is 0: a
  plausible-looking accuracy) and of a floating dtype where the model has a float;
- every file read must stay inside the folder: a sharded index naming `../x.safetensors`, an
  absolute path, or a symlink that leads out of the folder is refused. The one exception is the
  HuggingFace hub cache, whose `snapshots/<rev>/` files are symlinks into the same entry's `blobs/`;
- the sharded index must be an object {"weight_map": {tensor name: file name}} and each shard
  must hold exactly the tensors the index assigns to it (a tensor in two shards would otherwise
  be taken from whichever was read last).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .config import DecoderConfig, EncoderConfig, config_from_hf
from .errors import InputError, MissingFileError
from .validate import check_finite, read_json, require

# checkpoint key (after stripping "bert." / "transformer.") -> our key; {i} is the layer index.
BERT_RENAMES = [
    (r"embeddings\.(word_embeddings|position_embeddings|token_type_embeddings|LayerNorm)\.(.*)",
     r"embeddings.\1.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(.*)", r"layers.\1.attn.\2.\3"),  # fused below
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(.*)", r"layers.\1.attn.output.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(.*)", r"layers.\1.attn_norm.\2"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(.*)", r"layers.\1.ffn_in.\2"),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(.*)", r"layers.\1.ffn_out.\2"),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.(.*)", r"layers.\1.ffn_norm.\2"),
    (r"pooler\.dense\.(.*)", r"pooler.\1"),
]
BERT_IGNORED = [
    (r"embeddings\.position_ids", "a buffer of 0..511, not a weight"),
    (r"cls\..*", "a pre-training head (MLM/NSP), not part of the encoder"),
]

GPT2_RENAMES = [
    (r"(wte|wpe|ln_f)\.(.*)", r"\1.\2"),
    (r"h\.(\d+)\.(ln_1|ln_2)\.(.*)", r"layers.\1.\2.\3"),
    (r"h\.(\d+)\.attn\.c_attn\.(.*)", r"layers.\1.attn.qkv.\2"),  # already [W_Q | W_K | W_V]
    (r"h\.(\d+)\.attn\.c_proj\.(.*)", r"layers.\1.attn.output.\2"),
    (r"h\.(\d+)\.mlp\.c_fc\.(.*)", r"layers.\1.ffn_in.\2"),
    (r"h\.(\d+)\.mlp\.c_proj\.(.*)", r"layers.\1.ffn_out.\2"),
]
GPT2_IGNORED = [
    (r"h\.\d+\.attn\.(bias|masked_bias)", "an old causal-mask buffer; the mask is built on the fly"),
    (r"lm_head\.weight", "tied to wte.weight (checked equal)"),
]
# nn.Linear matrices [out, in] -> our Linear [in, out]: BERT checkpoints, after renaming (GPT-2's
# Conv1D already is [in, out]). Prompt and head modules are plain nn.Linear and keep their names.
NN_LINEAR_WEIGHTS = re.compile(r"(.*\.)?(query|key|value|output|ffn_in|ffn_out|pooler)\.weight")


def _legacy(key: str) -> str:
    """Very old BERT checkpoints call LayerNorm's weight/bias gamma/beta."""
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))


def inside(model_dir: Path, name: str, source) -> Path:
    """model_dir / name, refused if it resolves outside model_dir (see the module docstring).
    `source` is the file that named it, for the message."""
    root, target = Path(model_dir).resolve(), (Path(model_dir) / name).resolve()
    allowed = [root]
    if root.parent.name == "snapshots":  # HF hub cache: models--x/snapshots/<rev>/f -> ../../blobs/<hash>
        allowed.append(root.parent.parent / "blobs")
    if not any(target == a or a in target.parents for a in allowed):
        raise InputError(f"{source}: {name!r} leads outside the model folder {model_dir} (to {target}); "
                         f"a model folder may only refer to files inside it")
    return Path(model_dir) / name


def _read_weights_file(path: Path) -> dict:
    """One weights file -> {name: tensor}, checked: a dict of named tensors, all finite."""
    from safetensors.torch import load_file
    try:
        if path.suffix == ".bin":
            sd = torch.load(path, map_location="cpu", weights_only=True)
        else:
            sd = load_file(str(path))
    except Exception as e:  # corrupted, truncated, or a pickle where safetensors was expected
        raise InputError(f"could not read weights from {path}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''} (corrupted, truncated, or not "
                         f"the format its name says?)") from None
    if not isinstance(sd, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        raise InputError(f"{path} does not hold a state dict (named tensors): got {type(sd).__name__}")
    check_finite(sd, path)
    return sd


def _read_sharded(model_dir: Path, index_path: Path) -> dict:
    index = read_json(index_path)
    require(index, index_path, {"weight_map": "dict"})
    weight_map = index["weight_map"]
    for key, file in weight_map.items():
        if not isinstance(file, str):
            raise InputError(f"{index_path}: weight_map[{key!r}] must be a file name (a string), got "
                             f"{file!r} ({type(file).__name__})")
    if not weight_map:
        raise InputError(f"{index_path}: weight_map is empty, it names no weights")
    shards = {file: inside(model_dir, file, index_path) for file in sorted(set(weight_map.values()))}
    for file, path in shards.items():  # all checked before the first (slow) read
        if not path.is_file():
            raise MissingFileError(f"{index_path} names {file!r}, which is not in {model_dir}")
    sd = {}
    for file, path in shards.items():
        part = _read_weights_file(path)
        listed = {k for k, f in weight_map.items() if f == file}
        if set(part) != listed:
            raise InputError(f"{path} does not hold what {index_path.name} assigns to it: unlisted "
                             f"{sorted(set(part) - listed)[:5]}, absent {sorted(listed - set(part))[:5]}")
        sd.update(part)
    return sd


def read_state_dict(model_dir: Path) -> dict:
    """Read model.safetensors (or a sharded index), else pytorch_model.bin with weights_only=True."""
    model_dir = Path(model_dir)
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if (model_dir / name).exists():
            path = inside(model_dir, name, model_dir)
            return _read_sharded(model_dir, path) if name.endswith(".json") else _read_weights_file(path)
    raise MissingFileError(f"no weights in {model_dir}: expected model.safetensors, "
                           f"model.safetensors.index.json or pytorch_model.bin")


def _rename(sd: dict, renames, ignored, strip: str) -> tuple[dict, list]:
    out, unexpected = {}, []
    for key, t in sd.items():
        k = _legacy(key[len(strip):] if key.startswith(strip) else key)
        if any(re.fullmatch(p, k) for p, _ in ignored):
            continue
        for pat, rep in renames:
            if re.fullmatch(pat, k):
                out[re.sub(pat, rep, k)] = t
                break
        else:
            unexpected.append(key)
    return out, unexpected


def convert_gpt2(sd: dict) -> tuple[dict, list]:
    out, unexpected = _rename(sd, GPT2_RENAMES, GPT2_IGNORED, "transformer.")
    if "lm_head.weight" in sd and "wte.weight" in out and not torch.equal(sd["lm_head.weight"], out["wte.weight"]):
        raise InputError("lm_head.weight differs from wte.weight: only tied LM heads are supported")
    return out, unexpected


def from_nn_linear_layout(sd: dict, source: str) -> dict:
    """Tensors named as in our modules but laid out for nn.Linear -> our layout:
    each matrix [out, in] -> [in, out], and attention's query, key, value -> one qkv [D, 3D]."""
    out = dict(sd)
    for k in [k for k in sd if re.search(r"\.attn\.(query|key|value)\.", k)]:
        if k not in out:
            continue  # already fused with its partners
        names = [re.sub(r"\.(query|key|value)\.", f".{n}.", k) for n in ("query", "key", "value")]
        missing = [n for n in names if n not in out]
        if missing:
            raise InputError(f"{source}: attention needs query, key and value to build qkv, but "
                             f"{', '.join(missing)} is missing next to {k}")
        shapes = [list(out[n].shape) for n in names]
        if any(s != shapes[0] for s in shapes):
            raise InputError(f"{source}: query, key and value differ in shape: "
                             + ", ".join(f"{n} {s}" for n, s in zip(names, shapes)))
        dim = 1 if k.endswith(".weight") else 0  # W [D, D] x 3 -> [D, 3D] (after .t()); b [D] x 3 -> [3D]
        parts = [out.pop(n) for n in names]
        if dim == 1:
            parts = [w.t() for w in parts]  # [out, in] -> [in, out]
        out[names[0].replace(".query.", ".qkv.")] = torch.cat(parts, dim=dim).contiguous()
    for k in out:
        if NN_LINEAR_WEIGHTS.fullmatch(k):
            out[k] = out[k].t().contiguous()  # nn.Linear [out, in] -> Linear [in, out]
    return out


def convert_bert(sd: dict, source: str = "checkpoint") -> tuple[dict, list]:
    out, unexpected = _rename(sd, BERT_RENAMES, BERT_IGNORED, "bert.")
    return from_nn_linear_layout(out, source), unexpected


def load_into(model: torch.nn.Module, ours: dict, unexpected: list, source: str) -> None:
    """Copy `ours` into the model, refusing anything missing, unexpected or mis-shaped."""
    target = {k: v for k, v in model.state_dict().items() if not k.startswith("prompt.")}
    missing = sorted(set(target) - set(ours))
    unexpected = sorted(unexpected + [k for k in ours if k not in target])
    if missing or unexpected:
        raise InputError(f"checkpoint {source} does not match the model: missing keys {missing}, "
                         f"unexpected keys {unexpected}")
    for k, t in ours.items():
        if target[k].is_floating_point() and not t.is_floating_point():
            raise InputError(f"checkpoint {source}: tensor for {k} is {t.dtype}, not a floating dtype "
                             f"(the model's weight is {target[k].dtype})")
        if t.shape != target[k].shape:
            raise InputError(f"shape mismatch for {k}: checkpoint {list(t.shape)} vs model "
                             f"{list(target[k].shape)} (as this package stores them: W [in, out])")
    with torch.no_grad():
        for k, p in model.state_dict().items():
            if k in ours:
                p.copy_(ours[k])


def load_pretrained(model_dir, expect: str | None = None, device=None, dtype=None):
    """Build the right model for the folder's config.json and fill it from its weights."""
    from .decoder import Decoder
    from .encoder import Encoder
    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise MissingFileError(f"{model_dir} is not a model folder: no config.json in it")
    cfg = config_from_hf(read_json(inside(model_dir, "config.json", model_dir)), cfg_path)
    if expect is not None and cfg.model_type != expect:
        raise InputError(f"{model_dir} holds a {cfg.model_type!r} model but {expect!r} was expected")
    sd = read_state_dict(model_dir)
    if isinstance(cfg, EncoderConfig):
        model = Encoder(cfg)
        ours, unexpected = convert_bert(sd, str(model_dir))
    else:
        assert isinstance(cfg, DecoderConfig)
        model = Decoder(cfg)
        ours, unexpected = convert_gpt2(sd)
    load_into(model, ours, unexpected, str(model_dir))
    model.eval()  # dropout off: equivalence with references is only defined in eval mode
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)
    return model
