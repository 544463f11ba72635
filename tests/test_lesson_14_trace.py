"""Lesson 14, traced: seed 003's generation step on the tiny GPT-2 (D=24, H=4, d=6, V=130,
L=3, D_ff=96) with a soft prompt, layer 0 shown, B=5, N=9, P=7 (every letter a different size;
T = P+N = 16, P+1 = 8).

What the trace teaches: with the cache, the new token's query meets T = P+N = 16 cached keys
(prompt rows and real tokens) plus its own. Seed 003's wrapper drops the cache and prepends the
prompt again, so the same token starts a fresh sequence of P+1 rows: the nine real tokens are
not among the keys. If the lesson's code raises, the failure shows how far the trace got; the
first attention call (the prompt step) is also recomputed head by head, so a head-split bug with
the right shapes fails too.

Then by numbers (the soft prompt uses positions="shifted", PEFT's convention): in the prompt
step the P prompt rows sit at positions 0..P-1 and the real tokens at P..P+N-1; the cache
holds the prompt step's keys and values; the new token sits at P+N; and the cached step's logits
equal one forward pass over prompt and all N+1 tokens, while seed 003's cache-dropped step does
not. Run: `pytest tests/test_lesson_14_trace.py`.
"""
import torch

from trace_checks import cache_holds_keys, cached_position, cached_step_equals_recomputation, close, fail, \
    gpt2_positions
from trace_helpers import trace_lesson

WITH_CACHE = """
name                       shape          letters
embeddings.out             [5, 1, 24]     [B, 1, D]
mask.keys                  [5, 17]        [B, T+1]
mask.keep                  [5, 1, 1, 17]  [B, 1, 1, T+1]
layer0.attn.q              [5, 4, 1, 6]   [B, H, 1, d]
layer0.attn.k              [5, 4, 1, 6]   [B, H, 1, d]
layer0.attn.v              [5, 4, 1, 6]   [B, H, 1, d]
layer0.attn.prefix_k       [5, 4, 16, 6]  [B, H, T, d]
layer0.attn.prefix_v       [5, 4, 16, 6]  [B, H, T, d]
layer0.attn.k_with_prefix  [5, 4, 17, 6]  [B, H, T+1, d]
layer0.attn.v_with_prefix  [5, 4, 17, 6]  [B, H, T+1, d]
layer0.attn.context        [5, 4, 1, 6]   [B, H, 1, d]
layer0.attn.out            [5, 1, 24]     [B, 1, D]
layer0.out                 [5, 1, 24]     [B, 1, D]
final.logits               [5, 1, 130]    [B, 1, V]
"""

CACHE_DROPPED = """
name                 shape         letters
shallow.prompt       [5, 7, 24]    [B, P, D]
embeddings.out       [5, 8, 24]    [B, P+1, D]
mask.keys            [5, 8]        [B, P+1]
mask.keep            [5, 1, 8, 8]  [B, 1, P+1, P+1]
layer0.attn.q        [5, 4, 8, 6]  [B, H, P+1, d]
layer0.attn.k        [5, 4, 8, 6]  [B, H, P+1, d]
layer0.attn.v        [5, 4, 8, 6]  [B, H, P+1, d]
layer0.attn.context  [5, 4, 8, 6]  [B, H, P+1, d]
layer0.attn.out      [5, 8, 24]    [B, P+1, D]
layer0.out           [5, 8, 24]    [B, P+1, D]
shallow.slice        [5, 1, 24]    [B, 1, D]
final.logits         [5, 1, 130]   [B, 1, V]
"""


def test_lesson_14_generation_step_with_the_cache():
    _, seen = trace_lesson("14", WITH_CACHE, pick=lambda traces: traces[0], B=5, N=9, P=7)
    model, ids, _, _ = seen.runs[0]
    rows = torch.cat([seen("shallow.prompt"), model.wte.weight[ids]], dim=1)  # [B, P+N, D] before positions
    got = gpt2_positions(model, seen("embeddings.out"), rows)
    if got != list(range(7 + 9)):
        fail(f"under positions='shifted' the prompt step's rows sit at {got}, expected the P=7 prompt rows at 0..6 "
             f"and the tokens at 7..15 (core/transformer.py: Transformer.prompt_positions; models/gpt2.py: "
             f"GPT2Decoder.shallow_rows)")
    cache_holds_keys(seen, "layer0.attn", "k", cached_call=0)
    cached_position(seen, model, want=7 + 9)
    cached_step_equals_recomputation(seen)
    seen.probe.check()  # last: the first attention call, recomputed head by head


def test_lesson_14_generation_step_with_the_cache_dropped():
    _, seen = trace_lesson("14", CACHE_DROPPED, pick=lambda traces: traces[1], B=5, N=9, P=7)
    cached, dropped = seen("final.logits", 1)[:, -1], seen("final.logits", 2)[:, -1]  # [B, V] each
    assert not close(dropped, cached), "seed 003's cache-dropped step should predict something else"
    seen.probe.check()  # last: the first attention call, recomputed head by head
