"""Starting a prompt from a real text (prompts/from_tokens.py, train --init tokens).

Each method must hold, before any training, exactly what the frozen model makes of the text:
the soft prompt the tokens' word embeddings, the deep prompt every layer's input rows, the K/V
prefix every layer's keys and values of those rows. The last two are then one prompt two ways
(the bridge), which the outputs check end to end."""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2 import BertEncoder, GPT2Decoder
from minigpt_ptv2.core.capture import Capture
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.models import build
from architectures import ARCHS
from minigpt_ptv2.models.presets import preset
from minigpt_ptv2.prompts import make_method
from minigpt_ptv2.prompts.from_tokens import layer_inputs
from minigpt_ptv2.training.tasks import start_text

from tolerances import FP32_KERNELS, FP32_ULPS

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.py
P = 5


class Rows(Capture):
    def __init__(self):
        self.rows = {}

    def add(self, name, tensor):
        self.rows[name] = tensor.detach().clone()


@pytest.fixture(params=["bert-tiny", "gpt2-tiny"])
def model(request):
    cfg = preset(request.param)
    return (BertEncoder if request.param.startswith("bert") else GPT2Decoder)(cfg).eval()


def text(model):
    ids = torch.randint(5, model.config.vocab_size, (1, P + 2))  # [1, P+2]: a start, P tokens, an end
    return ids, slice(1, P + 1)


def started(model, name):
    """A method `name` started from a random text, and every capture point of the plain model's
    own forward pass over that text (what the method must hold), with the text's rows."""
    ids, rows = text(model)
    with Rows() as seen:
        model(ids)
    method = make_method(name, model.config, P)
    method.start_from_text(model, ids, rows)
    return method, seen.rows, rows


def test_prefix_holds_the_keys_and_values_each_layer_computed_for_the_text(model):
    prefix, seen, rows = started(model, "prefix")
    for i, (k, v) in enumerate(prefix.kv_prefix(1)):  # [1, H, P, d] each
        scope = f"layer{i}.attn"
        # The same projection of the same rows, alone instead of inside the whole text: a few ulps.
        torch.testing.assert_close(k, seen[f"{scope}.k"][:, :, rows], rtol=0, atol=FP32_ULPS)
        torch.testing.assert_close(v, seen[f"{scope}.v"][:, :, rows], rtol=0, atol=FP32_ULPS)


def test_deep_prompt_holds_every_layers_input_rows(model):
    deep, seen, rows = started(model, "deep")
    inputs = ["embeddings.out"] + [f"layer{i}.out" for i in range(model.config.num_hidden_layers - 1)]
    for i, name in enumerate(inputs):
        assert torch.equal(deep.prompts[i], seen[name][0, rows])  # copied: EXACT


def test_soft_prompt_holds_the_tokens_word_embeddings(model):
    ids, rows = text(model)
    soft = make_method("soft", model.config, P)
    soft.start_from_text(model, ids, rows)
    assert torch.equal(soft.weight, model.input_embeddings().weight[ids[0, rows]])


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_deep_and_prefix_started_from_one_text_give_the_same_outputs(arch):
    """The bridge end to end: the deep prompt's rows and the prefix's K/V are the same prompt
    (under RoPE too: the prefix's keys are turned to the prompt rows' positions, as the bridge does)."""
    model = build(ARCHS[arch].tiny).eval()
    ids, rows = text(model)
    batch = torch.randint(5, model.config.vocab_size, (3, 9))  # [B, N]
    outs = []
    for name in ("deep", "prefix"):
        method = make_method(name, model.config, P)
        method.start_from_text(model, ids, rows)
        model.attach(method)
        out = model(batch)
        outs.append(out.last_hidden_state if isinstance(model, BertEncoder) else out.logits)
        model.detach_prompt()
    # Two code paths through L layers (inject-process-slice vs concatenated K/V): FP32_KERNELS.
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=FP32_KERNELS)


def test_layer_inputs_leave_training_mode_and_refuse_an_attached_prompt(model):
    ids, rows = text(model)
    model.train()
    h = layer_inputs(model, ids, rows)
    assert model.training and h.shape == (model.config.num_hidden_layers, P, model.config.hidden_size)
    model.attach(make_method("prefix", model.config, P))
    with pytest.raises(InputError, match="plain backbone"):
        layer_inputs(model, ids, rows)


@pytest.mark.parametrize("name", ["prefix-mlp", "deep-mlp", "ptuning-mlp"])
def test_methods_behind_an_mlp_say_they_start_from_noise(model, name):
    ids, rows = text(model)
    with pytest.raises(InputError, match="--init random"):
        make_method(name, model.config, P).start_from_text(model, ids, rows)


def test_a_text_with_another_number_of_rows_is_refused(model):
    ids, _ = text(model)
    with pytest.raises(InputError, match="P=5 virtual entries but the text gives 3 rows"):
        make_method("prefix", model.config, P).start_from_text(model, ids, slice(1, 4))


class Tok:
    cls_id, sep_id, pad_id = 101, 102, 0


def test_start_text_is_the_first_P_word_pieces_of_the_training_rows():
    rows = [[101, 7, 8, 102, 0], [101, 9, 102], [101, 10, 11, 12, 102]]
    ids, where = start_text(rows, Tok, 5)
    assert ids.tolist() == [[101, 7, 8, 9, 10, 11, 102]] and where == slice(1, 6)
    with pytest.raises(InputError, match="only 6 word pieces"):
        start_text(rows, Tok, 7)
