"""Answers to lesson 07's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, and returns the
finding, so the test can check it holds."""
from __future__ import annotations

import math

import torch

from _lesson import cli, letters, load


def try_1() -> dict:
    """P+N = 148 rows: `mask.keys`, `layer0.inject`, q/k/v/context, `layer0.attn.out` and
    `layer0.out` (the layer runs on the prompt rows too). N = 128 rows: `embeddings.out` (before
    the first inject), `layer0.slice` and `final.last_hidden_state`. The only [L, P, D] is
    `deep.prompts` [3, 20, 768], every layer's prompt at once; each layer broadcasts its own as
    `layer0.prompt` [B, P, D]."""
    out = cli(*"trace --method deep --B 16 --N 128 --P 20 --config bert-base --num-layers 3 --layers 0".split())
    spelled = letters(out)
    rows = {k: sorted(n for n, s in spelled.items() if k in s.strip("[]").split(", "))
            for k in ("P+N", "N")}
    rows["[L, P, D]"] = [n for n, s in spelled.items() if s == "[L, P, D]"]
    for k, names in rows.items():
        print(f"{k:9s}: {', '.join(names)}")
    assert "layer0.inject" in rows["P+N"] and "layer0.attn.q" in rows["P+N"] and "layer0.out" in rows["P+N"]
    assert {"embeddings.out", "layer0.slice", "final.last_hidden_state"} <= set(rows["N"])
    assert rows["[L, P, D]"] == ["deep.prompts"]
    return rows


def try_2() -> list[str]:
    """`mask.keep` disappears (`mask.keys` stays, all True). With nothing padded, every query may
    attend to every key (the prompt columns are always kept), so `build_keep` returns None rather
    than an all-True mask: attention runs unmasked, and the fused kernel skips the mask entirely.
    The numbers are the same as with an all-True mask."""
    lesson = load("07")
    padded, plain = lesson.trace_example(B=2, N=16, P=4, pad=3), lesson.trace_example(B=2, N=16, P=4, pad=0)
    gone = [n for n in padded.names() if n not in plain.names()]
    print(f"rows recorded with pad=3 but not with pad=0: {gone}")
    assert gone == ["mask.keep"]
    return gone


def try_3() -> str:
    """Without the slice, layer 0's P+N rows go on, and layer 1 injects its P prompt rows in front:
    2P+N rows (28 with the tiny sizes here, P=4, N=20). The keep-mask was built once for P+N keys,
    so layer 1's attention refuses it: "attention mask shape mismatch: mask [B, 1, 1, P+N] but
    2P+N query rows and 2P+N key rows". (With nothing padded there is no mask to catch it, and the
    loop would run on to a wrong-sized [B, P+N, D] output: the mask check is the first alarm.)"""
    from minigpt_ptv2 import BertEncoder, preset
    from minigpt_ptv2.core.masks import build_keep
    from minigpt_ptv2.core.prompt_rows import keys_in_front
    from minigpt_ptv2.prompts import DeepPrompt
    torch.manual_seed(0)
    cfg = preset("bert-tiny")
    B, N, P = 2, 20, 4
    model = BertEncoder(cfg, prompt=DeepPrompt(cfg, P)).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)
    mask[-1, -3:] = 0
    prompts = model.prompt.layer_prompts()  # [L, P, D]  -- loop_by_hand, with the slice skipped once
    x = model.embeddings(ids, torch.zeros_like(ids), torch.arange(N).expand(B, N))  # [B, N, D]
    keep = build_keep(keys_in_front(mask.bool(), P), P + N)  # [B, 1, 1, P+N]
    rows = []
    try:
        with torch.no_grad():
            for i, layer in enumerate(model.layers):
                x = torch.cat([prompts[i].unsqueeze(0).expand(B, -1, -1), x], dim=1)  # inject
                rows.append(x.shape[1])
                x, _, _ = layer(x, keep=keep)  # process
                if i != 0:  # the exercise: no slice at layer 0
                    x = x[:, P:]
    except ValueError as e:
        message = str(e)
        print(f"rows entering each layer: {rows}; layer {len(rows) - 1} raises: {message}")
        assert rows == [P + N, 2 * P + N] and "mask shape mismatch" in message
        assert f"{2 * P + N} query rows" in message
        return message
    raise AssertionError("skipping the slice did not fail")


def try_4() -> dict:
    """It runs: [B, P+N] = [10, 10] broadcasts against the *last two* axes of the scores [B, H, P+N, P+N],
    so example q's padding row is added to query row q of every example, instead of example b's
    padding to every query of example b. Here every example is padded alike, so it computes the
    same down-weighting as B=1 (pads divided by e relative to kept keys; 0.085 of the attention on
    this draw instead of 0). With padding that differs per example it reads the wrong masks: give
    example 0 no padding at all and its last two keys are still down-weighted in query rows 1..9,
    which read examples 1..9's padding."""
    lesson = load("07")
    found = lesson.two_d_mask_mistake(batches=(16, 1, 10))
    assert found[16] == "raises" and isinstance(found[10], dict)
    assert 0 < found[10]["2-D"] < found[10]["none"] and found[10]["4-D"] == 0  # (and divided by e: asserted there)
    # What it computes, with padding that differs per example: example 0 has no padding at all.
    P, N, B = 4, 6, 10
    mask_2d = torch.ones(B, P + N)
    mask_2d[1:, -2:] = 0  # examples 1..9 pad their last two tokens, example 0 does not
    scores = torch.zeros(B, 1, P + N, P + N)
    wrong = (scores + mask_2d).softmax(-1)  # [B, 1, P+N, P+N]
    pad_share_ex0 = wrong[0, 0, :, -2:].sum(-1)  # per query row of example 0, which has no pads
    print(f"example 0 has no padding, yet its query rows 1..9 down-weight its last two keys: "
          f"{[round(v, 3) for v in pad_share_ex0.tolist()]}")
    assert math.isclose(pad_share_ex0[0], 0.2, rel_tol=1e-5)  # row 0 read example 0's mask: no pads, 2 of 10
    assert torch.allclose(pad_share_ex0[1:], torch.tensor(2 / (8 * math.e + 2)))  # rows 1..9: down-weighted
    return found


def try_5() -> dict:
    """Yes: the MLP writes one [P, L*D] table and `layer_prompts()` reshapes it to [L, P, D] =
    [12, 20, 768], so the layers see exactly what they saw before. But the trainable count grows
    from 184,320 to 7,693,056 (an Embedding(P, D), Linear(D, D) and Linear(D, L*D) with biases),
    about 42 times more, during training only: afterwards the [L, P, D] output is all that needs
    keeping."""
    from minigpt_ptv2 import preset
    from minigpt_ptv2.prompts import DeepPrompt
    cfg = preset("bert-base")
    P, D, L = 20, cfg.hidden_size, cfg.num_hidden_layers
    plain, mlp = DeepPrompt(cfg, P), DeepPrompt(cfg, P, reparam=True)
    shape = tuple(mlp.layer_prompts().shape)
    counts = {name: sum(p.numel() for p in m.parameters() if p.requires_grad)
              for name, m in (("plain", plain), ("reparam", mlp))}
    print(f"layer_prompts() {list(shape)}; trainable: plain {counts['plain']:,}, reparam {counts['reparam']:,} "
          f"({counts['reparam'] / counts['plain']:.0f}x)")
    assert shape == (L, P, D)
    assert counts["plain"] == L * P * D and counts["reparam"] == P * D + (D * D + D) + (D * L * D + L * D)
    return {"shape": shape, **counts}


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
