"""Answers to lesson 08's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, and returns the
finding, so the test can check it holds."""
from __future__ import annotations

import torch

from _lesson import cli, letters, load

BATCHES, REPEAT = (1, 8, 32, 128), 3  # the batch sizes try_3 measures, and how often


def try_1() -> dict:
    """P+N = 148 long: `mask.keys`, `k_with_prefix` / `v_with_prefix` [B, H, P+N, d] and the last
    axis of the scores and probs [B, H, N, P+N]. N = 128 long: everything the real tokens own,
    `embeddings.out`, q, k, v, context, `attn.out`, `layer0.out`, `final.last_hidden_state`; the
    query axis of the scores too. Missing compared with lesson 07: `deep.prompts`, `layer0.prompt`,
    `layer0.inject` and `layer0.slice`; in their place `prefix.table` [P, L*2*D], `prefix.kv`
    [L, 2, H, P, d] and `prefix_k` / `prefix_v` [B, H, P, d]."""
    out = cli(*"trace --method prefix --B 16 --N 128 --P 20 --config bert-base --num-layers 3 --layers 0".split())
    prefix = letters(out)
    deep = load("07").trace_example(B=2, N=16, P=4, pad=0).names()  # lesson 07's rows (the sizes do not matter)
    deep = {n for n in deep if not n.startswith(("layer1.", "layer2."))}  # layer 0, as in the CLI's table
    deep |= {"layer0.attn.scores", "layer0.attn.probs"}  # lesson 07 runs the fused path, which skips these two
    long = sorted(n for n, s in prefix.items() if "P+N" in s.strip("[]").split(", "))
    short = sorted(n for n, s in prefix.items() if "N" in s.strip("[]").split(", "))
    missing, new = sorted(deep - set(prefix)), sorted(set(prefix) - deep)
    print(f"P+N long: {', '.join(long)}\nN long:   {', '.join(short)}")
    print(f"deep prompt rows missing here: {', '.join(missing)}\nnew here: {', '.join(new)}")
    assert {"layer0.attn.k_with_prefix", "layer0.attn.scores", "mask.keys"} <= set(long)
    assert {"layer0.attn.q", "layer0.out", "final.last_hidden_state"} <= set(short) and "layer0.attn.q" not in long
    assert missing == ["deep.prompts", "layer0.inject", "layer0.prompt", "layer0.slice"]
    assert {"prefix.table", "prefix.kv", "layer0.attn.prefix_k"} <= set(new)
    return {"P+N": long, "N": short, "missing": missing, "new": new}


def try_2() -> dict:
    """It still moves, by less: about 0.24 here, against 0.395 with all four entries left zero and
    0 with all masked. The two unmasked zero keys still take exp(0) of attention each. In fact a
    half-masked zero prefix of P=4 is a zero prefix of P=2 (the same output, to rounding): masked
    entries are gone, the others count one by one."""
    from minigpt_ptv2 import BertEncoder, preset
    from minigpt_ptv2.prompts import KVPrefix
    torch.manual_seed(0)
    cfg = preset("bert-tiny")
    B, N, P = 2, 8, 4  # zero_is_not_off's sizes
    model = BertEncoder(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    L, H, d = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.head_dim
    with torch.no_grad():
        plain = model(ids).last_hidden_state  # [B, N, D]
        zero = KVPrefix.from_layer_kv(cfg, torch.zeros(L, 2, H, P, d))
        zero.virtual_keep[: P // 2] = False  # mask only half the prefix entries
        half = model.attach(zero)(ids).last_hidden_state
        two = model.attach(KVPrefix.from_layer_kv(cfg, torch.zeros(L, 2, H, P // 2, d)))(ids).last_hidden_state
        model.detach_prompt()
    moved = (half - plain).abs().max().item()
    full = load("08").zero_is_not_off(B, N, P)["zero"]
    print(f"half masked: max |diff| from no prefix = {moved:.3f} (all zero: {full:.3f}); "
          f"same as a zero prefix of P={P // 2}: max |diff| = {(half - two).abs().max():.1e}")
    assert 1e-2 < moved < full and torch.allclose(half, two, atol=1e-6)
    return {"half masked": moved, "all zero": full}


def try_3() -> dict:
    """At B=128 per row spends 128 times the MLP FLOPs (50.3 GFLOP instead of 0.39) and 128 times
    the memory (180 MiB instead of 1.4 MiB): both grow linearly with B, and so, roughly, does its
    time (printed for the run, not asserted). Repeat takes the same 180 MiB with once's FLOPs;
    once + expand stays at 0.39 GFLOP and 1.4 MiB for every B."""
    rows = load("08").once_vs_per_row(BATCHES, repeat=REPEAT)
    B, flops, mem, _, _ = rows[-1]
    assert B == 128 and flops["per row"] == 128 * flops["once + expand"] and flops["repeat"] == flops["once + expand"]
    assert mem["per row"] == mem["repeat"] == 128 * mem["once + expand"]
    return {"flops": flops, "memory": mem}


def try_4() -> dict:
    """prefix trains 368,640 numbers (the [20, 18432] table); prefix-mlp 9,864,704: the MLP adds
    9,496,064 (an Embedding(P, D), Linear(768, 512) and Linear(512, 18432), with biases), 27 times
    the table. After training `for_inference()` keeps only the table it produces: 368,640 again."""
    from minigpt_ptv2 import preset
    from minigpt_ptv2.prompts import KVPrefix
    out = cli("params", "--methods", "prefix", "prefix-mlp")
    print(out.strip())
    counts = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in out.splitlines()
              if line.startswith("prefix")}
    inference = KVPrefix(preset("bert-base"), 20, projection=True).for_inference().num_trainable()
    print(f"the MLP adds {counts['prefix-mlp'] - counts['prefix']:,}; for_inference() keeps {inference:,}")
    assert counts == {"prefix": 368_640, "prefix-mlp": 9_864_704} and inference == counts["prefix"]
    return {**counts, "for_inference": inference}


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
