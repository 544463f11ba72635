"""Lesson 12, traced: generation with a K/V prefix on the tiny GPT-2 (D=24, H=4, d=6, V=130,
L=3, D_ff=96), layer 0 shown, B=8, N=7, P=5 (every letter a different size).

What the trace teaches: on a decoder the K/V prefix and the KV cache are one thing. The prompt
step reads the prefix table and extends keys and values to P+N = 12 under the causal keep-mask
[B, 1, N, P+N]. The cached step feeds one token: the cache (prefix included, T = P+N = 12
entries) arrives where the prefix did, as `prefix_k`/`prefix_v` [B, H, T, d], and the prefix
table is not read again. If the lesson's code raises, the failure shows how far the trace got;
the prompt step's first attention call is also recomputed head by head, so a head-split bug
with the right shapes fails too.

Then by numbers. Prompt step: the keep-mask lets query i see the P prefix keys and tokens
0..i (the causal triangle shifted by P, not P ignored); `k_with_prefix` is [prefix_k | k], the
prefix in front; the context is what the queries read from [prefix | tokens] under that mask.
Cached step: the cache is the prompt step's `k_with_prefix`/`v_with_prefix` unchanged, the new
token sits at position N (positions count real tokens, not the P prefix entries of the cache),
and its logits equal one forward pass over all N+1 tokens with the prefix and no cache.
Run: `pytest tests/test_lesson_12_trace.py`.
"""
import torch

from trace_checks import cache_holds_keys, cached_position, cached_step_equals_recomputation, causal_keep, keep_is, \
    prefix_in_front, prefix_read
from trace_helpers import trace_lesson

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
    _, seen = trace_lesson("12", PROMPT_STEP, pick=lambda traces: traces[0], B=8, N=7, P=5, layers=3)
    keep = causal_keep(torch.ones(8, 12, dtype=torch.bool), P=5)  # [B, 1, N, P+N]
    keep_is(seen, keep, "query i to see the P=5 prefix keys and tokens 0..i", "core/masks.py: build_keep")
    prefix_in_front(seen, "layer0.attn")
    prefix_read(seen, "layer0.attn", keep=keep)
    seen.probe.check()  # last: the first attention call, recomputed head by head


def test_lesson_12_cached_step_trace():
    _, seen = trace_lesson("12", CACHED_STEP, pick=lambda traces: traces[1], B=8, N=7, P=5, layers=3)
    cache_holds_keys(seen, "layer0.attn", "k_with_prefix", cached_call=1)
    cached_position(seen, seen.runs[0][0], want=7)  # real tokens at 0..N-1 (positions="real"), then N
    cached_step_equals_recomputation(seen)
    seen.probe.check()  # last: the first attention call, recomputed head by head
