"""Lesson 10, traced: one forward pass of a task model (tiny BERT, D=24, L=2, H=4, d=6, with a
K/V prefix and a sentence head), B=3 sentences, N=9 tokens with the last row padded by 3, P=5.

The prefix table [P, L*2*D] = [5, 96] is read once as [L, 2, H, P, d]; every layer extends its
keys and values from N to P+N = 14 while queries stay N; the padding shows up as the keep-mask
[B, 1, 1, P+N] (the prefix columns always kept); the head reads `final.pooler`, the real [CLS].
If the lesson's code raises, the failure shows how far the trace got; after the shapes, the
first attention call is recomputed head by head (prefix and mask included).

Then by numbers: `mask.keys` is [P kept prefix entries | the batch's attention mask], in that
order, and in both layers the context equals what the queries read from [prefix | tokens] under
that mask, computed here from the prefix's own K and V: the padding masks the pad columns, not
prefix ones, and the fused kernel gets the mask. Run: `pytest tests/test_lesson_10_trace.py`.
"""
import torch

from trace_checks import key_mask_prefix_first, prefix_read
from trace_helpers import load_lesson, trace_lesson

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
    _, seen = trace_lesson("10", EXPECTED, B=3, N=9, P=5, layers=2)
    mask = seen.runs[0][2]  # [B, N]: the last row's 3 final tokens padded
    key_mask_prefix_first(seen, mask, P=5)
    keep = torch.cat([torch.ones(3, 5, dtype=torch.bool), mask.bool()], dim=1)[:, None, None, :]  # [B, 1, 1, P+N]
    for i in range(2):
        prefix_read(seen, f"layer{i}.attn", keep=keep,
                    where="core/attention.py: MultiHeadAttention.forward hands the keep-mask to the fused kernel")
    seen.probe.check()  # last: the first attention call, recomputed head by head


def test_lesson_10_without_padding_no_keep_mask_is_built():
    """Nothing masked (no padding, prefix visible): the fused path runs with no mask at all."""
    tr = load_lesson("10").trace_example(B=3, N=9, P=5, layers=2, pad=0)
    assert "mask.keep" not in tr.names() and tr.shapes()["mask.keys"] == (3, 14)
