"""Lesson 04, traced: the shipped pretrained MiniLM (L=6, D=384, H=12, d=32, D_ff=1536,
V=30,522) on B=2, N=8.

The same rows as lesson 01's BERT-base, with MiniLM's numbers: loading a checkpoint changes
values, never shapes. Every layer reads and writes [B, N, D]; inside, queries, keys and values
are [B, H, N, d] (the fused path: no scores or probs rows). No two letters share a size, and the
first attention call is recomputed head by head from the loaded weights, so heads split as
(d h) instead of (h d) fail too, though every shape stays right. Skipped when the pretrained
folder is not installed. Run: `pytest tests/test_lesson_04_trace.py`.
"""
from trace_helpers import check_lesson_trace

EXPECTED = """
name                     shape           letters
embeddings.out           [2, 8, 384]     [B, N, D]
mask.keys                [2, 8]          [B, N]
layer0.attn.q            [2, 12, 8, 32]  [B, H, N, d]
layer0.attn.k            [2, 12, 8, 32]  [B, H, N, d]
layer0.attn.v            [2, 12, 8, 32]  [B, H, N, d]
layer0.attn.context      [2, 12, 8, 32]  [B, H, N, d]
layer0.attn.out          [2, 8, 384]     [B, N, D]
layer0.out               [2, 8, 384]     [B, N, D]
layer1.attn.q            [2, 12, 8, 32]  [B, H, N, d]
layer1.attn.k            [2, 12, 8, 32]  [B, H, N, d]
layer1.attn.v            [2, 12, 8, 32]  [B, H, N, d]
layer1.attn.context      [2, 12, 8, 32]  [B, H, N, d]
layer1.attn.out          [2, 8, 384]     [B, N, D]
layer1.out               [2, 8, 384]     [B, N, D]
layer2.attn.q            [2, 12, 8, 32]  [B, H, N, d]
layer2.attn.k            [2, 12, 8, 32]  [B, H, N, d]
layer2.attn.v            [2, 12, 8, 32]  [B, H, N, d]
layer2.attn.context      [2, 12, 8, 32]  [B, H, N, d]
layer2.attn.out          [2, 8, 384]     [B, N, D]
layer2.out               [2, 8, 384]     [B, N, D]
layer3.attn.q            [2, 12, 8, 32]  [B, H, N, d]
layer3.attn.k            [2, 12, 8, 32]  [B, H, N, d]
layer3.attn.v            [2, 12, 8, 32]  [B, H, N, d]
layer3.attn.context      [2, 12, 8, 32]  [B, H, N, d]
layer3.attn.out          [2, 8, 384]     [B, N, D]
layer3.out               [2, 8, 384]     [B, N, D]
layer4.attn.q            [2, 12, 8, 32]  [B, H, N, d]
layer4.attn.k            [2, 12, 8, 32]  [B, H, N, d]
layer4.attn.v            [2, 12, 8, 32]  [B, H, N, d]
layer4.attn.context      [2, 12, 8, 32]  [B, H, N, d]
layer4.attn.out          [2, 8, 384]     [B, N, D]
layer4.out               [2, 8, 384]     [B, N, D]
layer5.attn.q            [2, 12, 8, 32]  [B, H, N, d]
layer5.attn.k            [2, 12, 8, 32]  [B, H, N, d]
layer5.attn.v            [2, 12, 8, 32]  [B, H, N, d]
layer5.attn.context      [2, 12, 8, 32]  [B, H, N, d]
layer5.attn.out          [2, 8, 384]     [B, N, D]
layer5.out               [2, 8, 384]     [B, N, D]
final.last_hidden_state  [2, 8, 384]     [B, N, D]
final.pooler             [2, 384]        [B, D]
"""


def test_lesson_04_pretrained_minilm_trace(minilm_dir):
    trace = check_lesson_trace("04", EXPECTED, model_dir=minilm_dir, B=2, N=8)
    assert len(set(trace.dims.values())) == len(trace.dims), f"two letters share a size: {trace.dims}"
