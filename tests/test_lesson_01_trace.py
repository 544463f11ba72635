"""Lesson 01, traced: a plain BERT-base-shaped encoder (2 of its 12 layers), B=16, N=128.

No prompt yet: every row is [B, N, ...] and P appears nowhere. Compare with lesson 06-08,
where the same model grows P rows or P keys. Run: `pytest tests/test_lesson_01_trace.py`.
"""
from trace_helpers import assert_trace, load_lesson

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
final.last_hidden_state  [16, 128, 768]     [B, N, D]
final.pooler             [16, 768]          [B, D]
"""


def test_lesson_01_plain_encoder_trace():
    lesson = load_lesson("01")
    assert_trace(lesson.trace_example(B=16, N=128, layers=2), EXPECTED)
