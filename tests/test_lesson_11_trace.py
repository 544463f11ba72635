"""Lesson 11, traced: the explicit attention path of a tiny BERT (D=24, H=4, d=6, L=3) with a
K/V prefix, layer 0 shown, B=2, N=7 (second row padded by 2), P=5.

With output_attentions=True the layer records `scores` and `probs` [B, H, N, P+N]: Nq = N real
queries, Nk = P+N keys, the P prefix keys first. Those `probs` are what `viz.attention_maps`
stacks over layers and what every attention figure draws, so the test also checks that each
query row sums to 1 and that the padded row's two padding keys get exactly 0. If the lesson's
code raises, the failure shows how far the trace got; after the shapes, the first attention
call is recomputed head by head.

The picture's point by its numbers: every query gives each of the P prefix columns some
attention, and exactly what softmax(q [prefix_k | k]^T / sqrt(d)) gives it, computed here from
the prefix's keys; the padding keys get exactly 0 in every layer.
Run: `pytest tests/test_lesson_11_trace.py`.
"""
import torch

from tolerances import PROB_SUM
from trace_checks import pads_get_nothing, prefix_attended
from trace_helpers import trace_lesson

EXPECTED = """
name                       shape            letters
embeddings.out             [2, 7, 24]       [B, N, D]
prefix.table               [5, 144]         [P, L*2*D]
prefix.kv                  [3, 2, 4, 5, 6]  [L, 2, H, P, d]
mask.keys                  [2, 12]          [B, P+N]
mask.keep                  [2, 1, 1, 12]    [B, 1, 1, P+N]
layer0.attn.q              [2, 4, 7, 6]     [B, H, N, d]
layer0.attn.k              [2, 4, 7, 6]     [B, H, N, d]
layer0.attn.v              [2, 4, 7, 6]     [B, H, N, d]
layer0.attn.prefix_k       [2, 4, 5, 6]     [B, H, P, d]
layer0.attn.prefix_v       [2, 4, 5, 6]     [B, H, P, d]
layer0.attn.k_with_prefix  [2, 4, 12, 6]    [B, H, P+N, d]
layer0.attn.v_with_prefix  [2, 4, 12, 6]    [B, H, P+N, d]
layer0.attn.scores         [2, 4, 7, 12]    [B, H, N, P+N]
layer0.attn.probs          [2, 4, 7, 12]    [B, H, N, P+N]
layer0.attn.context        [2, 4, 7, 6]     [B, H, N, d]
layer0.attn.out            [2, 7, 24]       [B, N, D]
layer0.out                 [2, 7, 24]       [B, N, D]
final.last_hidden_state    [2, 7, 24]       [B, N, D]
final.pooler               [2, 24]          [B, D]
"""


def test_lesson_11_attention_probs_trace():
    tr, seen = trace_lesson("11", EXPECTED, B=2, N=7, P=5, layers=3)
    probs = tr.tensors["layer0.attn.probs"]  # [B, H, N, P+N], kept by the lesson's trace
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 7), atol=PROB_SUM[torch.float32], rtol=0)
    assert float(probs[1, :, :, -2:].abs().max()) == 0.0  # the padded row's two pad keys
    mask = seen.runs[0][2]  # [B, N]
    keep = torch.cat([torch.ones(2, 5, dtype=torch.bool), mask.bool()], dim=1)[:, None, None, :]  # [B, 1, 1, P+N]
    prefix_attended(seen, "layer0.attn", keep=keep)
    pads_get_nothing(seen, mask, layers=3, P=5)
    seen.probe.check()  # last: the first attention call, recomputed head by head
