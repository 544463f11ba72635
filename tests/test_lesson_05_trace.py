"""Lesson 05, traced: the tiny GPT-2 (D=24, H=4, d=6, V=130, L=3; layer 0 shown), B=5, N=7.

First a prompt step over N=7 tokens: the causal keep-mask is [B, 1, N, N] (every query its own
row, each seeing the tokens up to itself), and the call returns a KV cache. Then one cached step
with a single new token: the cache of T=7 keys enters attention exactly where a K/V prefix would
(`prefix_k`, `prefix_v` [B, H, T, d]), and the new token's one query row attends to T+1 keys.
If the lesson's code raises, the failure shows how far the trace got; after the shapes, layer 0's
attention is recomputed head by head (heads split as `(d h)` would fail there).

Then by numbers: the prompt step's keep-mask is the causal triangle (query i sees tokens 0..i);
the cached step's `prefix_k`/`prefix_v` are exactly the prompt step's keys and values; the new
token sits at position N (its embedding row is wte[token] + wpe[N]); and the cached step's
logits equal one forward pass over all N+1 tokens without a cache.
Run: `pytest tests/test_lesson_05_trace.py`.
"""
import torch

from trace_checks import cache_holds_keys, cached_position, cached_step_equals_recomputation, causal_keep, keep_is
from trace_helpers import trace_lesson

PROMPT_STEP = """
name                 shape         letters
embeddings.out       [5, 7, 24]    [B, N, D]
mask.keys            [5, 7]        [B, N]
mask.keep            [5, 1, 7, 7]  [B, 1, N, N]
layer0.attn.q        [5, 4, 7, 6]  [B, H, N, d]
layer0.attn.k        [5, 4, 7, 6]  [B, H, N, d]
layer0.attn.v        [5, 4, 7, 6]  [B, H, N, d]
layer0.attn.scores   [5, 4, 7, 7]  [B, H, N, N]
layer0.attn.probs    [5, 4, 7, 7]  [B, H, N, N]
layer0.attn.context  [5, 4, 7, 6]  [B, H, N, d]
layer0.attn.out      [5, 7, 24]    [B, N, D]
layer0.out           [5, 7, 24]    [B, N, D]
final.logits         [5, 7, 130]   [B, N, V]
"""

CACHED_STEP = """
name                       shape         letters
embeddings.out             [5, 1, 24]    [B, 1, D]
mask.keys                  [5, 8]        [B, T+1]
mask.keep                  [5, 1, 1, 8]  [B, 1, 1, T+1]
layer0.attn.q              [5, 4, 1, 6]  [B, H, 1, d]
layer0.attn.k              [5, 4, 1, 6]  [B, H, 1, d]
layer0.attn.v              [5, 4, 1, 6]  [B, H, 1, d]
layer0.attn.prefix_k       [5, 4, 7, 6]  [B, H, T, d]
layer0.attn.prefix_v       [5, 4, 7, 6]  [B, H, T, d]
layer0.attn.k_with_prefix  [5, 4, 8, 6]  [B, H, T+1, d]
layer0.attn.v_with_prefix  [5, 4, 8, 6]  [B, H, T+1, d]
layer0.attn.scores         [5, 4, 1, 8]  [B, H, 1, T+1]
layer0.attn.probs          [5, 4, 1, 8]  [B, H, 1, T+1]
layer0.attn.context        [5, 4, 1, 6]  [B, H, 1, d]
layer0.attn.out            [5, 1, 24]    [B, 1, D]
layer0.out                 [5, 1, 24]    [B, 1, D]
final.logits               [5, 1, 130]   [B, 1, V]
"""


def test_lesson_05_prompt_step_trace():
    _, seen = trace_lesson("05", PROMPT_STEP, pick=lambda traces: traces[0], B=5, N=7, layers=3)
    keep_is(seen, causal_keep(torch.ones(5, 7, dtype=torch.bool), P=0), "query i to see tokens 0..i",
            "core/masks.py: build_keep")
    seen.probe.check()  # last: the first attention call, recomputed head by head


def test_lesson_05_cached_step_trace():
    _, seen = trace_lesson("05", CACHED_STEP, pick=lambda traces: traces[1], B=5, N=7, layers=3)
    cache_holds_keys(seen, "layer0.attn", "k", cached_call=0)
    cached_position(seen, seen.runs[0][0], want=7)  # tokens 0..N-1, then N
    cached_step_equals_recomputation(seen)
    seen.probe.check()  # last: the first attention call, recomputed head by head
