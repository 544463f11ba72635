"""Lesson 03, traced: the tiny BERT (D=24, L=3, H=4, d=6, D_ff=40, V=120) on B=2, N=5, the last
row's last 2 tokens padded.

Padding makes the model build a keep-mask [B, 1, 1, N] (one row of N keys, broadcast over heads
and queries); asking for attentions takes the explicit path, so every layer also records scores
and probs [B, H, N, N]. Every layer keeps [B, N, D] in and out: post-LN layers change values,
never shapes. No two letters share a size, and the first attention call is recomputed head by
head, so a (d h) head split fails even though it keeps every shape.

Then by numbers: the embeddings are LayerNorm(word + token type 0 + position) with BERT's eps
(pitfall 8: token-type row 0 is added even with one segment); in every layer the two padding
keys get probability exactly 0 from every query; and the scores of kept keys are q k^T / sqrt(d).
Run: `pytest tests/test_lesson_03_trace.py`.
"""
import torch

from trace_checks import bert_embeddings, pads_get_nothing, scores_scaled
from trace_helpers import trace_lesson

EXPECTED = """
name                     shape         letters
embeddings.out           [2, 5, 24]    [B, N, D]
mask.keys                [2, 5]        [B, N]
mask.keep                [2, 1, 1, 5]  [B, 1, 1, N]
layer0.attn.q            [2, 4, 5, 6]  [B, H, N, d]
layer0.attn.k            [2, 4, 5, 6]  [B, H, N, d]
layer0.attn.v            [2, 4, 5, 6]  [B, H, N, d]
layer0.attn.scores       [2, 4, 5, 5]  [B, H, N, N]
layer0.attn.probs        [2, 4, 5, 5]  [B, H, N, N]
layer0.attn.context      [2, 4, 5, 6]  [B, H, N, d]
layer0.attn.out          [2, 5, 24]    [B, N, D]
layer0.out               [2, 5, 24]    [B, N, D]
layer1.attn.q            [2, 4, 5, 6]  [B, H, N, d]
layer1.attn.k            [2, 4, 5, 6]  [B, H, N, d]
layer1.attn.v            [2, 4, 5, 6]  [B, H, N, d]
layer1.attn.scores       [2, 4, 5, 5]  [B, H, N, N]
layer1.attn.probs        [2, 4, 5, 5]  [B, H, N, N]
layer1.attn.context      [2, 4, 5, 6]  [B, H, N, d]
layer1.attn.out          [2, 5, 24]    [B, N, D]
layer1.out               [2, 5, 24]    [B, N, D]
layer2.attn.q            [2, 4, 5, 6]  [B, H, N, d]
layer2.attn.k            [2, 4, 5, 6]  [B, H, N, d]
layer2.attn.v            [2, 4, 5, 6]  [B, H, N, d]
layer2.attn.scores       [2, 4, 5, 5]  [B, H, N, N]
layer2.attn.probs        [2, 4, 5, 5]  [B, H, N, N]
layer2.attn.context      [2, 4, 5, 6]  [B, H, N, d]
layer2.attn.out          [2, 5, 24]    [B, N, D]
layer2.out               [2, 5, 24]    [B, N, D]
final.last_hidden_state  [2, 5, 24]    [B, N, D]
final.pooler             [2, 24]       [B, D]
"""


def test_lesson_03_tiny_bert_trace():
    trace, seen = trace_lesson("03", EXPECTED, B=2, N=5, pad=2)
    assert len(set(trace.dims.values())) == len(trace.dims), f"two letters share a size: {trace.dims}"
    model, ids, mask, _ = seen.runs[0]
    bert_embeddings(seen, model, ids, positions=torch.arange(5))
    pads_get_nothing(seen, mask, layers=3)
    scores_scaled(seen, "layer0.attn", keep=mask.bool()[:, None, None, :])  # [B, 1, 1, N]
    seen.probe.check()  # last: the first attention call, recomputed head by head
