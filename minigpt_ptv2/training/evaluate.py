"""Dev-set evaluation: accuracy for sentence tasks, entity-level micro F1 for NER.

Nothing is scored silently wrong because of length:
- NER reads every word of every sentence. A sentence longer than max_length is read in
  overlapping windows (data/windows.py), each word's prediction taken at its first sub-token in
  the window where it has the most context, and compared as IOB2 spans with the gold tags. The
  result says how many windows that took and how many sentences needed more than one.
  (A loader of plain rows without `windows()` is scored as given; words it cut off count as
  predicted "O", and `words_cut` says how many there were.)
- Sentence tasks classify what fits in max_length, as in training; `truncated` says how many
  examples were cut.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch.utils.data import DataLoader

from ..data import align_predictions
from ..data.grouping import longest_first
from ..data.windows import scatter_reads
from ..errors import InputError
from ..metrics import accuracy, entity_f1
from ..progress import progress
from .trainer import batch_to


@torch.no_grad()
def predict_batches(model, loader, device="cpu", task=None, show: bool = False):
    """Yield (batch, argmax predictions) for every batch, in loader order (a progress bar with show)."""
    was_training = model.training
    model.eval()
    for batch in progress(loader, f"scoring {task or ''}".strip(), unit="batch", enabled=show):
        b = batch_to(batch, device)
        logits = model(b["input_ids"], b["attention_mask"], b.get("token_type_ids"), task=task)
        yield batch, logits.argmax(-1).cpu()  # [B] or [B, N]
    model.train(was_training)


def evaluate(model, loader, task, examples=None, device="cpu", show_progress: bool = False) -> dict:
    """task: a tasks.Task; examples: the (words, tags) sentences the loader was built from (NER).
    show_progress: a bar over the batches (on a terminal: see progress.py)."""
    if task.kind == "sequence":
        preds, gold = [], []
        for batch, p in predict_batches(model, loader, device, task.name, show_progress):
            preds += p.tolist()
            gold += batch["labels"].tolist()
        cut = getattr(loader.dataset, "cut", None)  # sub-tokens each example lost (SST2Dataset)
        scores = {"accuracy": accuracy(preds, gold)}
        return scores if cut is None else {**scores, "truncated": sum(c > 0 for c in cut)}
    if examples is None:
        raise InputError("token-task evaluation needs the gold sentences (examples=...)")
    gold_tags = [list(tags) for _, tags in examples]
    if hasattr(loader.dataset, "windows"):
        return _windowed(model, loader, task, gold_tags, device, show_progress)
    pred_tags, row, cut = [], 0, 0
    for batch, p in predict_batches(model, loader, device, task.name, show_progress):
        for i in range(p.shape[0]):
            n_words = len(examples[row][0])
            cut += n_words - len({w for w in batch["word_ids"][i] if w is not None})
            ids = align_predictions(p[i], batch["word_ids"][i], n_words)
            pred_tags.append([task.labels[j] for j in ids])
            row += 1
    return {**entity_f1(gold_tags, pred_tags), "words_cut": cut}


def _windowed(model, loader, task, gold_tags, device, show: bool = False) -> dict:
    windows = loader.dataset.windows()
    if len(windows.rows) and windows.rows[-1]["text"] != len(gold_tags) - 1:
        raise InputError(f"the loader holds {windows.rows[-1]['text'] + 1} sentences but {len(gold_tags)} "
                         f"gold sentences were given")
    # longest windows first, so each batch pads little (a third of the padded positions were real
    # tokens in file order); every window is scored on its own and put back by its "text" index
    order = longest_first([len(r["input_ids"]) for r in windows.rows])
    wloader = DataLoader(windows, batch_size=loader.batch_size or 32, sampler=order, collate_fn=windows.collate_fn)
    pred = [[0] * len(g) for g in gold_tags]  # 0 = "O" only for a word with no sub-token at all
    for batch, p in predict_batches(model, wloader, device, task.name, show):
        for i, k in enumerate(batch["text"]):
            scatter_reads(pred[k], p[i], batch["reads"][i])
    per_text = Counter(r["text"] for r in windows.rows)
    return {**entity_f1(gold_tags, [[task.labels[j] for j in row] for row in pred]),
            "windows": len(windows.rows), "long_sentences": sum(n > 1 for n in per_text.values())}
