"""The real tasks and the training methods, by name, and how to build a model for a pair.

    build_task_model("conll", "prefix", P=16)  ->  TaskModel(MiniLM + KVPrefix, {"conll": token head})
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import catalog
from ..data import CONLL_LABELS, SST2_LABELS, conll_batches, load_conll, load_sst2, sst2_batches
from ..errors import InputError
from ..pretrained import default_model_dir
from ..prompts import METHODS, freeze_backbone, make_method
from .heads import Head, TaskModel


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "sequence" | "token"
    labels: tuple
    metric: str  # the dev metric reported
    load: object  # (split, data_dir, max_examples) -> examples
    batches: object  # (examples, tokenizer, batch_size, shuffle, seed, max_length) -> DataLoader
    folder: str  # where `load` reads under the data folder (a run never writes there: outdir.py)
    dev_split: str = "dev"


TASKS = {
    "sst2": Task("sst2", "sequence", tuple(SST2_LABELS), "accuracy", load_sst2, sst2_batches, "sst2"),
    "conll": Task("conll", "token", tuple(CONLL_LABELS), "f1", load_conll, conll_batches, "conll2003"),
}
TRAIN_METHODS = catalog.TRAIN_METHODS  # prompt methods plus the two references every comparison needs


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]


def set_trainable(model: TaskModel, method: str) -> int:
    """Freeze what the method does not train; returns the number of trainable parameters."""
    if method == "full":
        for p in model.parameters():
            p.requires_grad = True
        return sum(p.numel() for p in model.parameters())
    keep = ("heads.",) if method == "head-only" else ("encoder.prompt.", "heads.")
    return freeze_backbone(model, keep)


def start_text(rows: list[list[int]], tokenizer, P: int):
    """The text a prompt starts from under init="tokens" (prompts/from_tokens.py): the first P
    word pieces of the training set, in order, as one [CLS] ... [SEP] sequence. Returns
    (text_ids [1, P+2], rows slice(1, P+1)). rows: the tokenised examples, specials included."""
    special = {tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id}
    pieces = [i for row in rows for i in row if i not in special][:P]
    if len(pieces) < P:
        raise InputError(f"the training set has only {len(pieces)} word pieces; init='tokens' needs P={P}")
    return torch.tensor([[tokenizer.cls_id, *pieces, tokenizer.sep_id]]), slice(1, P + 1)


def build_task_model(task: str, method: str, P: int = 16, model_dir=None, encoder=None,
                     head_dropout: float = 0.1, start=None, **method_kw) -> TaskModel:
    """Pretrained encoder (+ prompt method) + a head for `task`, frozen as the method requires.
    start: (text_ids, rows) from start_text, to start the prompt from a real text, or None (noise)."""
    t = get_task(task)
    if method not in TRAIN_METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {list(TRAIN_METHODS)}")
    if encoder is None:
        from ..models import load_pretrained
        encoder = load_pretrained(model_dir or default_model_dir(), expect="bert")
    if method in METHODS:
        prompt = make_method(method, encoder.config, P, **method_kw)
        if start is not None:
            encoder.detach_prompt()  # the text is read by the plain backbone; the new prompt replaces any other
            prompt.start_from_text(encoder, *start)
        encoder.attach(prompt)
    model = TaskModel(encoder, {t.name: Head(encoder.config.hidden_size, len(t.labels), t.kind, head_dropout)})
    set_trainable(model, method)
    return model
