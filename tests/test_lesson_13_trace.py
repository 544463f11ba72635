"""Lesson 13, traced: pitfall 4 from the inside. Tiny BERT (D=24, H=4, d=6, L=3, V=120,
D_ff=40), layer 0 shown, B=8, N=7, P=5 (every letter a different size), no padding, a prefix of
zeros: first visible, then masked.

What the trace teaches: a zero prefix masks nothing, so no keep-mask is built and the fused
attention runs without one: the zeros are scored like any key. Masking the prefix adds exactly
one row, `mask.keep` [B, 1, 1, P+N]: that row is the difference between "zero" and "off". If
the lesson's code raises, the failure shows how far the trace got; the first attention call is
also recomputed head by head, so a head-split bug with the right shapes fails too.

Then by numbers: the zero prefix is attended (every prefix column gets weight, the context is
what the queries read from [zeros | tokens]); the masked one is off (`mask.keep` drops exactly
the P prefix columns, and the context is plain attention over the tokens alone, so the mask
really reaches the fused kernel). And pitfall 1, positions under a prefix: real tokens sit at
0..N-1 by default and at P..P+N-1 under positions="shifted", read back from the embeddings.
Run: `pytest tests/test_lesson_13_trace.py`.
"""
import torch

from minigpt_ptv2 import BertEncoder, preset
from minigpt_ptv2.prompts import KVPrefix
from trace_checks import bert_positions, keep_is, prefix_read
from trace_helpers import Seen, check_lesson_trace, trace_lesson

ZERO = """
name                       shape            letters
embeddings.out             [8, 7, 24]       [B, N, D]
prefix.table               [5, 144]         [P, L*2*D]
prefix.kv                  [3, 2, 4, 5, 6]  [L, 2, H, P, d]
mask.keys                  [8, 12]          [B, P+N]
layer0.attn.q              [8, 4, 7, 6]     [B, H, N, d]
layer0.attn.k              [8, 4, 7, 6]     [B, H, N, d]
layer0.attn.v              [8, 4, 7, 6]     [B, H, N, d]
layer0.attn.prefix_k       [8, 4, 5, 6]     [B, H, P, d]
layer0.attn.prefix_v       [8, 4, 5, 6]     [B, H, P, d]
layer0.attn.k_with_prefix  [8, 4, 12, 6]    [B, H, P+N, d]
layer0.attn.v_with_prefix  [8, 4, 12, 6]    [B, H, P+N, d]
layer0.attn.context        [8, 4, 7, 6]     [B, H, N, d]
layer0.attn.out            [8, 7, 24]       [B, N, D]
layer0.out                 [8, 7, 24]       [B, N, D]
final.last_hidden_state    [8, 7, 24]       [B, N, D]
final.pooler               [8, 24]          [B, D]
"""

MASKED_EXTRA_ROW = ("mask.keep", (8, 1, 1, 12), "[B, 1, 1, P+N]")


def test_lesson_13_zero_prefix_trace():
    _, seen = trace_lesson("13", ZERO, pick=lambda traces: traces[0], B=8, N=7, P=5, layers=3)
    prefix_read(seen, "layer0.attn", call=0)  # zero is not off: the zeros take attention
    off = torch.cat([torch.zeros(8, 5, dtype=torch.bool), torch.ones(8, 7, dtype=torch.bool)], 1)[:, None, None, :]
    keep_is(seen, off, "the P=5 prefix columns dropped and the 7 token columns kept",
            "core/prompt_rows.py: keys_in_front copies the method's virtual_keep")  # the masked run's mask
    prefix_read(seen, "layer0.attn", keep=off, call=1,
                where="core/attention.py: MultiHeadAttention.forward hands the keep-mask to the fused kernel")
    seen.probe.check()  # last: the first attention call, recomputed head by head


def test_lesson_13_positions_under_a_prefix():
    """Pitfall 1: where the real tokens sit under a K/V prefix, read back from embeddings.out."""
    cfg, P, N = preset("bert-tiny"), 5, 7
    model = BertEncoder(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, N))  # [B, N]
    for policy, first in (("real", 0), ("shifted", P)):
        model.attach(KVPrefix(cfg, P, positions=policy))
        with torch.no_grad(), Seen(keep=("embeddings.out",)) as seen:
            model(ids)
        bert_positions(seen, model, ids, first, what=f'positions="{policy}"')


def test_lesson_13_masking_adds_exactly_the_keep_mask_row():
    name, shape, letters = MASKED_EXTRA_ROW
    rows = ZERO.strip().splitlines()
    at = next(i for i, r in enumerate(rows) if r.startswith("mask.keys")) + 1
    expected = "\n".join(rows[:at] + [f"{name}  [{', '.join(map(str, shape))}]  {letters}"] + rows[at:])
    check_lesson_trace("13", expected, pick=lambda traces: traces[1], B=8, N=7, P=5, layers=3)
