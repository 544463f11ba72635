"""Lesson 15, traced: deep prompts on the LLaMA-style decoder (llama-tiny: D=40, L=3, H=4
query heads, H_kv=2 key/value heads, d=10, V=140), layer 0 shown, B=6, N=7, P=5.

Both deep styles on grouped K/V heads. The deep prompt's P rows join the N real rows, so Q has
P+N rows and K/V have H_kv heads of P+N rows. The K/V prefix keeps Q at N rows and extends the
H_kv-headed keys and values by P; its table is [P, L*2*H_kv*d] = [5, 120], a quarter of
[P, L*2*D] here. Before scoring, the explicit path widens K and V from H_kv to H heads
(`k_repeated`).

Then by numbers: `k_repeated` head h is K/V head h // (H/H_kv), transformers' pairing (a
`repeat` instead of `repeat_interleave` keeps the shape and pairs them wrong); the rows' positions
are where the lesson says (K/V prefix: real tokens at 0..N-1; deep prompt: the prompt rows at
-P..-1, just before the text, and the tokens at 0..N-1), and Q and K are the projections turned
by RoPE at those positions, RoPE written out here; the K/V prefix sits in front of the keys under
the causal mask shifted by P, and the deep prompt's slice keeps rows P..P+N-1.
Run: `pytest tests/test_lesson_15_trace.py`.
"""
import torch

from trace_checks import causal_keep, keep_is, kv_heads_paired, prefix_in_front, rotary_positions, \
    slice_keeps_real_rows
from trace_helpers import trace_lesson

DEEP = """
name                    shape           letters
embeddings.out          [6, 7, 40]      [B, N, D]
deep.prompts            [3, 5, 40]      [L, P, D]
mask.keys               [6, 12]         [B, P+N]
mask.keep               [6, 1, 12, 12]  [B, 1, P+N, P+N]
layer0.prompt           [6, 5, 40]      [B, P, D]
layer0.inject           [6, 12, 40]     [B, P+N, D]
layer0.attn.q           [6, 4, 12, 10]  [B, H, P+N, d]
layer0.attn.k           [6, 2, 12, 10]  [B, H_kv, P+N, d]
layer0.attn.v           [6, 2, 12, 10]  [B, H_kv, P+N, d]
layer0.attn.k_repeated  [6, 4, 12, 10]  [B, H, P+N, d]
layer0.attn.v_repeated  [6, 4, 12, 10]  [B, H, P+N, d]
layer0.attn.scores      [6, 4, 12, 12]  [B, H, P+N, P+N]
layer0.attn.probs       [6, 4, 12, 12]  [B, H, P+N, P+N]
layer0.attn.context     [6, 4, 12, 10]  [B, H, P+N, d]
layer0.attn.out         [6, 12, 40]     [B, P+N, D]
layer0.out              [6, 12, 40]     [B, P+N, D]
layer0.slice            [6, 7, 40]      [B, N, D]
final.logits            [6, 7, 140]     [B, N, V]
"""

PREFIX = """
name                       shape             letters
embeddings.out             [6, 7, 40]        [B, N, D]
prefix.table               [5, 120]          [P, L*2*H_kv*d]
prefix.kv                  [3, 2, 2, 5, 10]  [L, 2, H_kv, P, d]
mask.keys                  [6, 12]           [B, P+N]
mask.keep                  [6, 1, 7, 12]     [B, 1, N, P+N]
layer0.attn.q              [6, 4, 7, 10]     [B, H, N, d]
layer0.attn.k              [6, 2, 7, 10]     [B, H_kv, N, d]
layer0.attn.v              [6, 2, 7, 10]     [B, H_kv, N, d]
layer0.attn.prefix_k       [6, 2, 5, 10]     [B, H_kv, P, d]
layer0.attn.prefix_v       [6, 2, 5, 10]     [B, H_kv, P, d]
layer0.attn.k_with_prefix  [6, 2, 12, 10]    [B, H_kv, P+N, d]
layer0.attn.v_with_prefix  [6, 2, 12, 10]    [B, H_kv, P+N, d]
layer0.attn.k_repeated     [6, 4, 12, 10]    [B, H, P+N, d]
layer0.attn.v_repeated     [6, 4, 12, 10]    [B, H, P+N, d]
layer0.attn.scores         [6, 4, 7, 12]     [B, H, N, P+N]
layer0.attn.probs          [6, 4, 7, 12]     [B, H, N, P+N]
layer0.attn.context        [6, 4, 7, 10]     [B, H, N, d]
layer0.attn.out            [6, 7, 40]        [B, N, D]
layer0.out                 [6, 7, 40]        [B, N, D]
final.logits               [6, 7, 140]       [B, N, V]
"""


def test_lesson_15_deep_prompt_trace():
    _, seen = trace_lesson("15", DEEP, pick=lambda traces: traces[1], B=6, N=7, P=5, layers=3)
    kv_heads_paired(seen, "layer0.attn", "k", call=1)  # run 1 is the deep prompt
    rotary_positions(seen, 0, list(range(-5, 0)) + list(range(7)),
                     "(prompt rows just before the text, tokens from 0)", call=1)
    keep_is(seen, causal_keep(torch.ones(6, 12, dtype=torch.bool), P=0), "query i to see rows 0..i",
            "core/masks.py: build_keep", call=1)
    slice_keeps_real_rows(seen, "layer0.out", "layer0.slice", P=5, where="core/stack.py: run_layers", calls=(1, 0))
    seen.probe.check()  # last: the first attention call, recomputed head by head


def test_lesson_15_kv_prefix_trace():
    _, seen = trace_lesson("15", PREFIX, pick=lambda traces: traces[0], B=6, N=7, P=5, layers=3)
    kv_heads_paired(seen, "layer0.attn", "k_with_prefix")
    rotary_positions(seen, 0, list(range(7)), "(real tokens from 0, the prefix has none)")
    keep_is(seen, causal_keep(torch.ones(6, 12, dtype=torch.bool), P=5),
            "query i to see the P=5 prefix keys and tokens 0..i", "core/masks.py: build_keep")
    prefix_in_front(seen, "layer0.attn")
    seen.probe.check()  # last: the first attention call, recomputed head by head
