"""Answers to lesson 11's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, and returns the
finding, so the test can check it holds. They use the lesson's full-mode prefix (P=8) on the
pretrained MiniLM and its four sentences: no training, so quick and full mode agree."""
from __future__ import annotations

import torch

from _lesson import load

P = 8  # section 1's P in full mode


def _setup():
    from minigpt_ptv2.data import WordPiece
    lesson = load("11")
    model = lesson.backbone()
    tok = WordPiece.from_model_dir()
    return lesson, model, tok, tok.encode(lesson.SENTENCES)


def try_1() -> dict:
    """To both, in proportion to what they had. In layer 0 (whose inputs the prefix does not
    touch) it is exact: masking entries only removes terms from the softmax's sum, so the kept
    prefix entries and the tokens all grow by the same factor, and the ratio between them does
    not move (to 1e-7). Since the tokens held most, most of the freed weight goes to them (0.11 of
    a real token's attention on average, 0.03 to the kept entries). In later layers the inputs
    change too, so the split is only roughly the same. The mean prefix mass drops from 0.22 to
    0.13."""
    from minigpt_ptv2.viz import attention_maps
    lesson, model, tok, batch = _setup()
    maps = lesson.first_look(model, batch, P)
    model.prompt.virtual_keep[: P // 2] = False
    half = attention_maps(model, batch)
    q = maps.query_mask[:, None, :]  # [B, 1, N]: real query rows

    def split(probs):  # probs [B, H, N, P+N] -> (kept prefix share, tokens share), per real query row
        real = q.expand(probs.shape[:3])
        return probs[..., P // 2:P].sum(-1)[real], probs[..., P:].sum(-1)[real]

    (k0, t0), (k1, t1) = split(maps.real[0]), split(half.real[0])
    gap = float((k0 / t0 - k1 / t1).abs().max())
    last = [float((a / b).mean()) for a, b in (split(maps.real[-1]), split(half.real[-1]))]
    print(f"mean prefix mass: {maps.mass().mean():.3f} with all {P} entries, {half.mass().mean():.3f} with half masked")
    print(f"layer 0: freed attention to the kept entries {float((k1 - k0).mean()):.3f}, to the tokens "
          f"{float((t1 - t0).mean()):.3f}; kept/tokens ratio unchanged to {gap:.1e}")
    print(f"layer {maps.probs.shape[0] - 1}: kept/tokens ratio {last[0]:.3f} before, {last[1]:.3f} after")
    assert gap < 1e-4 and float((k1 - k0).min()) >= 0 and float((t1 - t0).min()) >= 0 and float((k1 - k0).mean()) > 0
    assert half.mass().mean() < maps.mass().mean()
    return {"layer0_ratio_gap": gap, "mass": (float(maps.mass().mean()), float(half.mass().mean()))}


def try_2() -> dict:
    """[CLS] leans on the prefix least in every sentence (averaged over layers, about 0.13 against
    0.2-0.3 for the words): as a query, [CLS] puts even more of its attention on the [CLS] sink
    than the words do, which leaves less for the prefix. [SEP] leans on it the most, in all four
    sentences (about 0.3)."""
    from minigpt_ptv2.viz import token_mass
    lesson, model, tok, batch = _setup()
    maps = lesson.first_look(model, batch, P)
    found = {}
    for row, sentence in enumerate(lesson.SENTENCES):
        tm = token_mass(maps, row).mean(0)  # [n]: mean over layers
        toks = tok.tokens(batch["input_ids"][row][maps.query_mask[row]])
        least, most = toks[int(tm.argmin())], toks[int(tm.argmax())]
        found[sentence] = (least, most)
        print(f"{sentence!r}: [CLS] {tm[0]:.2f}, [SEP] {tm[-1]:.2f}, words {tm[1:-1].min():.2f}..{tm[1:-1].max():.2f}"
              f" -> least {least}, most {most}")
    sink = maps.real[..., P]  # [L, B, H, N]: every query's share on the [CLS] key
    on_cls = sink[:, :, :, 0].mean()  # the [CLS] query's own
    words = torch.cat([sink[:, b, :, 1:int(n) - 1].flatten() for b, n in enumerate(maps.query_mask.sum(1))]).mean()
    print(f"share on the [CLS] key: the [CLS] query {on_cls:.2f}, the word queries {words:.2f} "
          f"(mean over layers and heads)")
    assert all(least == "[CLS]" for least, _ in found.values()) and all(most == "[SEP]" for _, most in found.values())
    assert on_cls > words
    return found


def try_3() -> dict:
    """It grows, but less than in proportion: about 0.03, 0.17 and 0.39 for P = 1, 8 and 32. Each
    zero key adds exp(0) = 1 to the softmax's sum, so in layer 0 a query gives the prefix exactly
    P / (P + Z), where Z is the sum of exp(score) over its real keys: the more entries, the less
    each new one adds (checked against the P=1 run to 1e-5)."""
    from minigpt_ptv2.prompts import KVPrefix
    from minigpt_ptv2.viz import attention_maps
    _, model, _, batch = _setup()
    masses, first = {}, {}
    for n in (1, 8, 32):
        zero = KVPrefix(model.config, n).eval()
        torch.nn.init.zeros_(zero.embedding.weight)
        maps = attention_maps(model.attach(zero), batch)
        masses[n] = float(maps.mass().mean())
        first[n] = maps.real[0][..., :n].sum(-1)[maps.query_mask[:, None, :].expand(maps.real.shape[1:4])]  # layer 0
    model.detach_prompt()
    Z = 1 / first[1] - 1  # per real query row and head, from P=1: m = 1 / (1 + Z)
    gaps = {n: float((first[n] - n / (n + Z)).abs().max()) for n in (8, 32)}
    for n, m in masses.items():
        check = f" (layer 0 = P/(P+Z) to {gaps[n]:.1e})" if n in gaps else ""
        print(f"zero prefix, P={n:2d}: mean mass {m:.3f}{check}")
    assert masses[1] < masses[8] < masses[32] < 32 * masses[1] and max(gaps.values()) < 1e-5
    return masses


def try_4() -> tuple[int, int]:
    """Layer 2 leans on [CLS] the most (about two thirds of a real token's attention, averaged
    over heads), and in it head 7 the most (about 0.9)."""
    from minigpt_ptv2.viz import attention_maps
    lesson, model, _, batch = _setup()
    parts = lesson.attention_parts(attention_maps(model, batch))  # [L, H, 5], no prefix
    cls = parts[..., 1]  # [L, H]
    layer = int(cls.mean(1).argmax())
    head = int(cls[layer].argmax())
    print("[CLS] share per layer: " + ", ".join(f"L{i} {v:.2f}" for i, v in enumerate(cls.mean(1).tolist())))
    print(f"most in layer {layer}: head {head} puts {cls[layer, head]:.2f} of its attention on [CLS]")
    assert (layer, head) == (2, 7)
    return layer, head


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
