"""Decoders honour their config both ways: bos / eos / pad ids (eos one or several) are read with
transformers' precedence (generation_config.json over config.json, a missing one None), greedy
generation stops a row at ANY eos id and fills it with pad exactly as transformers' generate does
(left padding included), and save_pretrained writes the ids back so transformers stops on our
export too. Sampling settings that cannot work are refused at the door, and a prompt longer than
the position table is blamed on the prompt."""
from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import reference as R
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.models import load_pretrained, save_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads cost more than they give

NEW = 12
V = 120


def hf_folder(path, arch: str):
    """A tiny random decoder with wide weights (std 0.3: greedy text wanders through the vocabulary)."""
    torch.manual_seed(7)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=24, n_layer=2, n_head=4, n_positions=48,
                                           initializer_range=0.3))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=48,
                                             initializer_range=0.3))
    model.save_pretrained(path)
    return path


def set_ids(folder, config: dict | None = None, generation: dict | None = None):
    """config.json's bos/eos/pad replaced by `config` (a key left out is absent); generation_config.json
    written with `generation`, or removed when None."""
    cfg = json.loads((folder / "config.json").read_text())
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        cfg.pop(k, None)
    cfg.update(config or {})
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "generation_config.json").unlink(missing_ok=True)
    if generation is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation))


def hf_model(folder):
    cls = GPT2LMHeadModel if json.loads((folder / "config.json").read_text())["model_type"] == "gpt2" \
        else LlamaForCausalLM
    return R.hf_llama(folder) if cls is LlamaForCausalLM else cls.from_pretrained(folder).eval()


def batch():
    """Three rows, left padded (lengths 6, 4, 2)."""
    ids = torch.randint(3, V, (3, 6), generator=torch.Generator().manual_seed(11))  # [B, N]
    mask = torch.ones_like(ids)
    mask[1, :2] = mask[2, :4] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def folder(request, tmp_path_factory):
    return hf_folder(tmp_path_factory.mktemp(request.param), request.param)


def eos_pair(folder):
    """Two ids the free greedy text reaches early: row 0's 3rd new token, row 1's 6th."""
    set_ids(folder)
    ids, mask = batch()
    free = hf_model(folder).generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False,
                                     eos_token_id=None, pad_token_id=0)
    return [int(free[0, 6 + 2]), int(free[1, 6 + 5])]


@pytest.mark.parametrize("where", ["config.json", "generation_config.json"])
def test_greedy_generation_stops_at_any_eos_id_as_transformers_does(folder, where):
    eos = eos_pair(folder)
    ids, mask = batch()
    # the ids where transformers' generate reads them: generation_config.json wins over config.json whole
    if where == "config.json":
        set_ids(folder, {"eos_token_id": eos, "bos_token_id": 1})
    else:
        set_ids(folder, {"eos_token_id": 5, "pad_token_id": 4}, {"eos_token_id": eos, "pad_token_id": 2})
    ours = load_pretrained(folder)
    assert ours.config.eos_ids == tuple(eos)
    want = hf_model(folder).generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False)
    got = ours.generate(ids, NEW, attention_mask=mask)  # default: the model's own eos ids
    assert torch.equal(got, want), f"ours {got[:, 6:].tolist()}\ntransformers {want[:, 6:].tolist()}"
    stopped = [bool(torch.isin(row[6:], torch.tensor(eos)).any()) for row in got]
    assert stopped[0] and stopped[1]  # each at its own eos id: the test can tell "any" from "the first"


def test_a_folder_without_eos_never_stops_as_in_transformers(folder):
    set_ids(folder)  # config.json without bos / eos / pad: transformers generates with none
    ours = load_pretrained(folder)
    assert (ours.config.bos_token_id, ours.config.eos_token_id, ours.config.pad_token_id) == (None, None, None)
    ids, mask = batch()
    want = hf_model(folder).generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False)
    assert want.shape[1] == 6 + NEW and torch.equal(ours.generate(ids, NEW, attention_mask=mask), want)


def test_save_pretrained_writes_the_ids_back_and_transformers_stops_on_the_export(folder, tmp_path):
    eos = eos_pair(folder)
    set_ids(folder, {"eos_token_id": 9}, {"bos_token_id": 1, "eos_token_id": eos, "pad_token_id": 3})
    out = save_pretrained(load_pretrained(folder), tmp_path / "export")
    for name in ("config.json", "generation_config.json"):
        saved = json.loads((out / name).read_text())
        assert (saved["bos_token_id"], saved["eos_token_id"], saved["pad_token_id"]) == (1, eos, 3), name
    ids, mask = batch()
    want = hf_model(folder).generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False)
    assert torch.equal(hf_model(out).generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False), want)
    assert (want[0, 6 + 3:] == 3).all()  # row 0 stopped at its 3rd new token at the latest, then pad


@pytest.mark.parametrize("value,needle", [
    ("five", "field 'eos_token_id' must be a token id"), ([], "a non-empty list"), (-1, "got -1"),
    ([2, True], "got [2, True]")])
def test_bad_token_ids_are_named_with_their_file(folder, value, needle):
    set_ids(folder, {}, {"eos_token_id": value})
    with pytest.raises(InputError, match="generation_config.json") as info:
        load_pretrained(folder)
    assert needle in str(info.value)
    set_ids(folder)


@pytest.mark.parametrize("temperature", [math.inf, -math.inf, math.nan, 0.0, -1.0])
def test_a_temperature_that_is_not_finite_and_positive_is_refused(folder, temperature):
    set_ids(folder)
    ours = load_pretrained(folder)
    with pytest.raises(InputError, match=r"temperature must be a finite number > 0"):
        ours.generate(batch()[0], 2, do_sample=True, temperature=temperature, top_k=1)


def test_a_temperature_so_small_the_logits_overflow_is_refused_naming_it(folder):
    set_ids(folder)
    ours = load_pretrained(folder)
    with pytest.raises(InputError, match=r"temperature=1e-45 is too small: a logit of .* overflows float32"):
        ours.generate(batch()[0], 2, do_sample=True, temperature=1e-45)
    ids = ours.generate(batch()[0], 4, do_sample=True, temperature=1e-3, top_k=1, eos_token_id=None)
    assert torch.equal(ids, ours.generate(batch()[0], 4, eos_token_id=None))  # top_k=1: greedy, at any temperature


def test_a_prompt_longer_than_the_position_table_is_named_as_such(folder):
    set_ids(folder)
    ours = load_pretrained(folder)
    ids = torch.randint(3, V, (1, 50))  # 48 positions
    with pytest.raises(InputError, match=r"the prompt is 50 tokens long, beyond the position table's 48 positions"):
        ours.generate(ids, 2)
