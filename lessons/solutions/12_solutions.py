"""Answers to lesson 12's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, asserts the
finding, and returns it, so the test fails if the answer stops being true."""
from __future__ import annotations

import time

import torch

from _lesson import cli, load

from minigpt_ptv2 import preset
from minigpt_ptv2.prompts import KVPrefix

CONFIG = preset("gpt2").replace(num_hidden_layers=2)  # the lesson's section 0: GPT-2 shapes, 2 layers
P, N, STEPS = 16, 16, 8


def _section_0():
    """The lesson's section-0 sizes, its model and ids."""
    torch.manual_seed(1)
    ids = torch.randint(1, CONFIG.vocab_size, (2, N))  # [B, N]
    return load("12"), CONFIG, P, N, STEPS, ids


def try_1() -> dict:
    """Under positions="shifted" the prompt sits at P..P+N-1, so the cache's next position is
    P+N, not N. The tokens change: GPT-2 adds a learned position row to every token, and now each
    real token gets the row P further on, so the same weights compute a different function."""
    lesson, cfg, P, N, steps, ids = _section_0()
    found = {}
    for positions in ("real", "shifted"):
        model = lesson.model_with_prefix(cfg, P, positions=positions)
        with torch.no_grad():
            nxt = model(ids, use_cache=True, logits_to_keep=1).cache.next_position.tolist()
        tokens = model.generate(ids, steps)[:, N:]
        print(f"{positions:8s} next_position {nxt}, greedy tokens of row 0 {tokens[0].tolist()}")
        found[positions] = (nxt, tokens)
    assert found["real"][0] == [N, N] and found["shifted"][0] == [P + N, P + N]
    assert not torch.equal(found["real"][1], found["shifted"][1])
    return found


def try_2() -> dict:
    """With every prefix entry masked, the prefix keys are still in the cache (P+N entries after
    the prompt step) but no query may read them, so the model computes exactly the plain
    backbone: the same greedy tokens as after `detach_prompt()`."""
    lesson, cfg, P, N, steps, ids = _section_0()
    model = lesson.model_with_prefix(cfg, P)
    model.prompt.virtual_keep[:] = False
    with torch.no_grad():
        length = model(ids, use_cache=True, logits_to_keep=1).cache.length
    masked = model.generate(ids, steps)
    model.detach_prompt()
    plain = model.generate(ids, steps)
    print(f"cache length after the prompt step: {length} = P + N = {P} + {N}")
    print(f"masked prefix: {masked[0, N:].tolist()}; plain model: {plain[0, N:].tolist()}")
    assert length == P + N and torch.equal(masked, plain)
    return {"cache_length": length, "tokens": masked}


def try_3() -> dict:
    """Rows that enter the layers for 32 new tokens after a 16-token prompt: with the cache
    16 + 31 = 47 (the prompt, then one row per step; the 32nd token is returned, never fed);
    without it 16 + 17 + ... + 47 = 1,008, about 21 times more. The time gap is much smaller than
    the row gap (every step pays fixed costs, and the [D, V] head runs on one row per step either
    way), and on a busy machine it can even flip for a run; the times are printed as measured on
    this run, not asserted. Count the work, then time it."""
    from minigpt_ptv2 import ShapeTrace, preset
    lesson = load("12")
    cfg = preset("gpt2").replace(num_hidden_layers=2)
    model = lesson.model_with_prefix(cfg, 16)
    torch.manual_seed(1)
    ids = torch.randint(1, cfg.vocab_size, (2, 16))  # [B, N]
    model.generate(ids, 2)  # a warm-up, so that the first timed run does not pay for first-call costs
    found = {}
    for use_cache in (True, False):
        with ShapeTrace() as tr:
            start = time.perf_counter()
            model.generate(ids, 32, use_cache=use_cache)
            seconds = time.perf_counter() - start
        rows = sum(shape[1] for name, shape in tr.rows if name == "embeddings.out")
        found[use_cache] = rows
        print(f"use_cache={use_cache!s:5}: {rows:5,} token rows through the layers, {seconds:.2f} s on this run")
    assert found[True] == 16 + 31 and found[False] == sum(range(16, 48))
    return found


def try_4() -> dict:
    """mask.keys [B, P+N], mask.keep [B, 1, N, P+N] and every layer's k/v_with_prefix
    [B, H, P+N, d] (scores and probs [B, H, N, P+N]) carry P+N. The keep-mask has one row per
    query because a decoder is causal: query i may read all P prefix keys and real keys 0..i
    only, a different set for each i. An encoder's queries all read the same keys, so one row
    [B, 1, 1, P+N] is broadcast over them."""
    out = cli(*"trace --model decoder --config gpt2-tiny --method prefix --B 2 --N 5 --P 3".split())
    rows = [line for line in out.splitlines() if "P+N" in line]
    print("\n".join(rows[:6]))
    keep = next(line for line in rows if line.startswith("mask.keep"))
    assert "[2, 1, 5, 8]" in keep and "[B, 1, N, P+N]" in keep
    assert any(line.startswith("layer0.attn.k_with_prefix") for line in rows)
    return {"rows_with_P+N": len(rows), "keep": keep.split()[-4:]}


def try_5() -> dict:
    """positions="shifted" moves every row's real tokens to P..P+N-1, one shift for the whole
    batch: members with different P would each need their own, so MixedPrompts refuses them,
    naming both. With one shared P the shift is the same for every row and mixing works."""
    from minigpt_ptv2.errors import InputError
    from minigpt_ptv2.prompts.mixed import MixedPrompts
    lesson, cfg, P, N, steps, ids = _section_0()
    model = lesson.model_with_prefix(cfg, P, positions="shifted")
    short = KVPrefix(cfg, max(1, P // 3), init_std=0.5, positions="shifted").eval()
    try:
        MixedPrompts(cfg, {"long": model.prompt, "short": short})
        refused = None
    except InputError as e:
        refused = str(e)
    print(f"different P under 'shifted': {refused}")
    assert refused is not None and "share one P" in refused
    torch.manual_seed(7)
    other = KVPrefix(cfg, P, init_std=0.5, positions="shifted").eval()
    members = {"a": model.detach_prompt(), "b": other}
    rows = ["a", "b"]
    alone = {n: model.attach(m).generate(ids, steps) for n, m in members.items()}
    mixed = model.attach(MixedPrompts(cfg, members).use_rows(rows)).generate(ids, steps)
    same = all(torch.equal(mixed[i], alone[n][i]) for i, n in enumerate(rows))
    print(f"one shared P={P}: each row generates what its prefix generates alone: {same}")
    assert same
    return {"refused": refused, "same": same}


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
