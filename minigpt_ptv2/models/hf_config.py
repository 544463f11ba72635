"""config.json -> our config dataclasses: the fields an architecture reads, checked by kind, and
every other field named.

transformers writes many fields into a config.json that change nothing a model computes
(NOT_READ below: who wrote the file, how fresh weights would be drawn, what its forward returns,
task heads this package does not build). Any other field that no part of this package reads is
refused by name, never skipped: it might change the computation (a sliding window, a soft cap on
the logits, another activation), and a model loaded without it would be silently another model.
"""
from __future__ import annotations

from dataclasses import fields

from ..core.config import TOKEN_IDS, check_fields
from ..errors import InputError

# Fields a config.json may set to null, which keeps our default: LLaMA's head_dim /
# num_key_value_heads, where null means D/H and H (as in transformers). A null token id is None.
NULLABLE = ("head_dim", "num_key_value_heads")

# config.json fields of transformers' own bookkeeping, read by no architecture here, each harmless:
NOT_READ = {
    "architectures",  # the transformers class that wrote the file (ours is chosen by model_type)
    "transformers_version", "_name_or_path", "_commit_hash",  # who wrote it, from where
    "dtype", "torch_dtype",  # the weights' storage dtype (the tensors carry their own)
    "initializer_range",  # how fresh weights would be drawn; loaded weights are given
    "use_cache", "output_attentions", "output_hidden_states", "return_dict", "torchscript",  # what HF's forward returns
    "gradient_checkpointing",  # a training setting of transformers
    "id2label", "label2id", "num_labels", "problem_type", "finetuning_task",  # task heads (ours come from checkpoints)
    "tokenizer_class",  # the tokenizer is read from its own files
    "chunk_size_feed_forward",  # the same feed-forward, computed in chunks
    "task_specific_params",  # generate's defaults per pipeline (our generate takes its arguments)
}


def build(cls, kw: dict, source, spelled: dict | None = None, read=()):
    """cls(**the fields of kw it has), each checked by kind and range, errors naming `source`
    and, through `spelled`, the file's own name for a field. Every other key of kw must be one the
    caller read (`read`: checked, or ignored for a reason it states) or in NOT_READ; the rest are
    refused, named in the file's spelling."""
    names = {f.name for f in fields(cls)}
    unread = sorted(k for k in kw if k not in names and k not in read and k not in NOT_READ and k != "model_type")
    if unread:
        shown = ", ".join(repr(k) for k in unread)
        raise InputError(f"{source}: {shown} {'is' if len(unread) == 1 else 'are'} not read by this package's "
                         f"{cls.model_type} model and may change what it computes; refused rather than ignored")
    kw = {k: v for k, v in kw.items() if k in names and not (v is None and k in NULLABLE)}
    check_fields(cls, kw, str(source), spelled)
    try:
        return cls(**kw)
    except InputError as e:
        raise InputError(f"{source}: {e}") from None


def token_ids(hf: dict) -> dict:
    """bos / eos / pad as transformers' generate reads them from a folder: what the file says, a
    missing one None (not the config class's default). load_pretrained has already put those of
    a generation_config.json in their place (hf_files.read_generation_ids)."""
    return {k: hf.get(k) for k in TOKEN_IDS}
