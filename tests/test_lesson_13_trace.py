"""Lesson 13, traced: pitfall 4 from the inside. Tiny BERT (D=24, H=4, d=6, L=3, V=120,
D_ff=40), layer 0 shown, B=8, N=7, P=5 (every letter a different size), no padding, a prefix of
zeros: first visible, then masked.

What the trace teaches: a zero prefix masks nothing, so no keep-mask is built and the fused
attention runs without one: the zeros are scored like any key. Masking the prefix adds exactly
one row, `mask.keep` [B, 1, 1, P+N]: that row is the difference between "zero" and "off". If
the lesson's code raises, the failure shows how far the trace got; the first attention call is
also recomputed head by head, so a head-split bug with the right shapes fails too.
Run: `pytest tests/test_lesson_13_trace.py`.
"""
from trace_helpers import check_lesson_trace

ZERO = """
name                       shape            letters
embeddings.out             [8, 7, 24]       [B, N, D]
prefix.table               [5, 144]         [P, L*2*D]
prefix.kv                  [3, 2, 4, 5, 6]  [L, 2, H, P, d]
mask.keys                  [8, 12]          [B, P+N]
layer0.attn.q              [8, 4, 7, 6]     [B, H, N, d]
layer0.attn.k              [8, 4, 7, 6]     [B, H, N, d]
layer0.attn.v              [8, 4, 7, 6]     [B, H, N, d]
layer0.attn.prefix_k       [8, 4, 5, 6]     [B, H, P, d]
layer0.attn.prefix_v       [8, 4, 5, 6]     [B, H, P, d]
layer0.attn.k_with_prefix  [8, 4, 12, 6]    [B, H, P+N, d]
layer0.attn.v_with_prefix  [8, 4, 12, 6]    [B, H, P+N, d]
layer0.attn.context        [8, 4, 7, 6]     [B, H, N, d]
layer0.attn.out            [8, 7, 24]       [B, N, D]
layer0.out                 [8, 7, 24]       [B, N, D]
final.last_hidden_state    [8, 7, 24]       [B, N, D]
final.pooler               [8, 24]          [B, D]
"""

MASKED_EXTRA_ROW = ("mask.keep", (8, 1, 1, 12), "[B, 1, 1, P+N]")


def test_lesson_13_zero_prefix_trace():
    check_lesson_trace("13", ZERO, pick=lambda traces: traces[0], B=8, N=7, P=5, layers=3)


def test_lesson_13_masking_adds_exactly_the_keep_mask_row():
    name, shape, letters = MASKED_EXTRA_ROW
    rows = ZERO.strip().splitlines()
    at = next(i for i, r in enumerate(rows) if r.startswith("mask.keys")) + 1
    expected = "\n".join(rows[:at] + [f"{name}  [{', '.join(map(str, shape))}]  {letters}"] + rows[at:])
    check_lesson_trace("13", expected, pick=lambda traces: traces[1], B=8, N=7, P=5, layers=3)
