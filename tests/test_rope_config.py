"""Every RoPE spelling transformers 5 reads in a Llama config.json (models/rope.py lists what it
does with each): the ones we read give transformers' logits; the others are refused by name.

Each accepted case is checked against LlamaForCausalLM loaded from the same folder, over 40
positions, past llama3's original context (16) where that matters. Each refused case says what
transformers does with it instead, the reason for refusing rather than guessing."""
from __future__ import annotations

import json

import pytest
import torch

import reference as R
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.models import load_pretrained
from tolerances import FP32_KERNELS

pytestmark = pytest.mark.usefixtures("one_thread")

ROPE_KEYS = ("rope_parameters", "rope_scaling", "rope_theta", "partial_rotary_factor",
             "original_max_position_embeddings", "rope_type")
L3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}

READ = {  # config.json's RoPE fields -> what transformers computes (checked by the logits)
    "nothing (theta 10000)": {},
    "top-level rope_theta": {"rope_theta": 500.0},
    "rope_parameters": {"rope_parameters": {"rope_type": "default", "rope_theta": 500.0}},
    "rope_parameters without rope_type": {"rope_parameters": {"rope_theta": 500.0}},
    "rope_parameters with the older 'type'": {"rope_parameters": {"type": "default", "rope_theta": 500.0}},
    "theta at the top level only": {"rope_parameters": {"rope_type": "default"}, "rope_theta": 500.0},
    "theta in both, agreeing": {"rope_parameters": {"rope_type": "default", "rope_theta": 500.0}, "rope_theta": 500.0},
    "rope_scaling null beside rope_parameters": {"rope_scaling": None,
                                                 "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}},
    "rope_scaling {} beside rope_parameters": {"rope_scaling": {},
                                               "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}},
    "partial_rotary_factor 1": {"partial_rotary_factor": 1.0},
    "linear, legacy rope_scaling 'type'": {"rope_scaling": {"type": "linear", "factor": 2.0}},
    "linear, rope_scaling 'rope_type' + top theta": {"rope_scaling": {"rope_type": "linear", "factor": 2.0},
                                                     "rope_theta": 500.0},
    "linear, rope_parameters": {"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 100.0}},
    "linear, factor below 1": {"rope_parameters": {"rope_type": "linear", "factor": 0.5}},
    "rope_scaling and rope_parameters agreeing": {"rope_scaling": {"rope_type": "linear", "factor": 2.0},
                                                  "rope_parameters": {"type": "linear", "factor": 2.0}},
    "llama3, rope_parameters": {"rope_parameters": {**L3, "rope_theta": 500.0,
                                                    "original_max_position_embeddings": 16}},
    "llama3, legacy rope_scaling + top theta": {"rope_scaling": {**L3, "original_max_position_embeddings": 16},
                                                "rope_theta": 500.0},
    "llama3, original context from max_position_embeddings": {"rope_parameters": {**L3, "rope_theta": 500.0}},
    "llama3, original context at the top level": {"rope_parameters": {**L3, "rope_theta": 500.0},
                                                  "original_max_position_embeddings": 16},
}

REFUSED = [  # (config.json's RoPE fields, what transformers does instead, what our message names)
    ({"rope_scaling": {"type": "linear", "factor": 2.0},
      "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}},
     "reads rope_scaling, drops rope_parameters' theta 500 for 10000", "disagree"),
    ({"rope_scaling": {"rope_type": "default"}, "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}},
     "theta 10000: rope_parameters ignored", "disagree"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 500.0}, "rope_theta": 7.0},
     "theta 500, the top level's 7 ignored", "rope_theta is 500.0 there and 7.0 at the top level"),
    ({"rope_parameters": {"type": "linear", "rope_type": "default", "factor": 2.0}},
     "the plain RoPE: 'type' ignored", "type='linear' and rope_type='default'"),
    ({"partial_rotary_factor": 0.5}, "turns the whole head anyway", "partial_rotary_factor other than 1"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5}},
     "fails at the first forward pass", "partial_rotary_factor other than 1"),
    ({"rope_parameters": {"rope_type": "default", "factor": 2.0}}, "factor ignored",
     "factor is not used by rope_type 'default'"),
    ({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 500.0}}},
     "not nested for Llama: theta 10000", "full_attention is not used"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, "rescales with the sequence length",
     "rope_type 'dynamic' is not implemented"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 2.0}}, "also scales attention (1.069)",
     "rope_type 'yarn' is not implemented"),
    ({"rope_parameters": {"rope_type": "longrope", "short_factor": [1] * 5, "long_factor": [2] * 5}},
     "rescales with the sequence length", "rope_type 'longrope' is not implemented"),
    ({"rope_parameters": {"rope_type": "proportional"}}, "another frequency law",
     "rope_type 'proportional' is not implemented"),
    ({"rope_parameters": {"rope_type": "banana"}}, "KeyError", "rope_type 'banana' is not implemented"),
    ({"rope_parameters": {"rope_type": "linear"}}, "KeyError: factor missing", "missing ['factor']"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 0}}, "division by zero",
     "factor must be a finite number > 0"),
    ({"rope_parameters": {"rope_type": "linear", "factor": "2"}}, "TypeError", "factor must be a finite number"),
    ({"rope_parameters": {k: v for k, v in L3.items() if k != "low_freq_factor"}}, "KeyError",
     "missing ['low_freq_factor']"),
    ({"rope_parameters": {**L3, "low_freq_factor": 4.0}}, "a warning, then 0 / 0 in the blend",
     "high_freq_factor (4.0) must be above low_freq_factor (4.0)"),
    ({"rope_parameters": {**L3, "original_max_position_embeddings": 64}, "original_max_position_embeddings": 16},
     "the top level's 16", "original_max_position_embeddings is 64 there and 16 at the top level"),
    ({"rope_type": "linear"}, "ignored", "a top-level rope_type"),
    ({"original_max_position_embeddings": 16}, "ignored", "only matters to llama3's rescaled RoPE"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": None}}, "TypeError", "rope_theta is null"),
    ({"rope_scaling": "linear"}, "a validation error", "field 'rope_scaling' must be an object"),
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny random Llama (weights std 0.3, 64 positions) saved once; each case rewrites its config."""
    folder = R.hf_llama_tiny(tmp_path_factory.mktemp("llama"), seed=5, initializer_range=0.3)[1]
    return folder, json.loads((folder / "config.json").read_text())


def with_rope(saved, fields: dict):
    folder, config = saved
    config = {k: v for k, v in config.items() if k not in ROPE_KEYS}
    (folder / "config.json").write_text(json.dumps({**config, **fields}))
    return folder


@pytest.mark.parametrize("name", READ)
def test_each_spelling_we_read_gives_transformers_logits(saved, name):
    folder = with_rope(saved, READ[name])
    ids = torch.randint(3, 140, (2, 40), generator=torch.Generator().manual_seed(2))  # past position 16
    with torch.no_grad():
        ours, hf = load_pretrained(folder)(ids).logits, R.hf_llama(folder)(ids).logits
    assert (ours - hf).abs().max().item() <= FP32_KERNELS


def test_the_spellings_are_not_all_the_same_rope(saved):
    """The table above can fail: theta, the linear factor and llama3 each move the logits."""
    ids = torch.randint(3, 140, (1, 40), generator=torch.Generator().manual_seed(2))
    logits = {}
    for name in ("nothing (theta 10000)", "top-level rope_theta", "linear, legacy rope_scaling 'type'",
                 "llama3, rope_parameters"):
        with torch.no_grad():
            logits[name] = load_pretrained(with_rope(saved, READ[name]))(ids).logits
    values = list(logits.values())
    assert all((a - b).abs().max() > 1e-2 for i, a in enumerate(values) for b in values[i + 1:])


@pytest.mark.parametrize("fields, transformers_does, needle", REFUSED, ids=[str(r[0])[:60] for r in REFUSED])
def test_each_spelling_we_do_not_read_is_refused_by_name(saved, fields, transformers_does, needle):
    folder = with_rope(saved, fields)
    with pytest.raises(InputError) as info:
        load_pretrained(folder)
    assert needle in str(info.value) and "config.json" in str(info.value), str(info.value)


def test_save_pretrained_writes_the_rescaled_rope_back(saved, tmp_path):
    from minigpt_ptv2.models import save_pretrained
    folder = with_rope(saved, READ["llama3, legacy rope_scaling + top theta"])
    out = save_pretrained(load_pretrained(folder), tmp_path / "export")
    rope = json.loads((out / "config.json").read_text())["rope_parameters"]
    assert rope == {**L3, "original_max_position_embeddings": 16, "rope_theta": 500.0}
    ids = torch.randint(3, 140, (1, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (R.hf_llama(out)(ids).logits - R.hf_llama(folder)(ids).logits).abs().max().item() <= FP32_KERNELS
