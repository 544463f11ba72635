"""Lesson 05, traced: the tiny GPT-2 (D=24, H=4, d=6, V=130; 2 layers), B=2.

First a prompt step over N=7 tokens: the causal keep-mask is [B, 1, N, N] (every query its own
row), and the call returns a KV cache. Then one cached step with a single new token: the cache
of T=7 keys enters attention exactly where a K/V prefix would (`prefix_k`, `prefix_v`), and the
new token's query attends to T+1 keys. Run: `pytest tests/test_lesson_05_trace.py`.
"""
from trace_helpers import assert_trace, load_lesson

PROMPT_STEP = """
name                 shape         letters
embeddings.out       [2, 7, 24]    [B, N, D]
mask.keys            [2, 7]        [B, N]
mask.keep            [2, 1, 7, 7]  [B, 1, N, N]
layer0.attn.q        [2, 4, 7, 6]  [B, H, N, d]
layer0.attn.k        [2, 4, 7, 6]  [B, H, N, d]
layer0.attn.v        [2, 4, 7, 6]  [B, H, N, d]
layer0.attn.scores   [2, 4, 7, 7]  [B, H, N, N]
layer0.attn.probs    [2, 4, 7, 7]  [B, H, N, N]
layer0.attn.context  [2, 4, 7, 6]  [B, H, N, d]
layer0.attn.out      [2, 7, 24]    [B, N, D]
layer0.out           [2, 7, 24]    [B, N, D]
layer1.attn.q        [2, 4, 7, 6]  [B, H, N, d]
layer1.attn.k        [2, 4, 7, 6]  [B, H, N, d]
layer1.attn.v        [2, 4, 7, 6]  [B, H, N, d]
layer1.attn.scores   [2, 4, 7, 7]  [B, H, N, N]
layer1.attn.probs    [2, 4, 7, 7]  [B, H, N, N]
layer1.attn.context  [2, 4, 7, 6]  [B, H, N, d]
layer1.attn.out      [2, 7, 24]    [B, N, D]
layer1.out           [2, 7, 24]    [B, N, D]
final.logits         [2, 7, 130]   [B, N, V]
"""

CACHED_STEP = """
name                       shape         letters
embeddings.out             [2, 1, 24]    [B, 1, D]
mask.keys                  [2, 8]        [B, T+1]
mask.keep                  [2, 1, 1, 8]  [B, 1, 1, T+1]
layer0.attn.q              [2, 4, 1, 6]  [B, H, 1, d]
layer0.attn.k              [2, 4, 1, 6]  [B, H, 1, d]
layer0.attn.v              [2, 4, 1, 6]  [B, H, 1, d]
layer0.attn.prefix_k       [2, 4, 7, 6]  [B, H, T, d]
layer0.attn.prefix_v       [2, 4, 7, 6]  [B, H, T, d]
layer0.attn.k_with_prefix  [2, 4, 8, 6]  [B, H, T+1, d]
layer0.attn.v_with_prefix  [2, 4, 8, 6]  [B, H, T+1, d]
layer0.attn.scores         [2, 4, 1, 8]  [B, H, 1, T+1]
layer0.attn.probs          [2, 4, 1, 8]  [B, H, 1, T+1]
layer0.attn.context        [2, 4, 1, 6]  [B, H, 1, d]
layer0.attn.out            [2, 1, 24]    [B, 1, D]
layer0.out                 [2, 1, 24]    [B, 1, D]
layer1.attn.q              [2, 4, 1, 6]  [B, H, 1, d]
layer1.attn.k              [2, 4, 1, 6]  [B, H, 1, d]
layer1.attn.v              [2, 4, 1, 6]  [B, H, 1, d]
layer1.attn.prefix_k       [2, 4, 7, 6]  [B, H, T, d]
layer1.attn.prefix_v       [2, 4, 7, 6]  [B, H, T, d]
layer1.attn.k_with_prefix  [2, 4, 8, 6]  [B, H, T+1, d]
layer1.attn.v_with_prefix  [2, 4, 8, 6]  [B, H, T+1, d]
layer1.attn.scores         [2, 4, 1, 8]  [B, H, 1, T+1]
layer1.attn.probs          [2, 4, 1, 8]  [B, H, 1, T+1]
layer1.attn.context        [2, 4, 1, 6]  [B, H, 1, d]
layer1.attn.out            [2, 1, 24]    [B, 1, D]
layer1.out                 [2, 1, 24]    [B, 1, D]
final.logits               [2, 1, 130]   [B, 1, V]
"""


def test_lesson_05_prompt_step_trace():
    prompt_step, _ = load_lesson("05").trace_example(B=2, N=7, layers=2)
    assert_trace(prompt_step, PROMPT_STEP)


def test_lesson_05_cached_step_trace():
    _, cached_step = load_lesson("05").trace_example(B=2, N=7, layers=2)
    assert_trace(cached_step, CACHED_STEP)
