"""Answers to lesson 15's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, and returns the
finding, so the test can check it holds."""
from __future__ import annotations


import torch

from _lesson import cli, load


def try_1() -> int:
    """k_repeated: the keys of the H_kv=2 K/V heads widened to H=4, so each K/V head is read by
    H / H_kv = 2 query heads (heads 0 and 1 read K/V head 0, heads 2 and 3 read K/V head 1)."""
    out = cli(*"trace --config llama-tiny --method prefix --B 2 --N 6 --P 4 --layers 0".split())
    row = next(line for line in out.splitlines() if line.startswith("layer0.attn.k_repeated"))
    k = next(line for line in out.splitlines() if line.startswith("layer0.attn.k "))
    print(k, row, sep="\n")
    H, H_kv = 4, 2
    assert "[B, H, P+N, d]" in row and "[B, H_kv, N, d]" in k
    return H // H_kv


def try_2() -> str:
    """GPT-2 has learned positions, added once to the embeddings: there is no rotation to apply to
    a prefix key, so the model refuses rotate_keys=True by name."""
    from minigpt_ptv2 import GPT2Decoder, preset
    from minigpt_ptv2.prompts import KVPrefix
    cfg = preset("gpt2-tiny")
    try:
        GPT2Decoder(cfg).attach(KVPrefix(cfg, 4, rotate_keys=True))
    except ValueError as e:
        print(e)
        return str(e)
    raise AssertionError("GPT-2 accepted a prefix that asks to be rotated")


def try_3() -> dict:
    """The soft prompt (P*D = 32,768) trains the fewest. Under grouped K/V heads a K/V prefix row
    is L*2*H_kv*d = 16,384 wide, a quarter of L*2*D, while a deep prompt is L*D = 32,768 per row:
    the prefix is half the deep prompt. On BERT-base (H_kv = H, so H_kv*d = D) it is L*2*D, twice."""
    from minigpt_ptv2.models.presets import preset
    from minigpt_ptv2.prompts import parameter_report
    llama = {r["method"]: r["trainable"] for r in parameter_report(preset("llama-1b"), 16)}
    bert = {r["method"]: r["trainable"] for r in parameter_report(preset("bert-base"), 16)}
    print(f"llama-1b: soft {llama['soft']:,}, deep {llama['deep']:,}, prefix {llama['prefix']:,}")
    print(f"bert-base: deep {bert['deep']:,}, prefix {bert['prefix']:,}")
    assert min(llama, key=llama.get) == "soft"
    assert llama["prefix"] * 2 == llama["deep"] and bert["prefix"] == 2 * bert["deep"]
    return llama


def try_4() -> dict:
    """Under rotate_keys=False the prefix keys score like keys at position 0; "shifted" moves the
    real tokens P further away from them. The gap is there from P=1 on, and here it grows with P
    (about 2.7, 7.8 and 9.7 for P = 1, 4, 16): the further the shift, the more every score against
    the prefix turns."""
    from minigpt_ptv2.prompts import KVPrefix
    model = load("15").tiny_llama()
    torch.manual_seed(6)
    ids = torch.randint(1, model.config.vocab_size, (2, 12))
    gaps = {}
    for P in (1, 4, 16):
        outs = []
        for positions in ("real", "shifted"):
            torch.manual_seed(2)
            with torch.no_grad():
                outs.append(model.attach(KVPrefix(model.config, P, init_std=1.0, positions=positions))(ids).logits)
        model.detach_prompt()
        gaps[P] = float((outs[0] - outs[1]).abs().max())
        print(f"P={P:2d}: real vs shifted logits differ by {gaps[P]:.3f}")
    assert all(g > 1e-2 for g in gaps.values())
    return gaps


def try_5() -> dict:
    """Rows of zeros make K_p = 0 and V_p = 0 (the LLaMA-style projections have no biases), so the
    gated read is g * softmax(0) @ 0 = 0 whatever the gate: the model stays the frozen one, bit for
    bit on the fused path, to float rounding on the explicit one (it sums [gated | tokens] in one
    product, in another order). Section 7's joined zero prefix moved the logits by several units:
    there, zero KEYS take weight from the real keys; here the prefix's own softmax takes nothing
    from them, and zero VALUES add nothing."""
    from minigpt_ptv2.prompts import GatedPrefix
    model = load("15").tiny_llama(layers=3)
    torch.manual_seed(6)
    ids = torch.randint(1, model.config.vocab_size, (2, 12))  # [B, N], the lesson's batch
    gated = GatedPrefix(model.config, 4)
    gaps = {}
    with torch.no_grad():
        gated.rows.zero_()  # [L, P, D]
        gated.gates.fill_(1.0)  # [L]: every gate wide open
        for explicit in (False, True):
            frozen = model(ids, output_attentions=explicit).logits  # [B, N, V]
            out = model.attach(gated)(ids, output_attentions=explicit).logits
            model.detach_prompt()
            gaps["explicit" if explicit else "fused"] = float((out - frozen).abs().max())
            if not explicit:
                assert torch.equal(out, frozen)
    print(f"zero rows, gates at 1: logits max |diff| from the frozen model, fused {gaps['fused']:.1e}, "
          f"explicit {gaps['explicit']:.1e}")
    assert gaps["explicit"] < 1e-4  # logits of size ~10 summed in another order: fp32 rounding, ~1e-5
    return gaps


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
