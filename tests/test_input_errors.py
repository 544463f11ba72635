"""Bad inputs fail at the door with a message that names the argument and the shapes or values
involved, for both models. Each test asserts on the pieces of the message a learner needs."""
from __future__ import annotations

import re

import pytest
import torch

from minigpt_ptv2 import BertConfig, GPT2Config, preset
from minigpt_ptv2.models.gpt2 import GPT2Decoder
from minigpt_ptv2.models.bert import BertEncoder
from minigpt_ptv2.prompts import KVPrefix


@pytest.fixture(scope="module")
def encoder():
    return BertEncoder(preset("bert-tiny")).eval()  # V=120, 64 positions, 2 token types


@pytest.fixture(scope="module")
def decoder():
    return GPT2Decoder(preset("gpt2-tiny")).eval()  # V=130, 64 positions


@pytest.fixture(params=["encoder", "decoder"])
def model(request):
    return request.getfixturevalue(request.param)


def ids_for(model, *shape):
    return torch.randint(0, model.config.vocab_size, shape)


def raises(exc, *pieces):
    """pytest.raises whose message must contain every piece (literally)."""
    return pytest.raises(exc, match="(?s)" + ".*".join(re.escape(p) for p in pieces))


@pytest.mark.parametrize("shape", [(7,), (2, 3, 4)])
def test_wrong_rank_of_input_ids(model, shape):
    with raises(ValueError, "input_ids must be [B, N] (rank 2)", f"got shape {list(shape)}"):
        model(ids_for(model, *shape))


def test_empty_sequence(model):
    with raises(ValueError, "input_ids has no tokens", "[2, 0]"):
        model(torch.zeros(2, 0, dtype=torch.long))


def test_float_input_ids(model):
    with raises(TypeError, "input_ids must hold integer token ids", "torch.float32"):
        model(ids_for(model, 2, 5).float())


def test_input_ids_not_a_tensor(model):
    with raises(TypeError, "input_ids must be a torch.Tensor", "list"):
        model([[1, 2, 3]])


def test_mask_shape_not_matching_ids(model):
    ids = ids_for(model, 2, 5)
    with raises(ValueError, "attention_mask shape [2, 4]", "input_ids shape [2, 5]"):
        model(ids, attention_mask=torch.ones(2, 4, dtype=torch.long))
    with raises(ValueError, "attention_mask shape [5]", "input_ids shape [2, 5]"):
        model(ids, attention_mask=torch.ones(5, dtype=torch.long))


def test_mask_with_values_other_than_0_and_1(model):
    mask = torch.ones(2, 5)
    mask[1, 3] = -10000.0  # an additive mask passed where a 0/1 mask belongs
    with raises(ValueError, "attention_mask must hold 0/1", "-10000"):
        model(ids_for(model, 2, 5), attention_mask=mask)


def test_mask_on_another_device(model):
    ids = ids_for(model, 2, 5)
    with raises(ValueError, "attention_mask is on meta", "input_ids is on cpu"):
        model(ids, attention_mask=torch.ones(2, 5, device="meta"))


def test_sequence_longer_than_position_table(model):
    n = model.config.max_position_embeddings + 1
    with raises(ValueError, f"position {n - 1}", f"position table has {n - 1} rows", f"N={n}"):
        model(ids_for(model, 1, n))
    with torch.no_grad():
        model(ids_for(model, 1, n - 1))  # the longest sequence that fits


def test_shifted_prefix_positions_shrink_the_limit(model):
    """Pitfall 1: with positions='shifted' (HF/PEFT) the table holds only max - P real tokens."""
    P, n_max = 5, model.config.max_position_embeddings
    model.attach(KVPrefix(model.config, P, positions="shifted"))
    try:
        with raises(ValueError, f"position {n_max}", f"N={n_max - P + 1}", f"P={P}"):
            model(ids_for(model, 1, n_max - P + 1))
        with torch.no_grad():
            model(ids_for(model, 1, n_max - P))
    finally:
        model.detach_prompt()


def test_generation_past_the_position_table(decoder):
    """Refused before any work is done, naming the request and the table's range."""
    n_max = decoder.config.max_position_embeddings
    with raises(ValueError, "generating 10 tokens", "position", f"(0..{n_max - 1})"):
        decoder.generate(ids_for(decoder, 1, n_max - 3), max_new_tokens=10)
    out = decoder.generate(ids_for(decoder, 1, n_max - 10), max_new_tokens=10)  # fits exactly
    assert out.shape == (1, n_max)


@pytest.mark.parametrize("bad", [-1, "V"])
def test_token_id_out_of_vocabulary(model, bad):
    V = model.config.vocab_size
    bad = V if bad == "V" else bad
    ids = ids_for(model, 2, 5)
    ids[1, 2] = bad
    with raises(ValueError, f"input_ids contains token id {bad}", f"[0, {V})"):
        model(ids)


def test_token_type_ids_out_of_range(encoder):
    ids = ids_for(encoder, 2, 5)
    types = torch.zeros_like(ids)
    types[0, 4] = 2
    with raises(ValueError, "token_type_ids contains token id 2", "[0, 2)"):
        encoder(ids, token_type_ids=types)


def test_token_type_ids_shape(encoder):
    ids = ids_for(encoder, 2, 5)
    with raises(ValueError, "token_type_ids shape [2, 4]", "input_ids shape [2, 5]"):
        encoder(ids, token_type_ids=torch.zeros(2, 4, dtype=torch.long))


def test_labels_shape(decoder):
    ids = ids_for(decoder, 2, 5)
    with raises(ValueError, "labels shape [2, 4]", "[2, 5]"):
        decoder(ids, labels=ids[:, :4])


def test_cache_batch_mismatch(decoder):
    with torch.no_grad():
        cache = decoder(ids_for(decoder, 2, 5), use_cache=True).cache
        with raises(ValueError, "cache batch 2", "input_ids batch 3"):
            decoder(ids_for(decoder, 3, 1), past=cache)


@pytest.mark.parametrize("cls", [BertConfig, GPT2Config])
def test_head_count_not_dividing_width(cls):
    with raises(ValueError, "num_attention_heads=5", "hidden_size=24", "d = D/H"):
        cls(hidden_size=24, num_attention_heads=5)


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "vocab_size"])
def test_non_positive_config_sizes(field):
    with raises(ValueError, f"{field} must be positive, got 0"):
        BertConfig(**{field: 0})


def test_wrong_config_class(model):
    other = preset("gpt2-tiny") if isinstance(model, BertEncoder) else preset("bert-tiny")
    with raises(TypeError, "Config", type(other).__name__):
        type(model)(other)


def test_generate_arguments(decoder):
    ids = ids_for(decoder, 1, 3)
    with raises(ValueError, "max_new_tokens must be a non-negative int", "-1"):
        decoder.generate(ids, -1)
    with raises(ValueError, "temperature must be a finite number > 0", "0"):
        decoder.generate(ids, 2, do_sample=True, temperature=0)
    with raises(ValueError, "top_k", "0"):
        decoder.generate(ids, 2, do_sample=True, top_k=0)


# --- the same rules at both doors (the full table is tests/bad_inputs/test_api.py) ---------------

@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.bool])
def test_ids_of_an_index_dtype_embedding_cannot_use(model, dtype):
    with raises(TypeError, "input_ids must hold integer token ids", str(dtype)):
        model(ids_for(model, 2, 5).to(dtype))
    with torch.no_grad():
        model(ids_for(model, 2, 5).int())  # int32 is an index dtype: accepted


def test_empty_batch_and_meta_ids(model):
    with raises(ValueError, "input_ids has an empty batch", "[0, 5]"):
        model(torch.zeros(0, 5, dtype=torch.long))
    with raises(ValueError, "input_ids is on the meta device"):
        model(torch.zeros(2, 5, dtype=torch.long, device="meta"))


@pytest.mark.parametrize("dtype", [torch.long, torch.float32])
def test_mask_values_other_than_0_and_1_in_any_dtype(model, dtype):
    mask = torch.ones(2, 5, dtype=dtype)
    mask[0, 1] = 2
    with raises(ValueError, "attention_mask must hold 0/1", "2"):
        model(ids_for(model, 2, 5), attention_mask=mask)


def test_each_config_class_declares_its_own_field_kinds_and_one_it_forgot_is_refused_by_name():
    """core/config.py names no architecture's field: a subclass states the kind of each field it
    adds (field_kinds), and one it does not is a mistake in the class, refused when first built."""
    from dataclasses import dataclass

    from minigpt_ptv2.core.config import kinds_of
    from minigpt_ptv2.models.llama import LlamaConfig

    assert kinds_of(LlamaConfig)["rope_theta"] == "positive" and kinds_of(GPT2Config)["vocab_size"] == "size"

    @dataclass(frozen=True)
    class Forgetful(LlamaConfig):
        window: int = 4

    with pytest.raises(TypeError, match="Forgetful declares no kind for its field 'window'"):
        Forgetful()

    @dataclass(frozen=True)
    class Declared(LlamaConfig):
        window: int = 4
        field_kinds = {"window": "size"}

    assert Declared().window == 4
    with pytest.raises(ValueError, match="window must be positive, got 0"):
        Declared(window=0)
