"""Answers to lesson 10's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, and returns the
finding, so the test can check it holds."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from _lesson import load


def _first_batch(lesson, n: int = 8, batch_size: int = 8):
    from minigpt_ptv2.data import WordPiece, sst2_or_sample
    from minigpt_ptv2.training import set_seed
    set_seed(0)
    train, dev, _ = sst2_or_sample(None, n, 8)
    tok = WordPiece.from_model_dir()
    train_loader, dev_loader = lesson.loaders(tok, train, dev, batch_size)
    return train_loader, dev_loader


def try_1() -> str:
    """`backbone` names it: model_type, D, L, H, H_kv, d, vocab_size, dtype and the fingerprint (a
    sha256 of every weight, one per tensor, and one of the tokenizer's files). With D changed to
    768, load_checkpoint refuses before touching any weight: "checkpoint was trained on a different backbone (D: checkpoint 768 vs
    model 384)"."""
    from minigpt_ptv2.errors import InputError
    from minigpt_ptv2.training import build_task_model, load_checkpoint
    lesson = load("10")
    P = 4
    model = build_task_model("sst2", "prefix", P)  # (untrained: training changes no field of the JSON)
    _, dev_loader = _first_batch(lesson)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "runs" / "lesson_10"  # the learner's runs/lesson_10, here inside a scratch folder
        lesson.save_and_reload(model, P, next(iter(dev_loader)), folder)
        meta_path = folder / "checkpoint.json"
        meta = json.loads(meta_path.read_text())
        fields = sorted(meta["backbone"])
        meta["backbone"]["D"] = 768
        meta_path.write_text(json.dumps(meta, indent=2))
        try:
            load_checkpoint(folder)
        except InputError as e:
            print(f"backbone fields: {fields}")
            print(f"load_checkpoint: {e}")
            assert "D: checkpoint 768 vs model 384" in str(e) and {"weights", "tensors", "tokenizer"} <= set(fields)
            return str(e)
    raise AssertionError("a checkpoint that names another backbone was loaded")


def try_2() -> dict:
    """Deep: P*L*D = 16*6*384 = 36,864 prompt numbers; soft: P*D = 16*384 = 6,144; the K/V prefix
    P*L*2*D = 73,728. Each adds the same head, 770. So on MiniLM the prefix trains twice the deep
    prompt and twelve times the soft one."""
    from minigpt_ptv2.models import load_pretrained
    from minigpt_ptv2.pretrained import default_model_dir
    from minigpt_ptv2.training import build_task_model
    encoder = load_pretrained(default_model_dir(), expect="bert")
    counts = {}
    for method in ("prefix", "deep", "soft"):
        model = build_task_model("sst2", method, 16, encoder=encoder)
        trained = [(n, p.numel()) for n, p in model.named_parameters() if p.requires_grad]
        prompt = sum(k for n, k in trained if n.startswith("encoder.prompt."))
        head = sum(k for n, k in trained if n.startswith("heads."))
        counts[method] = prompt
        print(f"{method:<7}: prompt {prompt:>7,} + head {head} trainable")
    assert counts == {"prefix": 16 * 6 * 2 * 384, "deep": 16 * 6 * 384, "soft": 16 * 384}
    return counts


def try_3() -> dict:
    """Adam moves every entry by about the learning rate per step, whatever the gradient's size,
    so after 5 steps the table has moved about 30 times less at lr=1e-3 than at 3e-2 (a few
    hundredths vs a few thousandths per entry), against entries of size about 0.8 (N(0, 1) at
    initialisation). At 1e-3 a short run barely leaves where it started: prompts need big steps."""
    from minigpt_ptv2.training import TrainConfig, build_task_model, fit, set_seed
    from minigpt_ptv2.models import load_pretrained
    from minigpt_ptv2.pretrained import default_model_dir
    lesson = load("10")
    train_loader, _ = _first_batch(lesson, n=40)  # 5 batches of 8
    encoder = load_pretrained(default_model_dir(), expect="bert")
    moved, size = {}, None
    for lr in (3e-2, 1e-3):
        set_seed(0)
        model = build_task_model("sst2", "prefix", 16, encoder=encoder)
        table = model.encoder.prompt.embedding.weight
        start = table.detach().clone()
        fit(model, train_loader, TrainConfig(epochs=1, lr=lr, seed=0, progress=False), task="sst2")
        moved[lr] = float((table.detach() - start).abs().mean())
        size = float(start.abs().mean())
        print(f"lr={lr:g}: {len(train_loader)} steps moved each entry by {moved[lr]:.4f} on average "
              f"(entries are {size:.2f} on average)")
    ratio = moved[3e-2] / moved[1e-3]
    print(f"ratio {ratio:.1f} (the learning rates' ratio is 30)")
    assert 15 < ratio < 45 and moved[1e-3] < 0.01 * size
    return moved


def try_4() -> dict:
    """A deep prompt's step is also about 2 of its own forward passes (backward through every
    layer, no weight gradients), but its forward is larger: every layer runs P+N rows instead of
    N, so on the same two sentences its step costs about (P+N)/N times the prefix's GFLOPs (about
    1.5 for P=16 on a batch padded to about 30 tokens: 1.58 vs (P+N)/N = 1.55 at N=29)."""
    from minigpt_ptv2.models import load_pretrained
    from minigpt_ptv2.pretrained import default_model_dir
    from minigpt_ptv2.training import build_task_model
    lesson = load("10")
    train_loader, _ = _first_batch(lesson)
    batch = {k: v[:2] for k, v in next(iter(train_loader)).items()}
    encoder = load_pretrained(default_model_dir(), expect="bert")
    gflops = {}
    for method in ("prefix", "deep"):
        model = build_task_model("sst2", method, 16, encoder=encoder)
        ratios = lesson.step_cost(model, batch, method)
        flops, _ = lesson.step_flops(model, batch, method)
        gflops[method] = flops / 1e9
        assert 1.8 < ratios[method] < 2.1
    N = int(batch["attention_mask"].shape[1])
    print(f"step GFLOPs: deep {gflops['deep']:.2f} vs prefix {gflops['prefix']:.2f} "
          f"(ratio {gflops['deep'] / gflops['prefix']:.2f}; (P+N)/N = {(16 + N) / N:.2f} for N = {N})")
    assert abs(gflops["deep"] / gflops["prefix"] - (16 + N) / N) < 0.1 * (16 + N) / N
    return gflops


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
