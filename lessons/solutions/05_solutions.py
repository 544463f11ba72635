"""Answers to lesson 05's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, and returns the
finding, so the test can check it holds."""
from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from _lesson import cli, load

STEPS = 50  # new tokens decoded in try_2


def try_1() -> torch.Tensor:
    """Only column 0 changes: it becomes 0 in every query row, so no token may attend to the
    masked prefix entry. The other prefix column stays all ones and the causal triangle over the
    tokens is untouched: a key mask removes keys, for every query at once."""
    from minigpt_ptv2.core.masks import build_keep
    P, N = 2, 5
    key_mask = torch.ones(1, P + N, dtype=torch.bool)  # [B, P+N]
    before = build_keep(key_mask, N, causal=True)[0, 0]  # [N, P+N]
    key_mask[:, 0] = False
    after = build_keep(key_mask, N, causal=True)[0, 0]  # [N, P+N]
    for row in after.int().tolist():
        print("   " + " ".join(str(v) for v in row))
    changed = (before != after).nonzero().tolist()
    print(f"changed entries (query, key): {changed}")
    assert not after[:, 0].any() and after[:, 1].all() and torch.equal(after[:, 1:], before[:, 1:])
    return after


def try_2() -> dict:
    """With N=16 and 50 new tokens, decoding without the cache feeds 16 + 17 + ... + 65 = 2,025 rows
    through the model, with it 16 + 49 = 65: 31 times fewer rows. The FLOPs drop about 16 times, not
    31, because both ways run the tied head (D x V = 768 x 50,257) once per step on one row. The tokens
    are the same. The time drops much less than the FLOPs (about 1.8 times on one busy thread here):
    a one-row step does little arithmetic but still reads every weight, the 154 MB head included, so
    it is bound by memory, not by FLOPs (on a machine busy enough, two threads make it slower still).
    So the time is printed, not asserted; the rows and FLOPs are."""
    lesson = load("05")
    from minigpt_ptv2 import preset
    torch.manual_seed(0)
    model = lesson.random_gpt2(preset("gpt2").replace(num_hidden_layers=4))
    N, steps = 16, STEPS
    ids = torch.randint(0, model.config.vocab_size, (1, N))  # [B, N]
    found = {}
    with torch.no_grad():
        for use_cache in (True, False):
            with lesson.RowCounter() as rows, FlopCounterMode(display=False) as flops:
                t = time.perf_counter()
                out = model.generate(ids, steps, use_cache=use_cache)
                seconds = time.perf_counter() - t
            found[use_cache] = dict(tokens=out, rows=rows.rows, flops=flops.get_total_flops(), seconds=seconds)
            print(f"use_cache={use_cache!s:5}: {rows.rows:5,} rows, {flops.get_total_flops() / 1e9:6.1f} GFLOP, "
                  f"{seconds:.2f} s on this run")
    assert torch.equal(found[True]["tokens"], found[False]["tokens"])
    assert found[False]["rows"] == sum(N + t for t in range(steps)) and found[True]["rows"] == N + steps - 1
    assert found[False]["flops"] > 5 * found[True]["flops"]
    return found


def try_3() -> list[str]:
    """The prefix rows: `prefix_k` / `prefix_v` [B, H, P, d] and `k_with_prefix` / `v_with_prefix`
    [B, H, P+N, d] in every layer, exactly where the cached step has its cache [B, H, T, d] and
    [B, H, T+1, d]: a K/V prefix is a cache of T = P entries. The difference is the queries:
    N rows (`q` [B, H, N, d], scores [B, H, N, P+N]) instead of one."""
    out = cli(*"trace --model decoder --config gpt2-tiny --method prefix --B 2 --N 5 --P 3".split())
    rows = [line for line in out.splitlines()
            if line.startswith(("layer0.attn.prefix", "layer0.attn.k_with", "layer0.attn.v_with",
                                "layer0.attn.q ", "layer0.attn.scores"))]
    print("\n".join(rows))
    spelled = {line.split()[0]: line.split("  ")[-1].strip() for line in rows}
    assert spelled["layer0.attn.prefix_k"] == "[B, H, P, d]"
    assert spelled["layer0.attn.k_with_prefix"] == "[B, H, P+N, d]"
    assert spelled["layer0.attn.scores"] == "[B, H, N, P+N]"
    return rows


def try_4() -> dict:
    """mask.keep is [B, 1, 2, T+2] and layer 0's scores are [B, H, 2, T+2]: two query rows, each
    scored against the T cached keys and the two new ones. The mask is causal again: the first new
    token sees the T cached keys and itself (T+1 ones), not the second new token; the second sees
    all T+2. That is why feeding a chunk of tokens with a cache (chunked prefill) needs a mask,
    while a single new token does not."""
    from minigpt_ptv2 import ShapeTrace, preset
    from minigpt_ptv2.trace import dims_for
    lesson = load("05")
    B, N = 5, 7
    torch.manual_seed(0)
    cfg = preset("gpt2-tiny")
    model = lesson.random_gpt2(cfg)
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    with torch.no_grad():
        out = model(ids, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
        two = torch.cat([nxt, nxt], 1)  # [B, 2]
        dims = {**dims_for(cfg, B=B), "T": N, "T+2": N + 2}
        with ShapeTrace(dims=dims, layers=(0,), keep=("mask.keep",)) as tr:
            model(two, past=out.cache, output_attentions=True)
    shapes = tr.shapes()
    keep = tr.tensors["mask.keep"][0, 0]  # [2, T+2]
    print(f"mask.keep {list(shapes['mask.keep'])} = {tr.letters(shapes['mask.keep'], 'mask.keep')}, "
          f"scores {list(shapes['layer0.attn.scores'])} = {tr.letters(shapes['layer0.attn.scores'])}")
    print(f"first new token sees {int(keep[0].sum())} keys, the second {int(keep[1].sum())}; "
          f"first may attend to the second: {bool(keep[0, -1])}")
    assert shapes["mask.keep"] == (B, 1, 2, N + 2) and shapes["layer0.attn.scores"] == (B, 4, 2, N + 2)
    assert not keep[0, -1] and int(keep[0].sum()) == N + 1 and keep[1].all()
    return {"mask.keep": shapes["mask.keep"], "scores": shapes["layer0.attn.scores"]}


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
