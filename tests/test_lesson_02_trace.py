"""Lesson 02, traced: one MultiHeadAttention (D=768, H=12, d=64) on x [B=16, N=128, D].

Q, K and V are [B, H, N, d]: D cut into H heads of d features. The explicit path records the
scores and probabilities [B, H, N, N] (Nq = Nk = N here: no prefix); the fused path
(F.scaled_dot_product_attention) never materialises them, so those two rows are absent. Both
then merge the heads back to [B, N, D]. Every size differs (16, 128, 768, 12, 64), so an axis
in the wrong place shows as a wrong letter, and the numeric check recomputes the call head by
head, so heads split as (d h) instead of (h d) fail too.
Run: `pytest tests/test_lesson_02_trace.py`.
"""
from trace_helpers import check_lesson_trace

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
    check_lesson_trace("02", EXPLICIT, B=16, N=128, D=768, H=12)


def test_lesson_02_fused_attention_trace():
    check_lesson_trace("02", FUSED, B=16, N=128, D=768, H=12, fused=True)
