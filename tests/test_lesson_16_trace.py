"""Lesson 16, traced: the step every prompt in the closed loop is trained by, on the tiny
LLaMA-style decoder of lesson 15 (llama-tiny: D=40, L=3, H=4 query heads, H_kv=2 key/value
heads, d=10, V=140), layer 0 shown, B=6 sentences of N=7 tokens (five right-padded by 2), P=5.

A deep prompt's P rows join the N real rows inside every layer and are sliced off before the
head; a K/V prefix only lengthens the keys and values to P+N. Either way the logits are
[B, N, V]: the prompt has no logits of its own.

Then by numbers: the loss the prompt is trained on is cross-entropy of the logits at positions
0..N-2 against the tokens at 1..N-1 (position t predicts t+1), with padding (label -100) not
scored, recomputed from the recorded logits under both prompts (a loss that scores each position
on its own token instead, `labels[:, :-1]`, keeps every shape and fails here).
Run: `pytest tests/test_lesson_16_trace.py`.
"""
from trace_checks import next_token_loss, slice_keeps_real_rows
from trace_helpers import trace_lesson

DEEP = """
name                 shape           letters
embeddings.out       [6, 7, 40]      [B, N, D]
deep.prompts         [3, 5, 40]      [L, P, D]
mask.keys            [6, 12]         [B, P+N]
mask.keep            [6, 1, 12, 12]  [B, 1, P+N, P+N]
layer0.prompt        [6, 5, 40]      [B, P, D]
layer0.inject        [6, 12, 40]     [B, P+N, D]
layer0.attn.q        [6, 4, 12, 10]  [B, H, P+N, d]
layer0.attn.k        [6, 2, 12, 10]  [B, H_kv, P+N, d]
layer0.attn.v        [6, 2, 12, 10]  [B, H_kv, P+N, d]
layer0.attn.context  [6, 4, 12, 10]  [B, H, P+N, d]
layer0.attn.out      [6, 12, 40]     [B, P+N, D]
layer0.out           [6, 12, 40]     [B, P+N, D]
layer0.slice         [6, 7, 40]      [B, N, D]
final.logits         [6, 7, 140]     [B, N, V]
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
layer0.attn.context        [6, 4, 7, 10]     [B, H, N, d]
layer0.attn.out            [6, 7, 40]        [B, N, D]
layer0.out                 [6, 7, 40]        [B, N, D]
final.logits               [6, 7, 140]       [B, N, V]
"""


def test_lesson_16_deep_prompt_training_step_trace():
    (_, _, labels, losses), seen = trace_lesson("16", DEEP, pick=lambda r: r[0][0], B=6, N=7, P=5, layers=3)
    assert (labels == -100).sum() == 10, "five rows right-padded by 2: their labels are -100"
    slice_keeps_real_rows(seen, "layer0.out", "layer0.slice", P=5, where="core/stack.py: run_layers")
    next_token_loss(seen, labels, losses[0], "deep prompt", call=0)
    seen.probe.check()  # last: the first attention call, recomputed head by head


def test_lesson_16_kv_prefix_training_step_trace():
    (_, _, labels, losses), seen = trace_lesson("16", PREFIX, pick=lambda r: r[0][1], B=6, N=7, P=5, layers=3)
    next_token_loss(seen, labels, losses[1], "K/V prefix", call=1)  # run 1 is the K/V prefix
