"""Lesson 15, traced: deep prompts on the LLaMA-style decoder (llama-tiny: D=40, L=3, H=4
query heads, H_kv=2 key/value heads, d=10, V=140), layer 0 shown, B=6, N=7, P=5.

Both deep styles on grouped K/V heads. The deep prompt's P rows join the N real rows, so Q has
P+N rows and K/V have H_kv heads of P+N rows. The K/V prefix keeps Q at N rows and extends the
H_kv-headed keys and values by P; its table is [P, L*2*H_kv*d] = [5, 120], a quarter of
[P, L*2*D] here. Before scoring, the explicit path widens K and V from H_kv to H heads
(`k_repeated`). Run: `pytest tests/test_lesson_15_trace.py`.
"""
from trace_helpers import check_lesson_trace

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
    check_lesson_trace("15", DEEP, pick=lambda traces: traces[1], B=6, N=7, P=5, layers=3)


def test_lesson_15_kv_prefix_trace():
    check_lesson_trace("15", PREFIX, pick=lambda traces: traces[0], B=6, N=7, P=5, layers=3)
