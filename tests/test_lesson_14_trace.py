"""Lesson 14, traced: seed 003's generation step on the tiny GPT-2 (D=24, H=4, d=6, V=130,
L=3) with a soft prompt, layer 0 shown, B=2, N=9, P=7.

With the cache, the new token's query meets T = P+N = 16 cached keys (prompt rows and real
tokens) plus its own. Seed 003's wrapper drops the cache and prepends the prompt again, so the
same token starts a fresh sequence of P+1 rows: the nine real tokens are not among the keys.
Run: `pytest tests/test_lesson_14_trace.py`.
"""
from trace_helpers import assert_trace, load_lesson

WITH_CACHE = """
name                       shape          letters
embeddings.out             [2, 1, 24]     [B, 1, D]
mask.keys                  [2, 17]        [B, T+1]
mask.keep                  [2, 1, 1, 17]  [B, 1, 1, T+1]
layer0.attn.q              [2, 4, 1, 6]   [B, H, 1, d]
layer0.attn.k              [2, 4, 1, 6]   [B, H, 1, d]
layer0.attn.v              [2, 4, 1, 6]   [B, H, 1, d]
layer0.attn.prefix_k       [2, 4, 16, 6]  [B, H, T, d]
layer0.attn.prefix_v       [2, 4, 16, 6]  [B, H, T, d]
layer0.attn.k_with_prefix  [2, 4, 17, 6]  [B, H, T+1, d]
layer0.attn.v_with_prefix  [2, 4, 17, 6]  [B, H, T+1, d]
layer0.attn.context        [2, 4, 1, 6]   [B, H, 1, d]
layer0.attn.out            [2, 1, 24]     [B, 1, D]
layer0.out                 [2, 1, 24]     [B, 1, D]
final.logits               [2, 1, 130]    [B, 1, V]
"""

CACHE_DROPPED = """
name                 shape         letters
shallow.prompt       [2, 7, 24]    [B, P, D]
embeddings.out       [2, 8, 24]    [B, P+1, D]
mask.keys            [2, 8]        [B, P+1]
mask.keep            [2, 1, 8, 8]  [B, 1, P+1, P+1]
layer0.attn.q        [2, 4, 8, 6]  [B, H, P+1, d]
layer0.attn.k        [2, 4, 8, 6]  [B, H, P+1, d]
layer0.attn.v        [2, 4, 8, 6]  [B, H, P+1, d]
layer0.attn.context  [2, 4, 8, 6]  [B, H, P+1, d]
layer0.attn.out      [2, 8, 24]    [B, P+1, D]
layer0.out           [2, 8, 24]    [B, P+1, D]
shallow.slice        [2, 1, 24]    [B, 1, D]
final.logits         [2, 1, 130]   [B, 1, V]
"""


def test_lesson_14_generation_step_with_the_cache():
    cached, _ = load_lesson("14").trace_example(B=2, N=9, P=7)
    assert_trace(cached, WITH_CACHE)


def test_lesson_14_generation_step_with_the_cache_dropped():
    _, dropped = load_lesson("14").trace_example(B=2, N=9, P=7)
    assert_trace(dropped, CACHE_DROPPED)
