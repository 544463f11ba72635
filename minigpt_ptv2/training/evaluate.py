"""Dev-set evaluation: accuracy for sentence tasks, entity-level micro F1 for NER.

For NER, predictions are read at each word's first sub-token and compared as IOB2 spans with
the gold tags of every word (words cut off by truncation count as predicted "O").
"""
from __future__ import annotations

import torch

from ..data import align_predictions
from ..errors import InputError
from ..metrics import accuracy, entity_f1
from .trainer import batch_to


@torch.no_grad()
def predict_batches(model, loader, device="cpu", task=None):
    """Yield (batch, argmax predictions) for every batch, in loader order."""
    was_training = model.training
    model.eval()
    for batch in loader:
        b = batch_to(batch, device)
        logits = model(b["input_ids"], b["attention_mask"], b.get("token_type_ids"), task=task)
        yield batch, logits.argmax(-1).cpu()  # [B] or [B, N]
    model.train(was_training)


def evaluate(model, loader, task, examples=None, device="cpu") -> dict:
    """task: a tasks.Task; examples: the (words, tags) sentences the loader was built from (NER)."""
    if task.kind == "sequence":
        preds, gold = [], []
        for batch, p in predict_batches(model, loader, device, task.name):
            preds += p.tolist()
            gold += batch["labels"].tolist()
        return {"accuracy": accuracy(preds, gold)}
    if examples is None:
        raise InputError("token-task evaluation needs the gold sentences (examples=...)")
    pred_tags, row = [], 0
    for batch, p in predict_batches(model, loader, device, task.name):
        for i in range(p.shape[0]):
            n_words = len(examples[row][0])
            ids = align_predictions(p[i], batch["word_ids"][i], n_words)
            pred_tags.append([task.labels[j] for j in ids])
            row += 1
    gold_tags = [list(tags) for _, tags in examples]
    return entity_f1(gold_tags, pred_tags)
