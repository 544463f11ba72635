"""Lesson 13, traced: pitfall 4 from the inside. Tiny BERT (D=24, H=4, d=6, L=3), layer 0
shown, B=2, N=7, P=5, no padding, a prefix of zeros: first visible, then masked.

A zero prefix masks nothing, so no keep-mask is built and the fused attention runs without
one: the zeros are scored like any key. Masking the prefix adds exactly one row,
`mask.keep` [B, 1, 1, P+N]: that row is the difference between "zero" and "off".
Run: `pytest tests/test_lesson_13_trace.py`.
"""
from trace_helpers import assert_trace, load_lesson

ZERO = """
name                       shape            letters
embeddings.out             [2, 7, 24]       [B, N, D]
prefix.table               [5, 144]         [P, L*2*D]
prefix.kv                  [3, 2, 4, 5, 6]  [L, 2, H, P, d]
mask.keys                  [2, 12]          [B, P+N]
layer0.attn.q              [2, 4, 7, 6]     [B, H, N, d]
layer0.attn.k              [2, 4, 7, 6]     [B, H, N, d]
layer0.attn.v              [2, 4, 7, 6]     [B, H, N, d]
layer0.attn.prefix_k       [2, 4, 5, 6]     [B, H, P, d]
layer0.attn.prefix_v       [2, 4, 5, 6]     [B, H, P, d]
layer0.attn.k_with_prefix  [2, 4, 12, 6]    [B, H, P+N, d]
layer0.attn.v_with_prefix  [2, 4, 12, 6]    [B, H, P+N, d]
layer0.attn.context        [2, 4, 7, 6]     [B, H, N, d]
layer0.attn.out            [2, 7, 24]       [B, N, D]
layer0.out                 [2, 7, 24]       [B, N, D]
final.last_hidden_state    [2, 7, 24]       [B, N, D]
final.pooler               [2, 24]          [B, D]
"""

MASKED_EXTRA_ROW = ("mask.keep", (2, 1, 1, 12), "[B, 1, 1, P+N]")


def test_lesson_13_zero_prefix_trace():
    zero, _ = load_lesson("13").trace_example(B=2, N=7, P=5, layers=3)
    assert_trace(zero, ZERO)


def test_lesson_13_masking_adds_exactly_the_keep_mask_row():
    _, masked = load_lesson("13").trace_example(B=2, N=7, P=5, layers=3)
    name, shape, letters = MASKED_EXTRA_ROW
    rows = ZERO.strip().splitlines()
    at = next(i for i, r in enumerate(rows) if r.startswith("mask.keys")) + 1
    expected = "\n".join(rows[:at] + [f"{name}  [{', '.join(map(str, shape))}]  {letters}"] + rows[at:])
    assert_trace(masked, expected)
