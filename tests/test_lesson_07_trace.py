"""Lesson 07, traced: deep hidden-state prompts on BERT-base shapes (D=768, H=12, d=64; 3 layers,
so that L*2*D = 4,608 differs from the feed-forward width 3,072), seed 000's numbers B=16, N=128,
P=20, with the last row's 8 final tokens padded.

Read it as seed 000's walk, once per layer: prompt [B, P, D] + hidden [B, N, D] -> inject
[B, P+N, D] -> every attention row is P+N long -> layer out [B, P+N, D] -> slice [B, N, D].
The mask is the 4-D keep-mask [B, 1, 1, P+N] (the prompt columns always kept), never the
2-D one seed 000 hands to its layers. A slice that keeps one row too many (`[:, P-1:]`) fails
at the next layer: the table shows `layer0.slice` [B, 129, D] and where the trace stopped, then
the mask error in one line. After the shapes, layer 0's attention is recomputed head by head
(heads split as `(d h)` would fail there).

Then the step itself, by its numbers, at every layer: `inject` is [this layer's prompt | the
rows the layer before kept], and `slice` keeps rows P..P+N-1 of the layer's output, the real
ones. A slice off the wrong end (`[:, :N]`, the prompt rows kept and the last P real rows lost)
keeps every shape and fails here by name. The last test runs a prompt whose rows are known (the
plain model's own rows for a P-token text in front): the real rows then equal the plain model's
rows P..P+N-1 at every layer. Run: `pytest tests/test_lesson_07_trace.py`.
"""
import math

import torch

from minigpt_ptv2 import BertEncoder, preset
from minigpt_ptv2.prompts import DeepPrompt
from tolerances import FP32_KERNELS
from trace_checks import close, fail, gap, inject_in_front, slice_keeps_real_rows
from trace_helpers import Seen, load_lesson, trace_lesson

EXPECTED = """
name                     shape              letters
embeddings.out           [16, 128, 768]     [B, N, D]
deep.prompts             [3, 20, 768]       [L, P, D]
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
layer2.prompt            [16, 20, 768]      [B, P, D]
layer2.inject            [16, 148, 768]     [B, P+N, D]
layer2.attn.q            [16, 12, 148, 64]  [B, H, P+N, d]
layer2.attn.k            [16, 12, 148, 64]  [B, H, P+N, d]
layer2.attn.v            [16, 12, 148, 64]  [B, H, P+N, d]
layer2.attn.context      [16, 12, 148, 64]  [B, H, P+N, d]
layer2.attn.out          [16, 148, 768]     [B, P+N, D]
layer2.out               [16, 148, 768]     [B, P+N, D]
layer2.slice             [16, 128, 768]     [B, N, D]
final.last_hidden_state  [16, 128, 768]     [B, N, D]
final.pooler             [16, 768]          [B, D]
"""

WALK_LAYER_0 = ("layer0: prompt [16, 20, 768] + hidden [16, 128, 768] -> inject [16, 148, 768] "
                "-> layer [16, 148, 768] -> slice [16, 128, 768]")


KEEP = ("embeddings.out", "final.") + tuple(f"layer{i}.{n}" for i in range(3) for n in ("prompt", "inject", "out",
                                                                                        "slice"))


def test_lesson_07_deep_prompt_trace():
    tr, seen = trace_lesson("07", EXPECTED, keep=KEEP, B=16, N=128, P=20, layers=3, pad=8)
    for i in range(3):
        assert tr.walk(i) == WALK_LAYER_0.replace("layer0", f"layer{i}")
    load_lesson("07").check_keep(tr, P=20, pad=8)  # prompt columns kept, the 8 pads dropped
    for i in range(3):  # inject in front, process, keep the real rows
        inject_in_front(seen, i, "embeddings.out" if i == 0 else f"layer{i - 1}.slice", P=20)
        slice_keeps_real_rows(seen, f"layer{i}.out", f"layer{i}.slice", P=20, where="core/stack.py: run_layers")
    assert torch.equal(seen("final.last_hidden_state"), seen("layer2.slice"))
    seen.probe.check()  # last: the first attention call, recomputed head by head


def test_lesson_07_prompt_rows_known_the_real_rows_are_the_plain_models():
    """A deep prompt whose rows are the plain model's own rows 0..P-1 for the text [t_1..t_P, ids],
    with the real tokens at positions P..P+N-1 ("shifted"): every layer's kept rows must be the
    plain model's rows P..P+N-1 on that text (tiny BERT, B=1, N=6, P=4)."""
    torch.manual_seed(0)
    cfg, P, N = preset("bert-tiny"), 4, 6
    model = BertEncoder(cfg).eval()
    text = torch.randint(1, cfg.vocab_size, (1, P + N))  # [1, P+N]: P known tokens, then the N real ones
    with torch.no_grad():
        with Seen() as plain:
            model(text)
        deep = DeepPrompt(cfg, P, positions="shifted")
        deep.start_from_text(model, text, slice(0, P))  # layer i's prompt = the plain layer i's input rows 0..P-1
        with Seen() as prompted:
            model.attach(deep)(text[:, P:])
    for i in range(cfg.num_hidden_layers):
        got, want = prompted(f"layer{i}.slice"), plain(f"layer{i}.out")[:, P:]
        if not close(got, want, FP32_KERNELS):
            fail(f"layer{i}.slice is not the plain model's rows P..P+N-1 = {P}..{P + N - 1} on the same text "
            f"(gap {gap(got, want):.3g}) (core/stack.py: run_layers slices with core/prompt_rows.py: drop_front)")


def test_lesson_07_a_2d_mask_down_weights_the_pads_but_does_not_mask_them():
    """The lesson's claim, as measured: at B=16 the 2-D mask raises; at B=1 it runs and the pads'
    share of attention falls from 0.218 to 0.098 (their weight relative to kept keys divided by e),
    where the 4-D mask gives exactly 0."""
    found = load_lesson("07").two_d_mask_mistake()
    assert found[16] == "raises"
    share = found[1]
    assert share["4-D"] == 0 and 0 < share["2-D"] < share["none"]
    assert math.isclose(share["none"], 0.218, abs_tol=5e-4) and math.isclose(share["2-D"], 0.098, abs_tol=5e-4)
