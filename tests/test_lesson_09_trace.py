"""Lesson 09, traced: the same tiny BERT (D=24, H=4, d=6; 2 layers), B=2, N=5, P=3, prompted
two ways: a deep hidden-state prompt, and the K/V prefix `hidden_to_kv` builds from it.

Left: every layer runs on P+N rows and slices P off. Right: every layer runs on N rows and
its keys and values grow to P+N. Both end at the same [B, N, D], and (lesson 09, section 2)
at the same numbers. Run: `pytest tests/test_lesson_09_trace.py`.
"""
import torch

from minigpt_ptv2 import GPT2Decoder, BertEncoder, preset
from tolerances import FP32_KERNELS
from trace_helpers import assert_trace, load_lesson

DEEP = """
name                     shape         letters
embeddings.out           [2, 5, 24]    [B, N, D]
deep.prompts             [2, 3, 24]    [L, P, D]
mask.keys                [2, 8]        [B, P+N]
layer0.prompt            [2, 3, 24]    [B, P, D]
layer0.inject            [2, 8, 24]    [B, P+N, D]
layer0.attn.q            [2, 4, 8, 6]  [B, H, P+N, d]
layer0.attn.k            [2, 4, 8, 6]  [B, H, P+N, d]
layer0.attn.v            [2, 4, 8, 6]  [B, H, P+N, d]
layer0.attn.context      [2, 4, 8, 6]  [B, H, P+N, d]
layer0.attn.out          [2, 8, 24]    [B, P+N, D]
layer0.out               [2, 8, 24]    [B, P+N, D]
layer0.slice             [2, 5, 24]    [B, N, D]
layer1.prompt            [2, 3, 24]    [B, P, D]
layer1.inject            [2, 8, 24]    [B, P+N, D]
layer1.attn.q            [2, 4, 8, 6]  [B, H, P+N, d]
layer1.attn.k            [2, 4, 8, 6]  [B, H, P+N, d]
layer1.attn.v            [2, 4, 8, 6]  [B, H, P+N, d]
layer1.attn.context      [2, 4, 8, 6]  [B, H, P+N, d]
layer1.attn.out          [2, 8, 24]    [B, P+N, D]
layer1.out               [2, 8, 24]    [B, P+N, D]
layer1.slice             [2, 5, 24]    [B, N, D]
final.last_hidden_state  [2, 5, 24]    [B, N, D]
final.pooler             [2, 24]       [B, D]
"""

PREFIX = """
name                       shape            letters
embeddings.out             [2, 5, 24]       [B, N, D]
prefix.table               [3, 96]          [P, L*2*D]
prefix.kv                  [2, 2, 4, 3, 6]  [L, 2, H, P, d]
mask.keys                  [2, 8]           [B, P+N]
layer0.attn.q              [2, 4, 5, 6]     [B, H, N, d]
layer0.attn.k              [2, 4, 5, 6]     [B, H, N, d]
layer0.attn.v              [2, 4, 5, 6]     [B, H, N, d]
layer0.attn.prefix_k       [2, 4, 3, 6]     [B, H, P, d]
layer0.attn.prefix_v       [2, 4, 3, 6]     [B, H, P, d]
layer0.attn.k_with_prefix  [2, 4, 8, 6]     [B, H, P+N, d]
layer0.attn.v_with_prefix  [2, 4, 8, 6]     [B, H, P+N, d]
layer0.attn.context        [2, 4, 5, 6]     [B, H, N, d]
layer0.attn.out            [2, 5, 24]       [B, N, D]
layer0.out                 [2, 5, 24]       [B, N, D]
layer1.attn.q              [2, 4, 5, 6]     [B, H, N, d]
layer1.attn.k              [2, 4, 5, 6]     [B, H, N, d]
layer1.attn.v              [2, 4, 5, 6]     [B, H, N, d]
layer1.attn.prefix_k       [2, 4, 3, 6]     [B, H, P, d]
layer1.attn.prefix_v       [2, 4, 3, 6]     [B, H, P, d]
layer1.attn.k_with_prefix  [2, 4, 8, 6]     [B, H, P+N, d]
layer1.attn.v_with_prefix  [2, 4, 8, 6]     [B, H, P+N, d]
layer1.attn.context        [2, 4, 5, 6]     [B, H, N, d]
layer1.attn.out            [2, 5, 24]       [B, N, D]
layer1.out                 [2, 5, 24]       [B, N, D]
final.last_hidden_state    [2, 5, 24]       [B, N, D]
final.pooler               [2, 24]          [B, D]
"""


def test_lesson_09_deep_prompt_trace():
    deep, _ = load_lesson("09").trace_example(B=2, N=5, P=3, layers=2)
    assert_trace(deep, DEEP)


def test_lesson_09_equivalent_prefix_trace():
    _, prefix = load_lesson("09").trace_example(B=2, N=5, P=3, layers=2)
    assert_trace(prefix, PREFIX)


def test_lesson_09_bridge_holds_on_both_models():
    lesson = load_lesson("09")
    for model in (BertEncoder(preset("bert-tiny")).eval(), GPT2Decoder(preset("gpt2-tiny")).eval()):
        ids = torch.randint(0, model.config.vocab_size, (2, 6))
        with torch.no_grad():
            assert lesson.bridge_check(model, ids, P=3, atol=FP32_KERNELS) <= FP32_KERNELS  # see test_prompts_bridge
