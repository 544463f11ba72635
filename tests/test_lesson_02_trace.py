"""Lesson 02, traced: one MultiHeadAttention (D=768, H=12, d=64) on x [B=16, N=128, D].

Q, K and V are [B, H, N, d]: D cut into H heads of d features. The explicit path records the
scores and probabilities [B, H, N, N] (Nq = Nk = N here: no prefix); the fused path
(F.scaled_dot_product_attention) never materialises them, so those two rows are absent. Both
then merge the heads back to [B, N, D]. Every size differs (16, 128, 768, 12, 64), so an axis
in the wrong place shows as a wrong letter, and the numeric check recomputes the call head by
head, so heads split as (d h) instead of (h d) fail too.

Then the formula, step by step, from the recorded tensors: scores = q k^T / sqrt(d) (not / d),
probs = softmax over the keys (each query's row sums to 1; over the queries it would not),
context = probs v; and the fused path's context equals the same formula.
Run: `pytest tests/test_lesson_02_trace.py`.
"""
from trace_checks import context_is_probs_times_v, fused_equals_formula, heads_split, probs_softmax_over_keys, \
    scores_scaled
from trace_helpers import trace_lesson

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
    _, seen = trace_lesson("02", EXPLICIT, B=16, N=128, D=768, H=12)
    heads_split(seen, "attn")
    scores_scaled(seen, "attn")  # q k^T / sqrt(d)
    probs_softmax_over_keys(seen, "attn")  # over the last axis
    context_is_probs_times_v(seen, "attn")
    seen.probe.check()  # last: the first attention call, recomputed head by head


def test_lesson_02_fused_attention_trace():
    _, seen = trace_lesson("02", FUSED, B=16, N=128, D=768, H=12, fused=True)
    fused_equals_formula(seen, "attn")
    seen.probe.check()  # last: the first attention call, recomputed head by head
