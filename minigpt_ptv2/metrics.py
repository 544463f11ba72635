"""Task metrics: accuracy for sentence labels, entity-level micro F1 for NER (CoNLL `conlleval` rules).

Entity F1 scores whole entities, not tokens: a predicted entity counts only if its type, start and
end all match a gold entity exactly. Spans are read from IOB tags the way `conlleval` reads them:
an entity starts at B-X, or at an I-X that does not continue an X entity (after O, or after a
different type), and ends where the next tag does not continue it.
"""
from __future__ import annotations

from collections.abc import Sequence

from .errors import InputError


def _as_list(x) -> list:
    return x.tolist() if hasattr(x, "tolist") else list(x)


def accuracy(preds, labels, ignore_index: int | None = -100) -> float:
    """Fraction of equal entries (tensors or sequences), skipping labels equal to ``ignore_index``."""
    p, y = _as_list(preds), _as_list(labels)
    if len(p) != len(y):
        raise InputError(f"shape mismatch: preds {len(p)} labels {len(y)}")
    pairs = [(a, b) for a, b in zip(p, y) if b != ignore_index]
    if not pairs:
        raise InputError("accuracy of zero labels is undefined")
    return sum(a == b for a, b in pairs) / len(pairs)


def _split(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in ("B", "I") or not kind:
        raise InputError(f"bad IOB tag {tag!r}: expected 'O', 'B-TYPE' or 'I-TYPE'")
    return prefix, kind


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entities in one tag sequence as (type, start, end), ``end`` exclusive like a Python slice."""
    spans, kind, start = set(), "", None
    for i, tag in enumerate([*tags, "O"]):  # the sentinel "O" closes an entity at the end
        prefix, this = _split(tag)
        continues = prefix == "I" and this == kind and start is not None
        if start is not None and not continues:
            spans.add((kind, start, i))
            start, kind = None, ""
        if prefix == "B" or (prefix == "I" and not continues):
            start, kind = i, this
    return spans


def entity_f1(gold_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]]) -> dict:
    """Micro precision / recall / F1 over exact entity matches in all sentences (0.0, never NaN, if empty)."""
    if len(gold_seqs) != len(pred_seqs):
        raise InputError(f"{len(gold_seqs)} gold sentences but {len(pred_seqs)} predicted")
    n_gold = n_pred = n_correct = 0
    for i, (gold, pred) in enumerate(zip(gold_seqs, pred_seqs)):
        if len(gold) != len(pred):
            raise InputError(f"sentence {i}: {len(gold)} gold tags but {len(pred)} predicted")
        g, p = entity_spans(gold), entity_spans(pred)
        n_gold, n_pred, n_correct = n_gold + len(g), n_pred + len(p), n_correct + len(g & p)
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "n_gold": n_gold, "n_pred": n_pred, "n_correct": n_correct}
