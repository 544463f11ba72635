"""Answers to lesson 16's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, asserts the
finding, and returns it, so the test fails if the answer stops being true."""
from __future__ import annotations

import statistics

import torch

from _lesson import load

from minigpt_ptv2.data import load_sst2_sample
from minigpt_ptv2.data.bpe import ByteLevelBPE
from minigpt_ptv2.training.lm import load_decoder
from minigpt_ptv2.training.pretrain import decoder_dir
from minigpt_ptv2.training.steer import sample_sentences

SMALL_DECODER = False  # the test suite uses the quick runs' stand-in (lessons/_course.py: TINY_DECODER)
STEPS, N_DEV = 60, 100  # lesson 12's train_prefix steps; dev sentences of each label
JUDGE_STEPS = 30  # the lesson's judge


def _decoder():
    from _course import RUNS, TINY_DECODER
    folder = decoder_dir(RUNS / "decoder-tiny-16", TINY_DECODER, show_progress=False) if SMALL_DECODER \
        else decoder_dir(RUNS / "decoder")
    return load_decoder(folder), ByteLevelBPE.from_model_dir(folder)


def try_1() -> float:
    """The share of heads in 100 fair flips, 1,000 times over: its standard deviation is
    sqrt(0.25 / 100) = 0.05, the sampling noise of a share judged on 100 sentences."""
    g = torch.Generator().manual_seed(0)
    shares = torch.randint(0, 2, (1000, 100), generator=g).float().mean(1)  # [1000]
    sd = shares.std().item()
    print(f"sd of the share over 1,000 runs of 100 flips: {sd:.4f}; sqrt(0.25 / 100) = {0.05:.4f}")
    assert abs(sd - 0.05) < 0.005  # 1,000 runs estimate an sd to about 2 %: 0.001 here
    return sd


@torch.no_grad()
def _losses(decoder, tok, texts: dict) -> dict:
    from _course import sentence_batch
    out = {}
    for label, rows in texts.items():
        ids, mask, labels = sentence_batch(tok, rows, decoder.config.max_position_embeddings)  # [B, N]
        out[label] = decoder(ids, attention_mask=mask, labels=labels).loss.item()
    return out


def try_2() -> dict:
    """Two prefixes (lesson 12's train_prefix, same steps), one per label: each moves the loss of
    positive and negative dev sentences alike, so the gap loss(negative) - loss(positive) moves by
    a few hundredths of a nat at most, the same way for both. Neither prefers its own kind."""
    lesson = load("12")
    decoder, tok = _decoder()
    train = load_sst2_sample("train")
    dev = load_sst2_sample("dev")
    texts = {label: [e.text for e in dev if e.label == y][:N_DEV] for label, y in (("positive", 1), ("negative", 0))}
    base = _losses(decoder, tok, texts)
    gaps = {"none": base["negative"] - base["positive"]}
    for label, y in (("positive", 1), ("negative", 0)):
        lesson.train_prefix(decoder, tok, [e.text for e in train if e.label == y], P=10, steps=STEPS)
        loss = _losses(decoder, tok, texts)
        gaps[label] = loss["negative"] - loss["positive"]
        print(f"prefix on {label}: dev loss positive {loss['positive']:.4f}, negative {loss['negative']:.4f}; "
              f"gap {gaps[label]:+.4f} (no prefix {gaps['none']:+.4f})")
        decoder.detach_prompt()
    moved = {label: gaps[label] - gaps["none"] for label in ("positive", "negative")}
    assert all(abs(m) < 0.05 for m in moved.values()), moved  # a prefix that preferred its kind would move it far more
    return moved


def try_3() -> dict:
    """The judge gets obvious sentences right; on the decoder's sentences it still says something,
    but of text that is barely English its verdicts mean little."""
    from _course import quick_judge
    judge, accuracy = quick_judge(steps=JUDGE_STEPS)
    mine = ["a moving , beautifully acted and funny film .", "a dull , tedious and stupid mess ."]
    said = judge(mine)
    decoder, tok = _decoder()
    written = sample_sentences(decoder, tok, n=3, seed=0)
    for text, label in zip(mine + written, said + judge(written)):
        print(f"{label:8s} {text}")
    assert said == ["positive", "negative"], said
    return dict(zip(mine, said))
