"""config.json -> our config dataclasses: the fields an architecture reads, checked by kind."""
from __future__ import annotations

from dataclasses import fields

from ..core.config import TOKEN_IDS, check_fields
from ..errors import InputError

# Fields a config.json may set to null, which keeps our default: LLaMA's head_dim /
# num_key_value_heads, where null means D/H and H (as in transformers). A null token id is None.
NULLABLE = ("head_dim", "num_key_value_heads")


def build(cls, kw: dict, source, spelled: dict | None = None):
    """cls(**the fields of kw it has), each checked by kind and range, errors naming `source`
    and, through `spelled`, the file's own name for a field."""
    names = {f.name for f in fields(cls)}
    kw = {k: v for k, v in kw.items() if k in names and not (v is None and k in NULLABLE)}
    check_fields(kw, str(source), spelled)
    try:
        return cls(**kw)
    except InputError as e:
        raise InputError(f"{source}: {e}") from None


def token_ids(hf: dict) -> dict:
    """bos / eos / pad as transformers' generate reads them from a folder: what the file says, a
    missing one None (not the config class's default). load_pretrained has already put those of
    a generation_config.json in their place (hf_files.read_generation_ids)."""
    return {k: hf.get(k) for k in TOKEN_IDS}
