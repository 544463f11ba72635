"""Answers to lesson 01's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, and returns the
finding, so the test can check it holds."""
from __future__ import annotations


import torch

from _lesson import cli, load


def try_1() -> dict:
    """Every row changes its N axis (32 -> 48) except `final.pooler` [B, D], the one row without
    N: the pooler reads the [CLS] row only. The letters are the same in both tables; only the
    numbers move, which is the point of spelling shapes in letters."""
    lesson = load("01")
    a, b = lesson.trace_example(B=4, N=32), lesson.trace_example(B=4, N=48)
    changed = [n for (n, s), (_, t) in zip(a.rows, b.rows) if s != t]
    same = [n for (n, s), (_, t) in zip(a.rows, b.rows) if s == t]
    print(f"{len(changed)} rows change, for example {changed[:3]}; unchanged: {same}")
    assert a.names() == b.names() and same == ["final.pooler"]
    assert [a.letters(s, n) for n, s in a.rows] == [b.letters(s, n) for n, s in b.rows]
    return {"changed": changed, "same": same}


def try_2() -> dict:
    """(4, 12, 32, 64) reads [B, H, N, d]; (4, 768) is [B, D]; (4, 32, 3072) is [B, N, D_ff] (the
    trace knows the model's feed-forward width); a size no letter has stays a number: (7,) -> [7]."""
    tr = load("01").trace_example(B=4, N=32)
    shapes = [(4, 12, 32, 64), (4, 768), (4, 32, 3072), (7,)]
    spelled = {s: tr.letters(s) for s in shapes}
    for s, letters in spelled.items():
        print(f"{str(s):<18} -> {letters}")
    assert list(spelled.values()) == ["[B, H, N, d]", "[B, D]", "[B, N, D_ff]", "[7]"]
    return spelled


def try_3() -> dict:
    """MiniLM has D=384 and d=32 (H=12 as in BERT-base) and six layers. The command's table also
    has `attn.scores` and `attn.probs` [B, H, N, N] in every layer: the CLI takes the explicit
    attention path unless given --fused, while section 4's model ran the fused kernel, which never
    builds the probabilities."""
    out = cli("trace", "--method", "none", "--config", "minilm", "--B", "4", "--N", "24")
    print("\n".join(out.splitlines()[:12]))
    table = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()[2:] if line.strip()}
    assert table["layer0.attn.q"].split() == "[4, 12, 24, 32] [B, H, N, d]".split()
    assert table["layer5.out"].split() == "[4, 24, 384] [B, N, D]".split() and "layer6.out" not in table

    def per_layer(names):  # "layer3.attn.q" -> "attn.q"
        return {n.split(".", 1)[1] for n in names if n.startswith("layer")}
    extra = sorted(per_layer(table) - per_layer(load("01").trace_example(B=4, N=24).names()))
    print(f"rows in every layer of the command's table that section 4's lacks: {extra}")
    assert extra == ["attn.probs", "attn.scores"]
    return {"D": 384, "d": 32, "L": 6, "extra_rows": extra}


def try_4() -> dict:
    """`repeat(B, 1, 1)` makes real copies: stride (P*D, D, 1) = (15360, 768, 1) instead of expand's
    (0, 768, 1), and memory of its own (B*P*D*4 bytes) instead of the prompt's."""
    B, P, D = 16, 20, 768
    prompt = torch.randn(P, D)  # [P, D]
    expanded = prompt.unsqueeze(0).expand(B, -1, -1)  # [B, P, D], a view
    repeated = prompt.unsqueeze(0).repeat(B, 1, 1)  # [B, P, D], copies
    found = {"expand": (expanded.stride(), expanded.data_ptr() == prompt.data_ptr()),
             "repeat": (repeated.stride(), repeated.data_ptr() == prompt.data_ptr())}
    for name, (stride, shares) in found.items():
        print(f"{name:<6} stride {stride}, shares the prompt's memory: {shares}")
    assert found == {"expand": ((0, D, 1), True), "repeat": ((P * D, D, 1), False)}
    assert torch.equal(expanded, repeated)  # the same numbers, only the memory differs
    return found


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
