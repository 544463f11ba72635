"""Lesson 10, traced: one forward pass of a task model (tiny BERT, D=24, L=2, H=4, d=6, with a
K/V prefix and a sentence head), B=3 sentences, N=9 tokens with the last row padded by 3, P=5.

The prefix table [P, L*2*D] = [5, 96] is read once as [L, 2, H, P, d]; every layer extends its
keys and values from N to P+N = 14 while queries stay N; the padding shows up as the keep-mask
[B, 1, 1, P+N] (the prefix columns always kept); the head reads `final.pooler`, the real [CLS].
If the lesson's code raises, the failure shows how far the trace got; after the shapes, the
first attention call is recomputed head by head (prefix and mask included).
Run: `pytest tests/test_lesson_10_trace.py`.
"""
from trace_helpers import check_lesson_trace, load_lesson

EXPECTED = """
name                       shape            letters
embeddings.out             [3, 9, 24]       [B, N, D]
prefix.table               [5, 96]          [P, L*2*D]
prefix.kv                  [2, 2, 4, 5, 6]  [L, 2, H, P, d]
mask.keys                  [3, 14]          [B, P+N]
mask.keep                  [3, 1, 1, 14]    [B, 1, 1, P+N]
layer0.attn.q              [3, 4, 9, 6]     [B, H, N, d]
layer0.attn.k              [3, 4, 9, 6]     [B, H, N, d]
layer0.attn.v              [3, 4, 9, 6]     [B, H, N, d]
layer0.attn.prefix_k       [3, 4, 5, 6]     [B, H, P, d]
layer0.attn.prefix_v       [3, 4, 5, 6]     [B, H, P, d]
layer0.attn.k_with_prefix  [3, 4, 14, 6]    [B, H, P+N, d]
layer0.attn.v_with_prefix  [3, 4, 14, 6]    [B, H, P+N, d]
layer0.attn.context        [3, 4, 9, 6]     [B, H, N, d]
layer0.attn.out            [3, 9, 24]       [B, N, D]
layer0.out                 [3, 9, 24]       [B, N, D]
layer1.attn.q              [3, 4, 9, 6]     [B, H, N, d]
layer1.attn.k              [3, 4, 9, 6]     [B, H, N, d]
layer1.attn.v              [3, 4, 9, 6]     [B, H, N, d]
layer1.attn.prefix_k       [3, 4, 5, 6]     [B, H, P, d]
layer1.attn.prefix_v       [3, 4, 5, 6]     [B, H, P, d]
layer1.attn.k_with_prefix  [3, 4, 14, 6]    [B, H, P+N, d]
layer1.attn.v_with_prefix  [3, 4, 14, 6]    [B, H, P+N, d]
layer1.attn.context        [3, 4, 9, 6]     [B, H, N, d]
layer1.attn.out            [3, 9, 24]       [B, N, D]
layer1.out                 [3, 9, 24]       [B, N, D]
final.last_hidden_state    [3, 9, 24]       [B, N, D]
final.pooler               [3, 24]          [B, D]
"""


def test_lesson_10_task_model_trace():
    check_lesson_trace("10", EXPECTED, B=3, N=9, P=5, layers=2)


def test_lesson_10_without_padding_no_keep_mask_is_built():
    """Nothing masked (no padding, prefix visible): the fused path runs with no mask at all."""
    tr = load_lesson("10").trace_example(B=3, N=9, P=5, layers=2, pad=0)
    assert "mask.keep" not in tr.names() and tr.shapes()["mask.keys"] == (3, 14)
