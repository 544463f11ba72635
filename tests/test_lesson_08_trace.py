"""Lesson 08, traced: a K/V prefix (P-Tuning v2) on BERT-base shapes (D=768, H=12, d=64; 3 layers,
so that the table's width L*2*D = 4,608 differs from the feed-forward width 3,072; layer 0 shown),
seed 000's numbers B=16, N=128, P=20.

The prefix lives in one table [P, L*2*D] = [L, 2, H, P, d]. At every layer the keys and values
grow, [B, H, P, d] + [B, H, N, d] -> [B, H, P+N, d], while the queries stay [B, H, N, d]: the
scores are [B, H, N, P+N] and the layer returns N rows, so there is no inject and no slice.
If the lesson's code raises, the failure shows how far the trace got; after the shapes, layer 0's
attention is recomputed head by head, prefix included (heads split as `(d h)`, or the prefix's
keys and values swapped, would fail there).

Then the step by its numbers: `prefix.kv` is the table read as (layer, K or V, head, d), each
head d consecutive numbers; layer 0 gets prefix.kv[0, K] and [0, V]; `k_with_prefix` is
[prefix_k | k] (the prefix in front, keys with keys) and `v_with_prefix` [prefix_v | v]; and
the context equals softmax(q [prefix_k | k]^T / sqrt(d)) [prefix_v | v] computed here, with
every prefix column attended. Run: `pytest tests/test_lesson_08_trace.py`.
"""
from trace_checks import prefix_attended, prefix_handed_to_layers, prefix_in_front, prefix_read, prefix_table_layout
from trace_helpers import assert_trace, load_lesson, trace_lesson

EXPECTED = """
name                       shape               letters
embeddings.out             [16, 128, 768]      [B, N, D]
prefix.table               [20, 4608]          [P, L*2*D]
prefix.kv                  [3, 2, 12, 20, 64]  [L, 2, H, P, d]
mask.keys                  [16, 148]           [B, P+N]
layer0.attn.q              [16, 12, 128, 64]   [B, H, N, d]
layer0.attn.k              [16, 12, 128, 64]   [B, H, N, d]
layer0.attn.v              [16, 12, 128, 64]   [B, H, N, d]
layer0.attn.prefix_k       [16, 12, 20, 64]    [B, H, P, d]
layer0.attn.prefix_v       [16, 12, 20, 64]    [B, H, P, d]
layer0.attn.k_with_prefix  [16, 12, 148, 64]   [B, H, P+N, d]
layer0.attn.v_with_prefix  [16, 12, 148, 64]   [B, H, P+N, d]
layer0.attn.scores         [16, 12, 128, 148]  [B, H, N, P+N]
layer0.attn.probs          [16, 12, 128, 148]  [B, H, N, P+N]
layer0.attn.context        [16, 12, 128, 64]   [B, H, N, d]
layer0.attn.out            [16, 128, 768]      [B, N, D]
layer0.out                 [16, 128, 768]      [B, N, D]
final.last_hidden_state    [16, 128, 768]      [B, N, D]
final.pooler               [16, 768]           [B, D]
"""


def test_lesson_08_kv_prefix_trace():
    tr, seen = trace_lesson("08", EXPECTED, keep=("prefix.", "layer0.attn."), B=16, N=128, P=20, layers=3)
    assert tr.walk(0).splitlines() == [
        "layer0: K: prefix [16, 12, 20, 64] + k [16, 12, 128, 64] -> [16, 12, 148, 64]",
        "layer0: V: prefix [16, 12, 20, 64] + v [16, 12, 128, 64] -> [16, 12, 148, 64]",
        "layer0: Q: [16, 12, 128, 64] (never prefixed)",
    ]
    prefix_table_layout(seen, H_kv=12)
    prefix_handed_to_layers(seen, layer=0)
    prefix_in_front(seen, "layer0.attn")
    prefix_attended(seen, "layer0.attn")
    prefix_read(seen, "layer0.attn")
    seen.probe.check()  # last: the first attention call, recomputed head by head


def test_lesson_08_the_mlp_is_invisible_downstream():
    """With the reparameterisation MLP the recorded rows are identical: it only changes how
    prefix.table is produced."""
    lesson = load_lesson("08")
    assert_trace(lesson.trace_example(B=2, N=16, P=4, layers=1, projection=True),
                 lesson.trace_example(B=2, N=16, P=4, layers=1).rows)
