"""Answers to lesson 02's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, and returns the
finding, so the test can check it holds."""
from __future__ import annotations

import time

import torch

from _lesson import load


def try_1() -> dict:
    """Yes: without the division the scores are sqrt(d) = 8 times larger, and softmax turns that
    into far peakier rows. With this module's random weights, at N=64, the largest probability of a
    row goes from about 2 times the uniform 1/N (0.03) to about 27 times it (0.43), and the rows'
    entropy halves (4.1 -> 2.1 nats; uniform is ln 64 = 4.16)."""
    lesson = load("02")
    attn, x, keep = lesson.make_inputs(B=2, N=64)
    found = {}
    with torch.no_grad():
        for label, scale in (("1/sqrt(d)", None), ("1.0", 1.0)):
            _, probs = lesson.by_hand(attn, x, keep, scale=scale)  # [B, H, N, N]
            top = float(probs[0].max(-1).values.mean())
            entropy = float(-(probs[0] * probs[0].clamp_min(1e-30).log()).sum(-1).mean())
            found[label] = (top, entropy)
            print(f"scale {label:<9}: largest probability per row {top:.4f} on average "
                  f"(uniform {1 / 64:.4f}), entropy {entropy:.2f} nats")
    assert found["1.0"][0] > 5 * found["1/sqrt(d)"][0] and found["1.0"][1] < 0.75 * found["1/sqrt(d)"][1]
    return found


def try_2() -> torch.Tensor:
    """The output stays finite (no NaN): with every key masked, every score is the same most
    negative float, so softmax gives each key 1/N. Every query of that row then reads the plain
    mean of the values, so all N outputs of the row are one and the same vector:
    merge(mean of V per head) W_O + b_O. Without the mask the row's outputs differ per query."""
    lesson = load("02")
    attn, x, keep = lesson.make_inputs(B=2, N=24)
    keep[0] = False  # batch row 0: all padding
    H, d = attn.num_heads, attn.head_dim
    with torch.no_grad():
        masked = attn(x, keep=keep).out[0]  # [N, D]
        open_ = attn(x).out[0]  # [N, D]
        _, _, v = attn.project(x[:1])  # [1, H, N, d]
        mean_v = v.mean(dim=2).reshape(1, H * d)  # [1, H*d]: each head's mean value, heads side by side
        expected = mean_v @ attn.output.weight + attn.output.bias  # [1, D]
    print(f"fully masked row: finite {bool(torch.isfinite(masked).all())}, "
          f"spread of its outputs over the queries {float((masked - masked[0]).abs().max()):.1e}, "
          f"distance to mean-of-values projected {float((masked - expected).abs().max()):.1e}")
    print(f"the same row without the mask: spread over the queries {float((open_ - open_[0]).abs().max()):.2f}")
    assert torch.isfinite(masked).all()
    assert torch.allclose(masked, expected.expand_as(masked), atol=1e-5)
    assert (open_ - open_[0]).abs().max() > 1e-2
    return masked


def try_3() -> dict:
    """The second call (explicit path) returns probabilities of B*H*N*N floats: 2*12*512*512*4
    bytes = 25.2 MB at B=2, N=512, which the fused kernel never builds. The fused call is usually
    the faster one as well, but the ratio depends on the CPU and on what else runs on it, so the
    times are printed for this run and not asserted; the outputs agree to float rounding."""
    lesson = load("02")
    attn, x, keep = lesson.make_inputs(B=2, N=512)
    times = {}
    with torch.no_grad():
        for label, kw in (("fused", {}), ("explicit", {"need_weights": True})):
            attn(x, keep=keep, **kw)  # warm up
            start = time.perf_counter()
            for _ in range(3):
                out = attn(x, keep=keep, **kw)
            times[label] = (time.perf_counter() - start) / 3
            if label == "explicit":
                probs = out.probs
            else:
                fused = out.out
    nbytes = probs.numel() * probs.element_size()
    print(f"on this run: fused {times['fused'] * 1e3:.0f} ms, explicit {times['explicit'] * 1e3:.0f} ms per call")
    print(f"probabilities {list(probs.shape)}: {nbytes:,} bytes ({nbytes / 1e6:.1f} MB)")
    assert nbytes == 2 * 12 * 512 * 512 * 4
    assert (out.out - fused).abs().max() < 1e-5
    return {"bytes": nbytes, **times}


def try_4() -> dict:
    """The output keeps one row per query, [B, N, D] = [2, 24, 768]; the probabilities get the
    prefix's keys in front of the N real ones, [B, H, N, P+N] = [2, 12, 24, 29], and each row still
    sums to 1 over all P+N keys. Queries decide the rows, keys and values what there is to look at."""
    lesson = load("02")
    attn, x, _ = lesson.make_inputs(B=2, N=24)
    B, H, d, P = 2, attn.num_heads, attn.head_dim, 5
    pk, pv = torch.randn(B, H, P, d), torch.randn(B, H, P, d)  # [B, H, P, d] each
    with torch.no_grad():
        out, probs, _ = attn(x, prefix=(pk, pv), need_weights=True)
    print(f"out {list(out.shape)}, probs {list(probs.shape)}")
    assert out.shape == (2, 24, 768) and probs.shape == (2, 12, 24, 29)
    assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
    return {"out": tuple(out.shape), "probs": tuple(probs.shape)}


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
