"""Bad input fails early, with a message that names the problem.

A prompt built for another model, an empty prompt, a prompt in the wrong dtype or on the wrong
device: each must raise a clear error, never broadcast or cast silently.
"""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2 import GPT2Decoder, BertEncoder, preset
from minigpt_ptv2.prompts import (METHODS, DeepPrompt, KVPrefix, PTuningV1, SoftPrompt,
                                  make_method)

P = 3
MODELS = {"encoder": ("bert-tiny", BertEncoder), "decoder": ("gpt2-tiny", GPT2Decoder)}


def _small(name: str) -> dict:
    return {"hidden": 8} if name in ("ptuning-mlp", "ptuning-lstm", "deep-mlp", "prefix-mlp") else {}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    cfg_name, cls = MODELS[request.param]
    return cls(preset(cfg_name)).eval()


def _ids(model, B=2, N=5):
    return torch.randint(1, model.config.vocab_size, (B, N))


# --- a prompt built for another config ----------------------------------------------------------

OTHER = {  # (change to the config, what the message must name)
    "D": ({"hidden_size": 32}, r"D: prompt 32 vs model 24"),
    "L": ({"num_hidden_layers": 2}, r"L: prompt 2 vs model 3"),
    "H": ({"num_attention_heads": 8}, r"H: prompt 8 vs model 4"),
}


@pytest.mark.parametrize("dim", sorted(OTHER))
@pytest.mark.parametrize("name", sorted(METHODS))
def test_prompt_for_another_config_is_refused_at_attach(model, name, dim):
    change, message = OTHER[dim]
    other = model.config.replace(**change)
    method = make_method(name, other, P, **_small(name))
    with pytest.raises(ValueError, match=rf"built for another config \(.*{message}"):
        model.attach(method)
    assert model.prompt is None  # nothing half-attached


def test_attach_takes_only_prompt_methods(model):
    with pytest.raises(TypeError, match="PromptMethod"):
        model.attach(torch.nn.Linear(3, 3))


# --- P = 0 and other impossible sizes -----------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -2, 2.0, None])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_prompt_length_must_be_a_positive_int(name, bad):
    with pytest.raises(ValueError, match=r"num_virtual \(P\) must be a positive int"):
        make_method(name, preset("bert-tiny"), bad, **_small(name))


def test_unknown_method_and_policy_are_named():
    cfg = preset("bert-tiny")
    with pytest.raises(ValueError, match="unknown prompt method 'prefx'"):
        make_method("prefx", cfg, P)
    with pytest.raises(ValueError, match="positions must be one of"):
        KVPrefix(cfg, P, positions="left")
    with pytest.raises(ValueError, match="encoder must be 'mlp' or 'lstm'"):
        PTuningV1(cfg, P, encoder="gru")


@pytest.mark.parametrize("shape", [(P + 1, 24), (P, 23), (24,), (1, P, 24)])
def test_soft_prompt_init_of_the_wrong_shape_is_refused(shape):
    with pytest.raises(ValueError, match=rf"init has shape \[.*\], expected \[P={P}, D=24\]"):
        SoftPrompt(preset("bert-tiny"), P, init=torch.zeros(shape))


def test_soft_prompt_init_of_the_right_shape_is_used():
    init = torch.arange(P * 24, dtype=torch.float32).view(P, 24)
    assert torch.equal(SoftPrompt(preset("bert-tiny"), P, init=init).weight, init)


def test_soft_prompt_from_text_needs_tokens(model):
    with pytest.raises(ValueError, match="at least one token id"):
        SoftPrompt.from_text(model, [])


@pytest.mark.parametrize("shape", [(2, 2, 4, P, 6), (3, 2, 2, P, 12), (3, 2, 4, P, 6, 1), (3, 4, P, 6)])
def test_from_layer_kv_refuses_a_table_for_another_model(shape):
    """bert-tiny has L=3, H=4, d=6. [3, 2, 2, P, 12] holds as many numbers per layer (H*d = D)
    and used to be accepted silently, heads scrambled; now every axis is checked."""
    with pytest.raises(ValueError, match=r"kv shape .* expected \[L=3, 2, H=4, P, d=6\]"):
        KVPrefix.from_layer_kv(preset("bert-tiny"), torch.zeros(shape))


def test_from_layer_kv_keeps_each_layer_head_and_position_in_place():
    cfg = preset("bert-tiny")
    kv = torch.randn(3, 2, 4, P, 6)  # [L, 2, H, P, d]
    assert torch.equal(KVPrefix.from_layer_kv(cfg, kv).layer_kv(), kv)  # copied in, rearranged back: exact


# --- dtype and device: never a silent cast -----------------------------------------------------

@pytest.mark.parametrize("model_dtype,prompt_dtype", [(torch.float64, torch.float32),
                                                      (torch.float32, torch.float64)])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_prompt_in_another_dtype_is_refused_by_name(model, name, model_dtype, prompt_dtype):
    method = make_method(name, model.config, P, **_small(name)).to(prompt_dtype)
    model.to(model_dtype)
    try:
        model.attach(method)
        with pytest.raises(ValueError, match=rf"{prompt_dtype}.*{model_dtype}"):
            model(_ids(model))
    finally:
        model.detach_prompt()
        model.float()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_model_to_after_attach_moves_the_prompt_too(model, name):
    """The fix the error message suggests: attach first, then .to(...) converts both."""
    model.attach(make_method(name, model.config, P, **_small(name)))
    try:
        model.double()
        out = model(_ids(model))
        assert (out.last_hidden_state if isinstance(model, BertEncoder) else out.logits).dtype == torch.float64
    finally:
        model.detach_prompt()
        model.float()


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["soft", "deep", "prefix"])
def test_prompt_on_another_device_is_refused_by_name(model, name):
    method = make_method(name, model.config, P)  # stays on the CPU
    model.cuda()
    try:
        model.attach(method)
        with pytest.raises(ValueError, match=r"cpu.*cuda|cuda.*cpu"):
            model(_ids(model).cuda())
    finally:
        model.detach_prompt()
        model.cpu()


def test_deep_prompt_dtype_mismatch_names_the_layer():
    model = BertEncoder(preset("bert-tiny")).eval().double()
    model.attach(DeepPrompt(model.config, P))
    with pytest.raises(ValueError, match=r"hidden prompt of layer 0 is torch.float32"):
        model(_ids(model))
