"""Decoders honour their config, both ways: the token ids a folder gives (config.json, or
generation_config.json when there is one) are what generate stops at and what save_pretrained
writes back; RoPE spellings we do not read are refused by name; sampling settings that cannot
work and prompts that do not fit are refused naming the real cause. Rows run on tiny GPT-2 and
LLaMA folders written by save_pretrained; tests/test_generation_config.py and
tests/test_rope_config.py check the same against transformers itself."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from harness import Case, check

from minigpt_ptv2 import GPT2Decoder, preset
from minigpt_ptv2.data.bpe import ByteLevelBPE
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.models import load_pretrained, save_pretrained
from minigpt_ptv2.models.llama import LlamaDecoder

pytestmark = pytest.mark.usefixtures("one_thread")

F = {}
IDS = torch.tensor([[5, 17, 33, 2 + 40]])  # [1, N]


@dataclass
class Row(Case):
    setup: Callable = lambda tmp: None


@pytest.fixture(scope="module", autouse=True)
def folders(tmp_path_factory):
    from test_train_lm import bpe
    root = tmp_path_factory.mktemp("decoders")
    torch.manual_seed(3)
    for name, model in (("gpt2", GPT2Decoder(preset("gpt2-tiny").replace(vocab_size=300))),
                        ("llama", LlamaDecoder(preset("llama-tiny").replace(vocab_size=300)))):
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)  # wide weights: greedy text wanders instead of repeating a token
        save_pretrained(model, root / name)
        bpe("gpt2").save(str(root / name / "tokenizer.json"))
        F[name] = root / name
    for name in ("gpt2", "llama"):  # what greedy decoding says with no eos: the rows pick their eos ids from it
        F[f"free {name}"] = load_pretrained(F[name]).generate(IDS, 6, eos_token_id=None)[0, 4:].tolist()
    ByteLevelBPE.from_model_dir(F["gpt2"]).encode("warm up")  # its \p{L} tables are built once, here
    F["free"] = F["free llama"]


def folder(name="llama", config=None, generation=None):
    """tmp/model: a copy of a tiny folder with config.json fields set (None: removed), and a
    generation_config.json when given."""
    def setup(tmp):
        out = tmp / "model"
        out.mkdir()
        for f in F[name].iterdir():
            (out / f.name).write_bytes(f.read_bytes())
        cfg = json.loads((out / "config.json").read_text())
        for k, v in (config or {}).items():
            cfg.pop(k) if v is None else cfg.update({k: v})
        (out / "config.json").write_text(json.dumps(cfg))
        (out / "generation_config.json").unlink(missing_ok=True)
        if generation is not None:
            (out / "generation_config.json").write_text(json.dumps(generation))
    return setup


def load(tmp):
    return load_pretrained(tmp / "model")


def stops_after(n_new: int, name: str = "llama"):
    """A row that works: greedy generate on tmp/model (a copy of `name`) stops after n_new tokens."""
    def run(tmp):
        out = load(tmp).generate(IDS, 6)[0, 4:].tolist()  # no eos argument: the model's own
        assert out == F[f"free {name}"][:n_new], (out, F[f"free {name}"])
    return run


def first_eos(tmp):
    """The config's eos ids: a list whose SECOND id is the text's 3rd token (the first never comes)."""
    return [299, F["free"][2]]


def with_eos(where: str):
    def setup(tmp):
        eos = first_eos(tmp)
        if where == "config.json":
            folder(config={"eos_token_id": eos})(tmp)
        else:  # generation_config.json wins over config.json whole, as in transformers
            folder(config={"eos_token_id": 298}, generation={"eos_token_id": eos})(tmp)
    return setup


def writes_back(tmp):
    out = save_pretrained(load(tmp), tmp / "export")
    for name in ("config.json", "generation_config.json"):
        assert json.loads((out / name).read_text())["eos_token_id"] == first_eos(tmp), name


PLAIN = {"rope_type": "default", "rope_theta": 500.0}

CASES = [
    # --- token ids: read with transformers' precedence, used, written back ---------------------------
    Row("eos a list in config.json: stops at its second id", stops_after(3), works=True, was="silent",
        setup=with_eos("config.json")),
    Row("generation_config.json's eos wins over config.json's", stops_after(3), works=True, was="silent",
        setup=with_eos("generation_config.json")),
    Row("save_pretrained writes the eos ids back", writes_back, works=True, was="silent",
        setup=with_eos("generation_config.json")),
    Row("API: generate's default eos is the model's own", stops_after(1, "gpt2"), works=True, was="silent",
        setup=lambda tmp: folder("gpt2", config={"eos_token_id": F["free gpt2"][0]})(tmp)),
    Row("generation_config.json: eos 'five'", load, ["generation_config.json", "'eos_token_id'", "'five'"],
        InputError, was="silent", setup=folder(generation={"eos_token_id": "five"})),
    Row("config.json: eos an empty list", load, ["config.json", "'eos_token_id'", "non-empty list"], InputError,
        was="silent", setup=folder(config={"eos_token_id": []})),
    Row("config.json: bos a list", load, ["config.json", "'bos_token_id'", "[1, 2]"], InputError, was="silent",
        setup=folder(config={"bos_token_id": [1, 2]})),
    Row("API: an eos id outside the vocabulary", lambda tmp: load(tmp).generate(IDS, 2, eos_token_id=[5, 300]),
        ["eos_token_id", "[0, 300)", "[5, 300]"], InputError, setup=folder()),

    # --- RoPE spellings we do not read ---------------------------------------------------------------
    Row("legacy rope_scaling beside rope_parameters", load, ["rope_scaling", "rope_parameters", "disagree"],
        InputError, was="silent",
        setup=folder(config={"rope_parameters": PLAIN, "rope_scaling": {"type": "linear", "factor": 2.0}})),
    Row("rope_theta at the top level and inside, disagreeing", load, ["rope_theta is 500.0 there and 9.0"],
        InputError, was="silent", setup=folder(config={"rope_parameters": PLAIN, "rope_theta": 9.0})),
    Row("partial_rotary_factor 0.5 (ignored by transformers' Llama)", load, ["partial_rotary_factor"], InputError,
        was="silent", setup=folder(config={"partial_rotary_factor": 0.5})),
    Row("rope_type at the top level", load, ["a top-level rope_type ('linear')"], InputError, was="silent",
        setup=folder(config={"rope_type": "linear"})),
    Row("rope_parameters nested by layer type", load, ["full_attention is not used"], InputError, was="silent",
        setup=folder(config={"rope_parameters": {"full_attention": PLAIN}})),
    Row("llama3 without low_freq_factor", load, ["rope_type 'llama3' takes", "missing ['low_freq_factor']"],
        InputError, setup=folder(config={"rope_parameters": {"rope_type": "llama3", "factor": 8.0,
                                                             "high_freq_factor": 4.0}})),
    Row("yarn", load, ["rope_type 'yarn' is not implemented"], InputError,
        setup=folder(config={"rope_parameters": {"rope_type": "yarn", "factor": 2.0}})),
    Row("legacy linear rope_scaling now reads", lambda tmp: load(tmp).generate(IDS, 2), works=True,
        setup=folder(config={"rope_parameters": None, "rope_scaling": {"type": "linear", "factor": 2.0}})),

    # --- config.json fields nothing here reads: named, never skipped ----------------------------------
    Row("config.json: a field no part of the package reads", load,
        ["config.json", "'final_logit_softcapping'", "not read by this package's llama model"], InputError,
        was="silent", setup=folder(config={"final_logit_softcapping": 30.0})),
    Row("GPT-2 config.json: embd_pdrop apart from resid_pdrop", load, ["embd_pdrop=0.3", "resid_pdrop"],
        InputError, was="silent", setup=folder("gpt2", config={"embd_pdrop": 0.3})),
    Row("config.json: attention_bias a string", load, ["config.json", "'attention_bias'", "true or false"],
        InputError, setup=folder(config={"attention_bias": "yes"})),

    # --- sampling settings and prompts that cannot work ------------------------------------------------
    Row("temperature inf with top_k 1", lambda tmp: load(tmp).generate(IDS, 2, do_sample=True, temperature=math.inf,
                                                                       top_k=1),
        ["temperature must be a finite number > 0", "inf"], InputError, was="silent", setup=folder()),
    Row("temperature 1e-45", lambda tmp: load(tmp).generate(IDS, 2, do_sample=True, temperature=1e-45),
        ["temperature=1e-45 is too small", "overflows float32"], InputError, was="escape", setup=folder()),
    Row("a prompt longer than the position table", lambda tmp: load(tmp).generate(torch.ones(1, 70).long(), 2),
        ["the prompt is 70 tokens long", "64 positions"], InputError, was="ugly", setup=folder()),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_decoder(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case.setup(tmp_path)
    check(case, tmp_path)
