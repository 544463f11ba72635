"""Lesson 06, traced: a shallow soft prompt on BERT-base shapes (D=768, H=12, d=64; 3 layers, so
that L*2*D = 4,608 differs from the feed-forward width 3,072), seed 000's numbers B=16, N=128, P=20.

The prompt [B, P, D] joins the embeddings once, so every layer runs on P+N = 148 rows (no
`inject` or `slice` inside the loop: that is lesson 07's deep prompt); the virtual rows are sliced
off once, at the end, before the hidden states and the pooler (which must read the real [CLS]).
If the lesson's code raises, the failure shows how far the trace got; after the shapes, layer 0's
attention is recomputed head by head (heads split as `(d h)` would fail there).

Then the lesson's point by its numbers: the prompt rows join in word-embedding space
(LayerNorm(prompt + token type 0)); `shallow.slice` keeps rows P..P+N-1 of the last layer's
output; and the pooler reads the real [CLS], row P of that output, not virtual row 0.
Run: `pytest tests/test_lesson_06_trace.py`.
"""
from trace_checks import bert_prompt_rows, pooler_reads_cls, slice_keeps_real_rows
from trace_helpers import load_lesson, trace_lesson

EXPECTED = """
name                     shape              letters
shallow.prompt           [16, 20, 768]      [B, P, D]
embeddings.out           [16, 148, 768]     [B, P+N, D]
mask.keys                [16, 148]          [B, P+N]
layer0.attn.q            [16, 12, 148, 64]  [B, H, P+N, d]
layer0.attn.k            [16, 12, 148, 64]  [B, H, P+N, d]
layer0.attn.v            [16, 12, 148, 64]  [B, H, P+N, d]
layer0.attn.context      [16, 12, 148, 64]  [B, H, P+N, d]
layer0.attn.out          [16, 148, 768]     [B, P+N, D]
layer0.out               [16, 148, 768]     [B, P+N, D]
layer1.attn.q            [16, 12, 148, 64]  [B, H, P+N, d]
layer1.attn.k            [16, 12, 148, 64]  [B, H, P+N, d]
layer1.attn.v            [16, 12, 148, 64]  [B, H, P+N, d]
layer1.attn.context      [16, 12, 148, 64]  [B, H, P+N, d]
layer1.attn.out          [16, 148, 768]     [B, P+N, D]
layer1.out               [16, 148, 768]     [B, P+N, D]
layer2.attn.q            [16, 12, 148, 64]  [B, H, P+N, d]
layer2.attn.k            [16, 12, 148, 64]  [B, H, P+N, d]
layer2.attn.v            [16, 12, 148, 64]  [B, H, P+N, d]
layer2.attn.context      [16, 12, 148, 64]  [B, H, P+N, d]
layer2.attn.out          [16, 148, 768]     [B, P+N, D]
layer2.out               [16, 148, 768]     [B, P+N, D]
shallow.slice            [16, 128, 768]     [B, N, D]
final.last_hidden_state  [16, 128, 768]     [B, N, D]
final.pooler             [16, 768]          [B, D]
"""


def test_lesson_06_soft_prompt_trace():
    tr, seen = trace_lesson("06", EXPECTED, keep=("shallow.", "embeddings.out", "layer2.out", "final."),
                          B=16, N=128, P=20, layers=3)
    assert tr.walk() == ("input: prompt [16, 20, 768] + embeddings [16, 128, 768] -> [16, 148, 768] "
                         "-> every layer on P+N rows -> slice [16, 128, 768]")
    model = seen.runs[0][0]
    bert_prompt_rows(seen, model, P=20)
    slice_keeps_real_rows(seen, "layer2.out", "shallow.slice", P=20, where="core/transformer.py: Transformer.run")
    pooler_reads_cls(seen, model, "layer2.out", row=20)
    seen.probe.check()  # last: the first attention call, recomputed head by head


def test_lesson_06_minus_100_labels_keep_one_more_term_than_slicing():
    """The lesson's claim: -100 over the prompt (PEFT) = our sliced loss + the first real token's
    term; labelling that token -100 as well gives our loss exactly."""
    load_lesson("06").labels_vs_slicing(P=5, B=2, N=12)
