"""Answers to lesson 13's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, asserts the
finding, and returns it, so the test fails if the answer stops being true."""
from __future__ import annotations


import torch
import torch.nn.functional as F

from _lesson import cli, load


def try_1() -> dict:
    """MiniLM's position table has 512 rows. With P=20, positions="real" accepts N=512 (real
    tokens keep 0..511); positions="shifted" accepts N=492 = 512 - P, and refuses 493 with a
    message that names the shift."""
    from minigpt_ptv2 import BertEncoder
    from minigpt_ptv2.pretrained import default_model_dir
    from minigpt_ptv2.prompts import KVPrefix
    model = BertEncoder.from_pretrained(default_model_dir()).eval()
    limit, P = model.config.max_position_embeddings, 20
    longest = {}
    with torch.no_grad():
        for policy in ("real", "shifted"):
            model.attach(KVPrefix(model.config, P, positions=policy))
            n = limit - model.prompt.position_offset()
            model(torch.randint(1000, 2000, (1, n)))  # fits
            try:
                model(torch.randint(1000, 2000, (1, n + 1)))
                raise AssertionError(f"N={n + 1} must not fit under positions={policy!r}")
            except ValueError as e:
                print(f"positions={policy!r:9}: N={n} runs; N={n + 1}: {e}")
            longest[policy] = n
    assert longest == {"real": 512, "shifted": 492}
    return longest


def try_2() -> float:
    """The gap between eps=1e-12 and eps=1e-5 is about eps / (2 var) times the normalised
    value, so it grows as the rows shrink: it passes 1e-5 for rows of std about 1.1 and below
    (1.5e-5 at std 1, 1.5e-3 at std 0.1, of order 1 at std 0.001)."""
    torch.manual_seed(0)
    h = torch.randn(4, 24)  # the rows of layer_norm_eps_gap, at std 1
    scales = torch.logspace(1, -3, 81).tolist()  # 10 down to 0.001
    gap = {s: float((F.layer_norm(h * s, (24,), eps=1e-12) - F.layer_norm(h * s, (24,), eps=1e-5)).abs().max())
           for s in scales}
    first = next(s for s in scales if gap[s] > 1e-5)
    for s in (10.0, first, 1.0, 0.1, 0.001):
        nearest = min(scales, key=lambda x: abs(x - s))
        print(f"std {nearest:7.3f}: max |diff| {gap[nearest]:.1e}")
    print(f"the gap first exceeds 1e-5 at std {first:.2f}")
    assert 0.5 < first < 2.0 and gap[scales[-1]] > 0.1
    return first


def try_3() -> dict:
    """The soft prompt has no `inject` row (it joins the input once: `shallow.prompt`); the deep
    prompt has one per layer, L = 3 on bert-tiny. A prompt "at every layer" shows as L inject rows."""
    counts = {}
    for method in ("soft", "deep"):
        out = cli("trace", "--method", method, "--config", "bert-tiny", "--B", "2", "--N", "5", "--P", "3")
        rows = [line.split()[0] for line in out.splitlines() if line.strip()]
        counts[method] = sum(r.endswith(".inject") for r in rows)
        print(f"--method {method}: {counts[method]} inject rows, shallow.prompt rows: {rows.count('shallow.prompt')}")
    assert counts == {"soft": 0, "deep": 3}
    return counts


def try_4() -> dict:
    """Only B = 1 and B = P+N = 10 run: broadcasting lines [B, P+N] up with the scores' last two
    axes [P+N, P+N], so B must be 1 or equal the number of query rows. Both run silently and
    mask the wrong thing (pads down-weighted by e at B = 1; at B = 10, example i's mask lands on
    query i of every example)."""
    found = load("07").two_d_mask_mistake(P=4, N=6, batches=range(1, 13))
    runs = [B for B, what in found.items() if what != "raises"]
    print(f"runs for B in {runs}; raises for the other {len(found) - len(runs)}")
    assert runs == [1, 10]
    return found


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
