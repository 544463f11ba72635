"""Initialising a soft prompt from the model's own vocabulary (SoftPrompt.from_vocab / from_text):
the rows are exact copies of word-embedding rows, reproducible, and the prompt is a trainable
fp32 Parameter of its own, never a view that would drag the frozen table along."""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2 import GPT2Decoder, BertEncoder
from minigpt_ptv2.models.presets import preset
from minigpt_ptv2.prompts import SoftPrompt, freeze_backbone


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.py


@pytest.fixture(params=["bert-tiny", "gpt2-tiny"])
def model(request):
    cfg = preset(request.param)
    return (BertEncoder if request.param.startswith("bert") else GPT2Decoder)(cfg).eval()


def table_of(model) -> torch.Tensor:
    return model.input_embeddings().weight  # [V, D]


def row_indices(weight: torch.Tensor, table: torch.Tensor) -> list[int]:
    """For each prompt row, the table row it equals exactly (fails if there is none)."""
    found = []
    for p, row in enumerate(weight):
        hits = (table == row).all(dim=-1).nonzero().flatten().tolist()
        assert hits, f"prompt row {p} is not a row of the word-embedding table"
        found.append(hits[0])
    return found


def test_from_vocab_rows_are_exact_rows_of_the_table(model):
    P = 7
    prompt = SoftPrompt.from_vocab(model, P, generator=torch.Generator().manual_seed(3))
    assert prompt.weight.shape == (P, model.config.hidden_size)  # [P, D]
    rows = row_indices(prompt.weight.detach(), table_of(model).detach())
    assert len(set(rows)) > 1  # random rows, not one row repeated


def test_from_vocab_is_reproducible_with_a_generator(model):
    def make(seed):
        return SoftPrompt.from_vocab(model, 5, generator=torch.Generator().manual_seed(seed)).weight
    assert torch.equal(make(11), make(11))
    assert not torch.equal(make(11), make(12))
    torch.manual_seed(0)  # without a generator: the global one
    a = SoftPrompt.from_vocab(model, 5).weight
    torch.manual_seed(0)
    assert torch.equal(a, SoftPrompt.from_vocab(model, 5).weight)


@pytest.mark.parametrize("P, expected", [
    (None, [5, 17, 9]),  # P defaults to the number of ids
    (7, [5, 17, 9, 5, 17, 9, 5]),  # cycled
    (2, [5, 17]),  # truncated
])
def test_from_text_uses_exactly_the_ids_embeddings_cycled_or_truncated(model, P, expected):
    prompt = SoftPrompt.from_text(model, [5, 17, 9], P)
    assert prompt.num_virtual == len(expected)
    assert torch.equal(prompt.weight.detach(), table_of(model).detach()[expected])  # [P, D]


def test_from_text_accepts_a_tensor_of_ids(model):
    a = SoftPrompt.from_text(model, torch.tensor([3, 4]), 3).weight
    assert torch.equal(a, SoftPrompt.from_text(model, [3, 4], 3).weight)


MAKERS = {"from_vocab": lambda m: SoftPrompt.from_vocab(m, 4, generator=torch.Generator().manual_seed(0)),
          "from_text": lambda m: SoftPrompt.from_text(m, [1, 2, 3], 4)}


@pytest.mark.parametrize("how", MAKERS)
def test_prompt_is_an_fp32_parameter_even_over_a_half_precision_table(model, how):
    model = model.to(torch.bfloat16)
    prompt = MAKERS[how](model)
    assert isinstance(prompt.weight, torch.nn.Parameter) and prompt.weight.dtype == torch.float32
    assert prompt.weight.requires_grad and prompt.weight.is_leaf and prompt.weight.grad_fn is None
    row_indices(prompt.weight.detach().to(torch.bfloat16), table_of(model))  # bf16 rows, exactly widened


@pytest.mark.parametrize("how", MAKERS)
def test_prompt_is_detached_from_the_table(model, how):
    table = table_of(model)
    frozen = table.detach().clone()
    prompt = MAKERS[how](model)
    assert prompt.weight.untyped_storage().data_ptr() != table.untyped_storage().data_ptr()
    rows = row_indices(prompt.weight.detach(), frozen)
    # training the prompt moves the prompt only: the table gets no gradient and keeps its values
    model.attach(prompt)
    freeze_backbone(model)
    out = model(torch.tensor([[1, 2, 3]]))
    (out.logits if hasattr(out, "logits") else out.last_hidden_state).square().mean().backward()
    assert table.grad is None and prompt.weight.grad is not None and prompt.weight.grad.abs().sum() > 0
    with torch.no_grad():
        prompt.weight.add_(1.0)
    assert torch.equal(table, frozen)
    # and the other way round: editing the table does not edit the prompt
    before = prompt.weight.detach().clone()
    with torch.no_grad():
        table[rows[0]].fill_(7.0)
    assert torch.equal(prompt.weight, before)


def test_bad_arguments_are_clear_errors(model):
    V = model.config.vocab_size
    with pytest.raises(ValueError, match="from_text needs at least one token id"):
        SoftPrompt.from_text(model, [])
    with pytest.raises(ValueError, match=rf"token_ids \[{V}, -1\] are outside the vocabulary \[0, V={V}\)"):
        SoftPrompt.from_text(model, [1, V, -1])
    with pytest.raises(ValueError, match="num_virtual \\(P\\) must be a positive int, got 0"):
        SoftPrompt.from_text(model, [1, 2], 0)  # 0 is not "as many as the ids"
    with pytest.raises(ValueError, match="num_virtual \\(P\\) must be a positive int, got -1"):
        SoftPrompt.from_vocab(model, -1)
