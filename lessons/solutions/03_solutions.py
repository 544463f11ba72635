"""Answers to lesson 03's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, and returns the
finding, so the test can check it holds."""
from __future__ import annotations


import torch

from _lesson import cli, load


def _model_and_ids():
    """Section 2's random-weight model with MiniLM's shapes and its [B, N] = [8, 64] ids (full mode)."""
    from minigpt_ptv2 import BertEncoder, preset
    torch.manual_seed(0)
    model = BertEncoder(preset("minilm")).eval()
    ids = torch.randint(0, model.config.vocab_size, (8, 64))  # [B, N]
    return model, ids


def try_1() -> float:
    """The assertion fails: with the tanh GELU, layer 0's output moves by about 2e-4 (1.7e-4 on
    this model) instead of 0. That is more than ten times the 1e-5 an equivalence test allows: the
    approximation is close, but not close enough to pass for BERT's erf GELU."""
    lesson = load("03")
    model, ids = _model_and_ids()
    with torch.no_grad():
        x, _ = lesson.embeddings_by_hand(model, ids)
        lesson.layer_by_hand(model, x)  # erf: passes
        try:
            lesson.layer_by_hand(model, x, approximate="tanh")
        except AssertionError as e:
            print(f"AssertionError: {e}")
            gap = float(str(e).split(" is ")[1].split()[0])
        else:
            raise AssertionError("the tanh GELU passed for the erf one")
    assert 1e-5 < gap < 1e-3
    return gap


def try_2() -> dict:
    """Without token type 0 the embeddings move by O(1) after the LayerNorm: about 2 on the
    lesson's random model (every table holds N(0, 1) numbers), and still about 1.4 on the pretrained
    MiniLM, whose row 0 has norm 0.48 against about 1.07 for a word vector. A whole D-vector is
    missing from every token: no tolerance hides that."""
    from minigpt_ptv2 import BertEncoder
    from minigpt_ptv2.errors import MissingFileError
    from minigpt_ptv2.pretrained import default_model_dir
    lesson = load("03")
    model, ids = _model_and_ids()
    gaps = {}
    with torch.no_grad():
        _, gaps["random"] = lesson.embeddings_by_hand(model, ids, with_token_type=False)
        try:
            pretrained = BertEncoder.from_pretrained(default_model_dir())
        except MissingFileError as e:
            print(f"no pretrained MiniLM here ({e}): only the random model")
        else:
            print("the same on the pretrained MiniLM:")
            _, gaps["pretrained"] = lesson.embeddings_by_hand(pretrained, ids, with_token_type=False)
    assert all(g > 0.5 for g in gaps.values())
    return gaps


def try_3() -> dict:
    """With --pad 2 the trace has `mask.keep` [B, 1, 1, N]; with --pad 0 that row is gone. The
    model builds a keep-mask only when something is masked: with no padding every key is kept,
    attention runs without a mask, and only `mask.keys` [B, N] (all True) is recorded."""
    def rows(pad: int) -> list[str]:
        out = cli("trace", "--method", "none", "--config", "bert-tiny", "--B", "2", "--N", "5", "--pad", str(pad))
        return [line.split()[0] for line in out.splitlines()[2:] if line.strip()], out
    (padded, out), (plain, _) = rows(2), rows(0)
    print("\n".join(out.splitlines()[:5]))
    gone = [r for r in padded if r not in plain]
    print(f"rows only with --pad 2: {gone}")
    assert gone == ["mask.keep"] and "[2, 1, 1, 5]  [B, 1, 1, N]" in out
    return {"gone": gone}


def try_4() -> float:
    """51.6% of MiniLM (11.7M of 22.7M parameters) is the word-embedding table, against 21.4% in
    BERT-base. The table is V x D with the same V = 30,522: it shrinks only with D (768 -> 384,
    half), while a layer shrinks with D^2 (a quarter) and MiniLM has 6 layers instead of 12. So a
    "trainable %" of a small model is measured against a total that is mostly a lookup table."""
    lesson = load("03")
    shares = lesson.where_the_parameters_are("minilm")
    assert 0.51 < shares["word table"] < 0.52 and 22e6 < shares["total"] < 23e6
    return shares["word table"]


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
