"""A prompt holding NaN or infinity is refused by name before it can turn every output into NaN
(PromptMethod.check_finite), and the check's policy off the CPU is what its docstring says: it
runs again only when the parameters changed, and not during a training step."""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2 import BertEncoder, preset
from minigpt_ptv2.errors import NonFiniteError
from minigpt_ptv2.core import prompt_method as base
from minigpt_ptv2.prompts import KVPrefix, make_method

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = preset("bert-tiny")


def _ids():
    return torch.randint(0, CFG.vocab_size, (2, 5))


@pytest.mark.parametrize("name", ["soft", "ptuning-mlp", "ptuning-lstm", "deep", "deep-mlp", "prefix", "prefix-mlp"])
def test_one_nan_parameter_is_refused_for_every_method(name):
    kw = {"hidden": 8} if name in ("ptuning-mlp", "ptuning-lstm", "deep-mlp", "prefix-mlp") else {}
    method = make_method(name, CFG, 3, **kw)
    model = BertEncoder(CFG, method).eval()
    with torch.no_grad():
        assert torch.isfinite(model(_ids()).last_hidden_state).all()
        pname, p = next(iter(method.named_parameters()))
        p.view(-1)[0] = float("nan")
        with pytest.raises(NonFiniteError, match=rf"{type(method).__name__} .* holds .*NaN.*'{pname}' holds 1 NaN"):
            model(_ids())


def test_without_the_check_the_nan_spreads_to_every_output():
    """Why the check exists: one NaN in one layer's prefix reaches every row and every token."""
    method = KVPrefix(CFG, 3)
    model = BertEncoder(CFG, method).eval()
    with torch.no_grad():
        method.embedding.weight[1, 0] = float("nan")
    method.check_finite = lambda *a, **k: None  # switched off on this instance only
    with torch.no_grad():
        out = model(_ids()).last_hidden_state  # [B, N, D]
    assert torch.isnan(out).all()


def test_off_the_cpu_it_reruns_only_when_the_parameters_changed(monkeypatch):
    """CHECK_EVERY_FORWARD emptied: the CPU follows the policy for other devices."""
    monkeypatch.setattr(base, "CHECK_EVERY_FORWARD", set())
    method = KVPrefix(CFG, 3)
    model = BertEncoder(CFG, method).eval()
    calls = []
    real_isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: calls.append(1) or real_isfinite(t))
    with torch.no_grad():
        model(_ids())
        first = len(calls)
        model(_ids())
        assert first > 0 and len(calls) == first  # unchanged parameters: not checked again
        method.embedding.weight.data[0, 0] = float("nan")  # .data does not bump _version: unseen
        model(_ids())
        method.embedding.weight[0, 1] = float("nan")  # an in-place update does
        with pytest.raises(NonFiniteError, match="KVPrefix prefix K of layer 0 holds 2 NaN"):
            model(_ids())
    method.embedding.weight.data.zero_()
    method.embedding.weight.data[0, 0] = float("nan")
    n = len(calls)
    model(_ids())  # grad enabled, trainable prompt: a training step, left to the finite-loss check
    assert len(calls) == n
