"""Lesson 12, traced: generation with a K/V prefix on the tiny GPT-2 (D=24, H=4, d=6, V=130,
L=3, D_ff=96), layer 0 shown, B=8, N=7, P=5 (every letter a different size).

What the trace teaches: on a decoder the K/V prefix and the KV cache are one thing. The prompt
step reads the prefix table and extends keys and values to P+N = 12 under the causal keep-mask
[B, 1, N, P+N]. The cached step feeds one token: the cache (prefix included, T = P+N = 12
entries) arrives where the prefix did, as `prefix_k`/`prefix_v` [B, H, T, d], and the prefix
table is not read again. If the lesson's code raises, the failure shows how far the trace got;
the prompt step's first attention call is also recomputed head by head, so a head-split bug
with the right shapes fails too. Run: `pytest tests/test_lesson_12_trace.py`.
"""
from trace_helpers import check_lesson_trace

PROMPT_STEP = """
name                       shape            letters
embeddings.out             [8, 7, 24]       [B, N, D]
prefix.table               [5, 144]         [P, L*2*D]
prefix.kv                  [3, 2, 4, 5, 6]  [L, 2, H, P, d]
mask.keys                  [8, 12]          [B, P+N]
mask.keep                  [8, 1, 7, 12]    [B, 1, N, P+N]
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
final.logits               [8, 7, 130]      [B, N, V]
"""

CACHED_STEP = """
name                       shape          letters
embeddings.out             [8, 1, 24]     [B, 1, D]
mask.keys                  [8, 13]        [B, T+1]
mask.keep                  [8, 1, 1, 13]  [B, 1, 1, T+1]
layer0.attn.q              [8, 4, 1, 6]   [B, H, 1, d]
layer0.attn.k              [8, 4, 1, 6]   [B, H, 1, d]
layer0.attn.v              [8, 4, 1, 6]   [B, H, 1, d]
layer0.attn.prefix_k       [8, 4, 12, 6]  [B, H, T, d]
layer0.attn.prefix_v       [8, 4, 12, 6]  [B, H, T, d]
layer0.attn.k_with_prefix  [8, 4, 13, 6]  [B, H, T+1, d]
layer0.attn.v_with_prefix  [8, 4, 13, 6]  [B, H, T+1, d]
layer0.attn.context        [8, 4, 1, 6]   [B, H, 1, d]
layer0.attn.out            [8, 1, 24]     [B, 1, D]
layer0.out                 [8, 1, 24]     [B, 1, D]
final.logits               [8, 1, 130]    [B, 1, V]
"""


def test_lesson_12_prompt_step_trace():
    check_lesson_trace("12", PROMPT_STEP, pick=lambda traces: traces[0], B=8, N=7, P=5, layers=3)


def test_lesson_12_cached_step_trace():
    check_lesson_trace("12", CACHED_STEP, pick=lambda traces: traces[1], B=8, N=7, P=5, layers=3)
