"""The same input rules at every door of the API: BertEncoder.forward, GPT2Decoder.forward, generate, the
task heads, the tokenizer and the Predictor. Each row must be refused with an error of ours
(errors.UserError) naming the argument and the dtype, shape or value at fault, never an
IndexError or a RuntimeError from inside torch, and never a silent NaN: a prompt holding
non-finite values is refused by name (NonFiniteError) instead of turning every output into NaN.
"""
from __future__ import annotations

import pytest
import torch
from harness import Case, check

from minigpt_ptv2 import GPT2Decoder, BertEncoder, preset
from minigpt_ptv2.errors import InputError, InputTypeError, NonFiniteError
from minigpt_ptv2.prompts import DeepPrompt, KVPrefix, PTuningV1, SoftPrompt
from minigpt_ptv2.training.heads import Head, TaskModel, task_loss

pytestmark = pytest.mark.usefixtures("one_thread")

ENC, DEC = preset("bert-tiny"), preset("gpt2-tiny")  # V=120 / 130, 64 positions, D=24, L=3


def enc(prompt=None):
    return BertEncoder(ENC, prompt).eval()


def dec(prompt=None):
    return GPT2Decoder(DEC, prompt).eval()


def ids(V=120, B=2, N=5, dtype=torch.long):
    return torch.randint(0, V, (B, N)).to(dtype)


def with_value(t: torch.Tensor, index, value) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


def poisoned(method, name: str, index, value):
    """The method with one entry of its parameter `name` set to value (NaN, inf)."""
    with torch.no_grad():
        dict(method.named_parameters())[name][index] = value
    return method


def overflowing_deep():
    """A reparameterised DeepPrompt whose parameters are all finite but whose MLP output is not:
    every hidden unit is tanh(1) and every output weight 3e38, so each sum overflows float32."""
    method = DeepPrompt(ENC, 3, reparam=True)
    with torch.no_grad():
        method.mlp[0].weight.zero_()
        method.mlp[0].bias.fill_(1.0)
        method.mlp[2].weight.fill_(3e38)
    return method


def task_model(kind="token", prompt=None):
    return TaskModel(enc(prompt), {"t": Head(24, 9, kind)}).eval()


MODEL_CASES = [
    Case("uint8 ids, encoder", lambda t: enc()(ids(dtype=torch.uint8)), ["input_ids", "torch.uint8", ".long()"],
         InputTypeError),
    Case("uint8 ids, decoder", lambda t: dec()(ids(130, dtype=torch.uint8)), ["input_ids", "torch.uint8"],
         InputTypeError),
    Case("bool ids", lambda t: enc()(ids() > 3), ["input_ids", "torch.bool"], InputTypeError),
    Case("ids on meta", lambda t: enc()(torch.zeros(2, 5, dtype=torch.long, device="meta")),
         ["input_ids", "meta device", "[2, 5]"], InputError),
    Case("empty batch, encoder", lambda t: enc()(torch.zeros(0, 5, dtype=torch.long)),
         ["input_ids", "empty batch", "[0, 5]"], InputError),
    Case("empty batch, decoder", lambda t: dec()(torch.zeros(0, 5, dtype=torch.long)),
         ["input_ids", "empty batch", "[0, 5]"], InputError),
    Case("int mask holding 2", lambda t: enc()(ids(), with_value(torch.ones(2, 5, dtype=torch.long), (1, 2), 2)),
         ["attention_mask", "0/1", "like 2"], InputError),
    Case("additive int mask", lambda t: dec()(ids(130), with_value(torch.zeros(2, 5, dtype=torch.long), (0, 4),
                                                                   -10000)),
         ["attention_mask", "0/1", "-10000"], InputError),
    Case("complex mask", lambda t: enc()(ids(), torch.ones(2, 5, dtype=torch.complex64)),
         ["attention_mask", "torch.complex64"], InputTypeError),
    Case("float token types", lambda t: enc()(ids(), token_type_ids=torch.zeros(2, 5)),
         ["token_type_ids", "torch.float32"], InputTypeError),
    Case("uint8 token types", lambda t: enc()(ids(), token_type_ids=torch.zeros(2, 5, dtype=torch.uint8)),
         ["token_type_ids", "torch.uint8"], InputTypeError),
    Case("token types on meta", lambda t: enc()(ids(), token_type_ids=torch.zeros(2, 5, dtype=torch.long,
                                                                                   device="meta")),
         ["token_type_ids", "meta"], InputError),
    Case("negative position_ids", lambda t: dec()(ids(130), position_ids=with_value(torch.arange(5)[None], (0, 0), -1)),
         ["position_ids", "position -1", "[0, 64)"], InputError),
    Case("position_ids past the table", lambda t: dec()(ids(130), position_ids=torch.arange(60, 65)[None]),
         ["position_ids", "position 64", "[0, 64)"], InputError),
    Case("position_ids shape", lambda t: dec()(ids(130), position_ids=torch.zeros(2, 4, dtype=torch.long)),
         ["position_ids shape [2, 4]", "[B=2, N=5]"], InputError),
    Case("float position_ids", lambda t: dec()(ids(130), position_ids=torch.zeros(2, 5)),
         ["position_ids", "torch.float32"], InputTypeError),
    Case("position_ids as a list", lambda t: dec()(ids(130), position_ids=[[0, 1, 2, 3, 4]] * 2),
         ["position_ids", "list"], InputTypeError),
    Case("float labels", lambda t: dec()(ids(130), labels=torch.zeros(2, 5)), ["labels", "torch.float32"],
         InputTypeError),
    Case("label >= V", lambda t: dec()(ids(130), labels=with_value(ids(130), (1, 1), 130)),
         ["labels contains 130", "[0, 130)", "-100"], InputError),
    Case("label -5", lambda t: dec()(ids(130), labels=with_value(ids(130), (0, 3), -5)),
         ["labels contains -5"], InputError),
    Case("past not a cache", lambda t: dec()(ids(130), past=(torch.zeros(1), torch.zeros(1))),
         ["past", "KVCache", "tuple"], InputTypeError),
    Case("logits_to_keep -1", lambda t: dec()(ids(130), logits_to_keep=-1), ["logits_to_keep", "-1"], InputError),
]

GENERATE_CASES = [
    Case("generate: mask of 0.5", lambda t: dec().generate(ids(130), 2, attention_mask=torch.full((2, 5), 0.5)),
         ["attention_mask", "0/1", "0.5"], InputError),
    Case("generate: right padding", lambda t: dec().generate(
        ids(130), 2, attention_mask=torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])),
         ["attention_mask row 1", "[1, 1, 1, 0, 0]", "pad on the left"], InputError),
    Case("generate: a row with no real token", lambda t: dec().generate(
        ids(130), 2, attention_mask=torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])),
         ["attention_mask row 0", "no real token"], InputError),
    Case("generate: mask shape", lambda t: dec().generate(ids(130), 2, attention_mask=torch.ones(2, 4)),
         ["attention_mask shape [2, 4]", "[2, 5]"], InputError),
    Case("generate: uint8 ids", lambda t: dec().generate(ids(130, dtype=torch.uint8), 2),
         ["input_ids", "torch.uint8"], InputTypeError),
    Case("generate: id >= V", lambda t: dec().generate(with_value(ids(130), (0, 0), 130), 2),
         ["input_ids", "token id 130"], InputError),
    Case("generate: max_new_tokens=True", lambda t: dec().generate(ids(130), True), ["max_new_tokens", "True"],
         InputError),
    Case("generate: eos outside the vocabulary", lambda t: dec().generate(ids(130), 2, eos_token_id=130),
         ["eos_token_id", "[0, 130)", "130"], InputError),
    Case("generate: temperature NaN", lambda t: dec().generate(ids(130), 2, do_sample=True, temperature=float("nan")),
         ["temperature", "nan"], InputError),
]

HEAD_CASES = [
    Case("task_loss: float labels", lambda t: task_loss(torch.zeros(2, 5, 9), torch.zeros(2, 5)),
         ["labels", "torch.float32"], InputTypeError),
    Case("task_loss: label >= C", lambda t: task_loss(torch.zeros(2, 5, 9),
                                                      with_value(torch.zeros(2, 5, dtype=torch.long), (1, 4), 9)),
         ["labels contains 9", "[0, 9)"], InputError),
    Case("task_loss: sentence labels shape",
         lambda t: task_loss(torch.zeros(2, 3), torch.zeros(2, 5, dtype=torch.long)),
         ["labels shape [2, 5]", "[2]"], InputError),
    Case("TaskModel: task is not a name", lambda t: task_model()(ids(), task=0), ["task", "int"], InputTypeError),
    Case("TaskModel: uint8 ids", lambda t: task_model()(ids(dtype=torch.uint8)), ["input_ids", "torch.uint8"],
         InputTypeError),
]

NAN_CASES = [
    Case("NaN in a SoftPrompt", lambda t: enc(poisoned(SoftPrompt(ENC, 3), "weight", (1, 2), float("nan")))(ids()),
         ["SoftPrompt input prompt holds 1 NaN", "'weight' holds 1 NaN"], NonFiniteError),
    Case("NaN in a KVPrefix table", lambda t: enc(poisoned(KVPrefix(ENC, 4), "embedding.weight", (0, slice(0, 12)),
                                                           float("nan")))(ids()),
         ["KVPrefix prefix K of layer 0 holds 12 NaN", "'embedding.weight' holds 12 NaN"], NonFiniteError),
    Case("inf in a DeepPrompt", lambda t: enc(poisoned(DeepPrompt(ENC, 3), "prompts", (1, 0, 0), float("inf")))(ids()),
         ["DeepPrompt hidden prompt of layer 1 holds 1 infinite", "'prompts'"], NonFiniteError),
    Case("DeepPrompt MLP overflows", lambda t: enc(overflowing_deep())(ids()),
         ["DeepPrompt hidden prompt of layer 0 holds", "infinite", "parameters are finite", "overflowed"],
         NonFiniteError),
    Case("NaN in a PTuningV1 encoder", lambda t: enc(poisoned(PTuningV1(ENC, 3, hidden=8), "embedding.weight", (0, 0),
                                                              float("nan")))(ids()),
         ["PTuningV1 input prompt holds", "NaN", "'embedding.weight' holds 1 NaN"], NonFiniteError),
    Case("NaN prefix under generate", lambda t: dec(poisoned(KVPrefix(DEC, 2), "embedding.weight", (1, 5),
                                                             float("nan"))).generate(ids(130), 3),
         ["KVPrefix prefix", "NaN"], NonFiniteError),
]


@pytest.mark.parametrize("case", MODEL_CASES + GENERATE_CASES + HEAD_CASES + NAN_CASES, ids=str)
def test_refused_at_the_door(case, tmp_path):
    check(case, tmp_path)


# --- the Predictor and the tokenizer: the limits `train` enforces, and texts ---------------------

@pytest.fixture(scope="module")
def tok(minilm_dir):
    from minigpt_ptv2.data import WordPiece
    return WordPiece.from_model_dir(minilm_dir)


def predictor(tok, prompt=None, kind="token", **kw):
    """A Predictor over a tiny random encoder (64 positions) with the real vocabulary's tokenizer."""
    from minigpt_ptv2.training.predict import Predictor
    model = TaskModel(BertEncoder(ENC.replace(vocab_size=tok.vocab_size), prompt), {"t": Head(24, 9, kind)})
    task = "conll" if kind == "token" else "sst2"
    return Predictor(model, {"task": task, "train": {"max_length": 32}}, tok, **kw)


def predictor_cases(tok):
    shifted = KVPrefix(ENC.replace(vocab_size=tok.vocab_size), 4, positions="shifted")
    return [
        Case("max_length 2", lambda t: predictor(tok, max_length=2),
             ["max_length must leave room for [CLS], [SEP] and a token, got 2"], InputError),
        Case("max_length past the table", lambda t: predictor(tok, max_length=65),
             ["max_length 65 is more than the model can read", "64 rows", "64 or less"], InputError),
        Case("max_length past a shifted table", lambda t: predictor(tok, shifted, max_length=64),
             ["max_length 64", "4 of them taken by the prompt", "60 or less"], InputError),
        Case("max_length a float", lambda t: predictor(tok, max_length=32.0), ["max_length", "32.0"], InputTypeError),
        Case("stride as long as a window", lambda t: predictor(tok, stride=30), ["stride", "[0, 30)", "30"],
             InputError),
        Case("negative stride", lambda t: predictor(tok, stride=-1), ["stride", "-1"], InputError),
        Case("an empty text", lambda t: predictor(tok).predict(["John lives in Berlin", ""]), ["text 2 is empty"],
             InputError),
        Case("a whitespace-only text", lambda t: predictor(tok).predict([" \t "]),
             ["text 1 is empty (only whitespace)"], InputError),
        Case("a text that is not a string", lambda t: predictor(tok).predict(["fine", 3]), ["text 2 is a int"],
             InputTypeError),
        Case("one string, not a list", lambda t: predictor(tok, kind="sequence").predict("a fine film"),
             ["list of strings"], InputTypeError),
        Case("batch_size 0", lambda t: predictor(tok).predict(["fine"], batch_size=0),
             ["batch_size must be positive, got 0"], InputError),
        Case("tokenizer max_length 2", lambda t: tok.encode(["a fine film"], max_length=2),
             ["max_length must leave room for [CLS], [SEP] and a token, got 2"], InputError),
        Case("tokenizer window stride", lambda t: tok.word_windows([["a", "b"]], max_length=8, stride=6),
             ["stride", "[0, 6)"], InputError),
    ]


@pytest.mark.parametrize("row", range(13))
def test_predictor_refuses_at_the_door(row, tok, tmp_path):
    cases = predictor_cases(tok)
    assert len(cases) == 13
    check(cases[row], tmp_path)


def test_the_table_is_large_and_every_row_distinct(tok):
    rows = MODEL_CASES + GENERATE_CASES + HEAD_CASES + NAN_CASES + predictor_cases(tok)
    assert len(rows) >= 50 and len({r.id for r in rows}) == len(rows)


def test_the_refusals_run_before_any_work():
    """A right-padded row is refused whatever max_new_tokens is, even 0 (no forward at all)."""
    with pytest.raises(InputError, match="row 0"):
        dec().generate(ids(130, B=1), 0, attention_mask=torch.tensor([[1, 1, 1, 1, 0]]))
