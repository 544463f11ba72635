"""Lesson 01, traced: a plain BERT-base-shaped encoder (3 of its 12 layers), B=16, N=128.

No prompt yet: every row is [B, N, ...] and P appears nowhere. Every layer records the same six
rows: queries, keys and values [B, H, N, d], the per-head context, then back to [B, N, D]. Three
layers, not two, so that no two letters share a size (with L=2, L*2*D = 3072 = D_ff). Compare
with lessons 06-08, where the same model grows P rows or P keys.

Then the lesson's point by its numbers: heads are a reshaping of D. Head h of the queries is
columns h*d..(h+1)*d of x W_Q (and so on for K and V), and the heads go back side by side,
(h d), before W_O. Split or merged as (d h), every shape stays right and these checks fail,
naming the step. Run: `pytest tests/test_lesson_01_trace.py`.
"""
from trace_checks import heads_merged, heads_split
from trace_helpers import trace_lesson

EXPECTED = """
name                     shape              letters
embeddings.out           [16, 128, 768]     [B, N, D]
mask.keys                [16, 128]          [B, N]
layer0.attn.q            [16, 12, 128, 64]  [B, H, N, d]
layer0.attn.k            [16, 12, 128, 64]  [B, H, N, d]
layer0.attn.v            [16, 12, 128, 64]  [B, H, N, d]
layer0.attn.context      [16, 12, 128, 64]  [B, H, N, d]
layer0.attn.out          [16, 128, 768]     [B, N, D]
layer0.out               [16, 128, 768]     [B, N, D]
layer1.attn.q            [16, 12, 128, 64]  [B, H, N, d]
layer1.attn.k            [16, 12, 128, 64]  [B, H, N, d]
layer1.attn.v            [16, 12, 128, 64]  [B, H, N, d]
layer1.attn.context      [16, 12, 128, 64]  [B, H, N, d]
layer1.attn.out          [16, 128, 768]     [B, N, D]
layer1.out               [16, 128, 768]     [B, N, D]
layer2.attn.q            [16, 12, 128, 64]  [B, H, N, d]
layer2.attn.k            [16, 12, 128, 64]  [B, H, N, d]
layer2.attn.v            [16, 12, 128, 64]  [B, H, N, d]
layer2.attn.context      [16, 12, 128, 64]  [B, H, N, d]
layer2.attn.out          [16, 128, 768]     [B, N, D]
layer2.out               [16, 128, 768]     [B, N, D]
final.last_hidden_state  [16, 128, 768]     [B, N, D]
final.pooler             [16, 768]          [B, D]
"""


def test_lesson_01_plain_encoder_trace():
    trace, seen = trace_lesson("01", EXPECTED, keep=("layer0.",), B=16, N=128, layers=3)
    letters = set(trace.dims.values())
    assert len(letters) == len(trace.dims), f"two letters share a size: {trace.dims}"
    heads_split(seen, "layer0.attn")  # [B, N, D] -> [B, H, N, d]: head h is d consecutive columns
    heads_merged(seen, "layer0.attn")  # [B, H, N, d] -> [B, N, D]: head 0's d features first
    seen.probe.check()  # last: the first attention call, recomputed head by head
