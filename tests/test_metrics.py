"""Metrics on hand-made cases: entity F1 counts whole entities with exact spans, reads IOB the
way CoNLL's conlleval does, and never divides by zero."""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2.metrics import accuracy, entity_f1, entity_spans


def test_accuracy_counts_matches_and_skips_ignored():
    assert accuracy(torch.tensor([1, 0, 1, 1]), torch.tensor([1, 1, 1, 0])) == 0.5
    assert accuracy([2, 0, 5], [2, -100, 4]) == 0.5  # the -100 position is not scored
    with pytest.raises(ValueError, match="shape mismatch"):
        accuracy([1], [1, 0])
    with pytest.raises(ValueError, match="zero labels"):
        accuracy([], [])


def test_spans_are_type_start_end_exclusive():
    tags = ["B-PER", "I-PER", "O", "O", "B-ORG", "O", "B-LOC", "O"]  # Sundar Pichai ... Google ... California
    assert entity_spans(tags) == {("PER", 0, 2), ("ORG", 4, 5), ("LOC", 6, 7)}
    assert entity_spans(["O", "O"]) == set() and entity_spans([]) == set()
    assert entity_spans(["B-LOC", "I-LOC"]) == {("LOC", 0, 2)}  # an entity running to the end closes


def test_conlleval_rules_for_ill_formed_sequences():
    assert entity_spans(["O", "I-PER", "I-PER"]) == {("PER", 1, 3)}  # I- without B- starts an entity
    assert entity_spans(["I-PER"]) == {("PER", 0, 1)}
    assert entity_spans(["B-PER", "I-ORG"]) == {("PER", 0, 1), ("ORG", 1, 2)}  # type change: new entity
    assert entity_spans(["B-PER", "B-PER"]) == {("PER", 0, 1), ("PER", 1, 2)}  # B- always starts anew
    with pytest.raises(ValueError, match="bad IOB tag"):
        entity_spans(["PER"])


def test_exact_match_is_perfect():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-MISC"]]
    assert entity_f1(gold, gold) == {"precision": 1.0, "recall": 1.0, "f1": 1.0,
                                     "n_gold": 3, "n_pred": 3, "n_correct": 3}


def test_partial_span_and_type_mismatch_count_as_wrong():
    gold = [["B-PER", "I-PER", "O"]]
    assert entity_f1(gold, [["B-PER", "O", "O"]])["f1"] == 0.0  # right start, wrong end
    assert entity_f1(gold, [["B-ORG", "I-ORG", "O"]])["f1"] == 0.0  # right span, wrong type
    assert entity_f1(gold, [["O", "I-PER", "O"]])["f1"] == 0.0  # I- alone is its own one-word entity


def test_empty_predictions_and_empty_gold_give_zero_not_nan():
    assert entity_f1([["B-PER"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                               "n_gold": 1, "n_pred": 0, "n_correct": 0}
    assert entity_f1([["O"]], [["O"]])["f1"] == 0.0
    assert entity_f1([], [])["f1"] == 0.0


def test_hand_computed_micro_scores():
    # sentence 1: gold PER[0:2], LOC[3:4]; pred PER[0:2] (right), LOC[3:5] (too long) -> 1 correct
    # sentence 2: gold ORG[0:1], MISC[2:3]; pred ORG[0:1] (right), PER[1:2] (spurious), MISC missed
    # micro over both: n_gold = 4, n_pred = 4 (PER, LOC, ORG, PER), n_correct = 2 -> P = R = F1 = 1/2
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O", "B-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["B-ORG", "B-PER", "O"]]
    scores = entity_f1(gold, pred)
    assert (scores["n_gold"], scores["n_pred"], scores["n_correct"]) == (4, 4, 2)
    assert scores["precision"] == pytest.approx(2 / 4)  # ratios of counts in Python floats
    assert scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(0.5)
    # drop the spurious PER: precision 2/3, recall 2/4, F1 = 2PR/(P+R) = (2*2/3*1/2)/(2/3+1/2) = 4/7
    pred[1][1] = "O"
    scores = entity_f1(gold, pred)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(1 / 2)
    assert scores["f1"] == pytest.approx(4 / 7)


def test_length_mismatches_are_errors():
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        entity_f1([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="1 gold sentences but 0 predicted"):
        entity_f1([["O"]], [])


def _conlleval_chunks(tags):
    """An independent port of conlleval's startOfChunk / endOfChunk rules (IOB only)."""
    chunks, prev_tag, prev_type, start = set(), "O", "", None
    for i, t in enumerate([*tags, "O"]):
        tag, kind = ("O", "") if t == "O" else t.split("-", 1)
        ends = prev_tag in "BI" and (tag in "BO" or prev_type != kind)
        starts = tag == "B" or (tag == "I" and (prev_tag == "O" or prev_type != kind))
        if ends and start is not None:
            chunks.add((prev_type, start, i))
            start = None
        if starts:
            start = i
        prev_tag, prev_type = tag, kind
    return chunks


def test_spans_agree_with_conlleval_rules_on_random_sequences():
    import random
    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    for _ in range(3000):
        seq = [rng.choice(tags) for _ in range(rng.randint(0, 8))]
        assert entity_spans(seq) == _conlleval_chunks(seq), seq
