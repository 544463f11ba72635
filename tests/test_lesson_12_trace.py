"""Lesson 12, traced: generation with a K/V prefix on the tiny GPT-2 (D=24, H=4, d=6, V=130,
L=3), layer 0 shown, B=2, N=7, P=5.

The prompt step reads the prefix table and extends keys and values to P+N = 12 under the
causal keep-mask [B, 1, N, P+N]. The cached step feeds one token: the cache (prefix included,
T = P+N = 12 entries) arrives where the prefix did, as `prefix_k`/`prefix_v` [B, H, T, d], and
the prefix table is not read again. Run: `pytest tests/test_lesson_12_trace.py`.
"""
from trace_helpers import assert_trace, load_lesson

PROMPT_STEP = """
name                       shape            letters
embeddings.out             [2, 7, 24]       [B, N, D]
prefix.table               [5, 144]         [P, L*2*D]
prefix.kv                  [3, 2, 4, 5, 6]  [L, 2, H, P, d]
mask.keys                  [2, 12]          [B, P+N]
mask.keep                  [2, 1, 7, 12]    [B, 1, N, P+N]
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
final.logits               [2, 7, 130]      [B, N, V]
"""

CACHED_STEP = """
name                       shape          letters
embeddings.out             [2, 1, 24]     [B, 1, D]
mask.keys                  [2, 13]        [B, T+1]
mask.keep                  [2, 1, 1, 13]  [B, 1, 1, T+1]
layer0.attn.q              [2, 4, 1, 6]   [B, H, 1, d]
layer0.attn.k              [2, 4, 1, 6]   [B, H, 1, d]
layer0.attn.v              [2, 4, 1, 6]   [B, H, 1, d]
layer0.attn.prefix_k       [2, 4, 12, 6]  [B, H, T, d]
layer0.attn.prefix_v       [2, 4, 12, 6]  [B, H, T, d]
layer0.attn.k_with_prefix  [2, 4, 13, 6]  [B, H, T+1, d]
layer0.attn.v_with_prefix  [2, 4, 13, 6]  [B, H, T+1, d]
layer0.attn.context        [2, 4, 1, 6]   [B, H, 1, d]
layer0.attn.out            [2, 1, 24]     [B, 1, D]
layer0.out                 [2, 1, 24]     [B, 1, D]
final.logits               [2, 1, 130]    [B, 1, V]
"""


def test_lesson_12_prompt_step_trace():
    prompt_step, _ = load_lesson("12").trace_example(B=2, N=7, P=5, layers=3)
    assert_trace(prompt_step, PROMPT_STEP)


def test_lesson_12_cached_step_trace():
    _, cached_step = load_lesson("12").trace_example(B=2, N=7, P=5, layers=3)
    assert_trace(cached_step, CACHED_STEP)
