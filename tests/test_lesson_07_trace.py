"""Lesson 07, traced: deep hidden-state prompts on BERT-base shapes (2 layers), seed 000's
numbers B=16, N=128, P=20, D=768, with the last row padded.

Read it as seed 000's walk, once per layer: prompt [B, P, D] + hidden [B, N, D] -> inject
[B, P+N, D] -> every attention row is P+N long -> layer out [B, P+N, D] -> slice [B, N, D].
The mask is the 4-D keep-mask [B, 1, 1, P+N] (the prompt columns always kept), never the
2-D one seed 000 hands to its layers. Run: `pytest tests/test_lesson_07_trace.py`.
"""
from trace_helpers import assert_trace, load_lesson

EXPECTED = """
name                     shape              letters
embeddings.out           [16, 128, 768]     [B, N, D]
deep.prompts             [2, 20, 768]       [L, P, D]
mask.keys                [16, 148]          [B, P+N]
mask.keep                [16, 1, 1, 148]    [B, 1, 1, P+N]
layer0.prompt            [16, 20, 768]      [B, P, D]
layer0.inject            [16, 148, 768]     [B, P+N, D]
layer0.attn.q            [16, 12, 148, 64]  [B, H, P+N, d]
layer0.attn.k            [16, 12, 148, 64]  [B, H, P+N, d]
layer0.attn.v            [16, 12, 148, 64]  [B, H, P+N, d]
layer0.attn.context      [16, 12, 148, 64]  [B, H, P+N, d]
layer0.attn.out          [16, 148, 768]     [B, P+N, D]
layer0.out               [16, 148, 768]     [B, P+N, D]
layer0.slice             [16, 128, 768]     [B, N, D]
layer1.prompt            [16, 20, 768]      [B, P, D]
layer1.inject            [16, 148, 768]     [B, P+N, D]
layer1.attn.q            [16, 12, 148, 64]  [B, H, P+N, d]
layer1.attn.k            [16, 12, 148, 64]  [B, H, P+N, d]
layer1.attn.v            [16, 12, 148, 64]  [B, H, P+N, d]
layer1.attn.context      [16, 12, 148, 64]  [B, H, P+N, d]
layer1.attn.out          [16, 148, 768]     [B, P+N, D]
layer1.out               [16, 148, 768]     [B, P+N, D]
layer1.slice             [16, 128, 768]     [B, N, D]
final.last_hidden_state  [16, 128, 768]     [B, N, D]
final.pooler             [16, 768]          [B, D]
"""

WALK_LAYER_0 = ("layer0: prompt [16, 20, 768] + hidden [16, 128, 768] -> inject [16, 148, 768] "
                "-> layer [16, 148, 768] -> slice [16, 128, 768]")


def test_lesson_07_deep_prompt_trace():
    lesson = load_lesson("07")
    tr = lesson.trace_example(B=16, N=128, P=20, layers=2, pad=8)
    assert_trace(tr, EXPECTED)
    assert tr.walk(0) == WALK_LAYER_0
    assert tr.walk(1) == WALK_LAYER_0.replace("layer0", "layer1")
