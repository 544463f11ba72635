"""Lesson 09, traced: the same tiny BERT (D=24, L=3, H=4, d=6), layer 0 shown, B=2, N=7, P=5,
prompted two ways: a deep hidden-state prompt, and the K/V prefix `hidden_to_kv` builds from it.

Left: the layer runs on P+N = 12 rows (`inject`), so its queries, keys and values have P+N rows,
and it slices P off at the end (`slice`). Right: the layer runs on N = 7 rows; only its keys and
values grow to P+N (`k_with_prefix`), from a table [P, L*2*D] = [5, 144]. Both end at the same
[B, N, D], and (lesson 09, section 2, and the last test here) at the same numbers.

The two traces checked against each other by their numbers: the prefix's keys and values are
the prompt rows' own keys and values in the deep run (post-LN BERT: the layer's projection of h
as it receives it, no LayerNorm first), and the prefix run's layer output is the deep run's slice.
Run: `pytest tests/test_lesson_09_trace.py`.
"""
import torch

from minigpt_ptv2 import GPT2Decoder, BertEncoder, preset
from tolerances import FP32_KERNELS
from trace_checks import bridge_matches
from trace_helpers import check_lesson_trace, load_lesson, trace_lesson

DEEP = """
name                     shape          letters
embeddings.out           [2, 7, 24]     [B, N, D]
deep.prompts             [3, 5, 24]     [L, P, D]
mask.keys                [2, 12]        [B, P+N]
layer0.prompt            [2, 5, 24]     [B, P, D]
layer0.inject            [2, 12, 24]    [B, P+N, D]
layer0.attn.q            [2, 4, 12, 6]  [B, H, P+N, d]
layer0.attn.k            [2, 4, 12, 6]  [B, H, P+N, d]
layer0.attn.v            [2, 4, 12, 6]  [B, H, P+N, d]
layer0.attn.context      [2, 4, 12, 6]  [B, H, P+N, d]
layer0.attn.out          [2, 12, 24]    [B, P+N, D]
layer0.out               [2, 12, 24]    [B, P+N, D]
layer0.slice             [2, 7, 24]     [B, N, D]
final.last_hidden_state  [2, 7, 24]     [B, N, D]
final.pooler             [2, 24]        [B, D]
"""

PREFIX = """
name                       shape            letters
embeddings.out             [2, 7, 24]       [B, N, D]
prefix.table               [5, 144]         [P, L*2*D]
prefix.kv                  [3, 2, 4, 5, 6]  [L, 2, H, P, d]
mask.keys                  [2, 12]          [B, P+N]
layer0.attn.q              [2, 4, 7, 6]     [B, H, N, d]
layer0.attn.k              [2, 4, 7, 6]     [B, H, N, d]
layer0.attn.v              [2, 4, 7, 6]     [B, H, N, d]
layer0.attn.prefix_k       [2, 4, 5, 6]     [B, H, P, d]
layer0.attn.prefix_v       [2, 4, 5, 6]     [B, H, P, d]
layer0.attn.k_with_prefix  [2, 4, 12, 6]    [B, H, P+N, d]
layer0.attn.v_with_prefix  [2, 4, 12, 6]    [B, H, P+N, d]
layer0.attn.context        [2, 4, 7, 6]     [B, H, N, d]
layer0.attn.out            [2, 7, 24]       [B, N, D]
layer0.out                 [2, 7, 24]       [B, N, D]
final.last_hidden_state    [2, 7, 24]       [B, N, D]
final.pooler               [2, 24]          [B, D]
"""


def test_lesson_09_deep_prompt_trace():
    check_lesson_trace("09", DEEP, pick=lambda traces: traces[0], B=2, N=7, P=5, layers=3)


def test_lesson_09_equivalent_prefix_trace():
    _, seen = trace_lesson("09", PREFIX, pick=lambda traces: traces[1], B=2, N=7, P=5, layers=3)
    bridge_matches(seen, P=5)
    seen.probe.check()  # last: the first attention call, recomputed head by head


def test_lesson_09_bridge_holds_on_both_models():
    lesson = load_lesson("09")
    for model in (BertEncoder(preset("bert-tiny")).eval(), GPT2Decoder(preset("gpt2-tiny")).eval()):
        ids = torch.randint(0, model.config.vocab_size, (2, 6))
        with torch.no_grad():
            assert lesson.bridge_check(model, ids, P=3, atol=FP32_KERNELS) <= FP32_KERNELS  # see test_prompts_bridge


def test_lesson_09_flop_formula_matches_the_counter():
    """Section 4's formula equals what torch's FLOP counter sees, for both styles (tiny BERT)."""
    lesson = load_lesson("09")
    cfg = preset("bert-tiny")
    model = BertEncoder(cfg).eval()
    from minigpt_ptv2.prompts import DeepPrompt, hidden_to_kv
    deep = DeepPrompt(cfg, 5).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 7))
    assert lesson.counted_flops(model.attach(deep), ids) == lesson.forward_flops(cfg, 2, 12, 12)
    assert lesson.counted_flops(model.attach(hidden_to_kv(model, deep)), ids) == lesson.forward_flops(cfg, 2, 7, 12)
