"""Lesson 02, traced: one MultiHeadAttention (D=768, H=12, d=64) on x [B=16, N=128, D].

The explicit path records the scores and probabilities [B, H, N, N]; the fused path
(F.scaled_dot_product_attention) never materialises them, so those two rows are absent.
Run: `pytest tests/test_lesson_02_trace.py`.
"""
from trace_helpers import assert_trace, load_lesson

EXPLICIT = """
name          shape               letters
attn.q        [16, 12, 128, 64]   [B, H, N, d]
attn.k        [16, 12, 128, 64]   [B, H, N, d]
attn.v        [16, 12, 128, 64]   [B, H, N, d]
attn.scores   [16, 12, 128, 128]  [B, H, N, N]
attn.probs    [16, 12, 128, 128]  [B, H, N, N]
attn.context  [16, 12, 128, 64]   [B, H, N, d]
attn.out      [16, 128, 768]      [B, N, D]
"""

FUSED = """
name          shape               letters
attn.q        [16, 12, 128, 64]   [B, H, N, d]
attn.k        [16, 12, 128, 64]   [B, H, N, d]
attn.v        [16, 12, 128, 64]   [B, H, N, d]
attn.context  [16, 12, 128, 64]   [B, H, N, d]
attn.out      [16, 128, 768]      [B, N, D]
"""


def test_lesson_02_explicit_attention_trace():
    lesson = load_lesson("02")
    assert_trace(lesson.trace_example(B=16, N=128, D=768, H=12), EXPLICIT)


def test_lesson_02_fused_attention_trace():
    lesson = load_lesson("02")
    assert_trace(lesson.trace_example(B=16, N=128, D=768, H=12, fused=True), FUSED)
