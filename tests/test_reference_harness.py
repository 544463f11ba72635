"""The reference harness tells the truth about transformers + PEFT: the K/V interleaving of a
prefix table, the positions and masks PEFT uses, what its outputs contain, and the adapter format."""
from __future__ import annotations

import json

import pytest
import torch

R = pytest.importorskip("reference")
from safetensors.torch import load_file, save_file  # noqa: E402
from tolerances import FP32_KERNELS  # noqa: E402

P, L, D, H, d = 4, 6, 384, 12, 32  # MiniLM
IDS = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]])  # [B, N]
MASK = (IDS != 0).long()
GP, GL, GD, GH = 3, 3, 24, 4  # tiny GPT-2
GIDS = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])


def test_layout_is_layer_major_with_k_then_v():
    L_, H_, P_, d_ = 3, 2, 5, 4
    table = torch.randn(P_, L_ * 2 * H_ * d_)
    kv = R.peft_kv_layout(table, L_, H_, d_)
    D_ = H_ * d_
    for l, (k, v) in enumerate(kv):
        assert k.shape == v.shape == (H_, P_, d_)
        # row p = [K_0 | V_0 | K_1 | V_1 | ...], each block head-major
        assert torch.equal(k, table[:, 2 * l * D_:(2 * l + 1) * D_].view(P_, H_, d_).transpose(0, 1))
        assert torch.equal(v, table[:, (2 * l + 1) * D_:(2 * l + 2) * D_].view(P_, H_, d_).transpose(0, 1))
    assert torch.equal(R.kv_to_peft_layout(kv), table)


def test_layout_matches_peft_get_prompt(minilm_dir):
    table = torch.randn(P, L * 2 * D)
    pm = R.peft_prefix_model(R.hf_bert(minilm_dir), P, table)
    cache = pm.get_prompt(2)  # what PEFT hands the base model
    assert type(cache).__name__ == "DynamicCache" and cache.get_seq_length() == P
    for layer, (k, v) in zip(cache.layers, R.peft_kv_layout(table, L, H, d)):
        assert torch.equal(layer.keys, k.expand(2, -1, -1, -1))
        assert torch.equal(layer.values, v.expand(2, -1, -1, -1))


def test_bert_prefix_equals_plain_bert_with_past_key_values_at_positions_P(minilm_dir):
    table = torch.randn(P, L * 2 * D)
    peft_out = R.run_peft_bert(R.peft_prefix_model(R.hf_bert(minilm_dir), P, table), IDS, MASK)
    assert peft_out.shape == (2, 6, D)
    bert, kv = R.hf_bert(minilm_dir), R.peft_kv_layout(table, L, H, d)
    same = R.run_hf_bert_prefix(bert, IDS, kv, MASK)
    assert (peft_out - same).abs().max() <= FP32_KERNELS  # PEFT vs BertModel driven by hand
    explicit = R.run_hf_bert_prefix(bert, IDS, kv, MASK, position_ids=torch.arange(P, P + 6)[None])
    assert (peft_out - explicit).abs().max() <= FP32_KERNELS
    from_zero = R.run_hf_bert_prefix(bert, IDS, kv, MASK, position_ids=torch.arange(6)[None])
    assert (peft_out - from_zero).abs().max() > 1e-2  # PEFT does not use 0..N-1
    pm = R.peft_prefix_model(R.hf_bert(minilm_dir), P, table)
    assert R.run_peft_bert(pm, torch.full((1, 512 - P), 1000)).shape == (1, 512 - P, D)
    with pytest.raises(RuntimeError):  # the max length shrinks to 512 - P
        R.run_peft_bert(pm, torch.full((1, 512 - P + 1), 1000))


def test_bert_peft_ignores_token_types_and_position_ids(minilm_dir):
    pm = R.peft_prefix_model(R.hf_bert(minilm_dir), P, torch.randn(P, L * 2 * D))
    base = R.run_peft_bert(pm, IDS, MASK)
    assert torch.equal(R.run_peft_bert(pm, IDS, MASK, token_type_ids=torch.ones_like(IDS)), base)
    with torch.no_grad(), R._quiet():  # position_ids are shifted by +P: arange(N) changes nothing
        shifted = pm(input_ids=IDS, attention_mask=MASK, position_ids=torch.arange(6)[None]).last_hidden_state
    assert torch.equal(shifted, base)


def test_bert_prompt_tuning_prepends_before_embeddings_and_returns_P_plus_N_rows(minilm_dir):
    prompt = 0.05 * torch.randn(P, D)
    pm = R.peft_prompt_model(R.hf_bert(minilm_dir), P, prompt)
    with torch.no_grad():
        full = pm(input_ids=IDS, attention_mask=MASK).last_hidden_state
    assert full.shape == (2, P + 6, D)
    bert = R.hf_bert(minilm_dir)
    with torch.no_grad():  # prompt rows get token type 0 and positions 0..P-1, then LayerNorm
        embeds = torch.cat([prompt.expand(2, -1, -1), bert.embeddings.word_embeddings(IDS)], 1)
        mask = torch.cat([torch.ones(2, P, dtype=MASK.dtype), MASK], 1)
        want = bert(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    assert (full - want).abs().max() <= FP32_KERNELS
    assert torch.equal(R.run_peft_bert(pm, IDS, MASK), full[:, P:])


def _greedy_by_full_recompute(pm, ids, steps):
    for _ in range(steps):
        nxt = R.run_peft_lm_logits(pm, ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    return ids


def test_gpt2_prefix_positions_cache_and_generate(tmp_path):
    base, _ = R.hf_gpt2_tiny(tmp_path, seed=0, initializer_range=0.3)
    table = torch.randn(GP, GL * 2 * GD)
    pm = R.peft_prefix_model(base, GP, table)
    logits = R.run_peft_lm_logits(pm, GIDS, torch.ones_like(GIDS))
    assert logits.shape == (2, 5, 130)
    plain, _ = R.hf_gpt2_tiny(tmp_path / "again", seed=0, initializer_range=0.3)
    kv = R.peft_kv_layout(table, GL, GH, GD // GH)
    mask = torch.ones(2, GP + 5, dtype=torch.long)
    with torch.no_grad():
        same = plain(input_ids=GIDS, attention_mask=mask, past_key_values=R.prefix_cache(kv, 2)).logits
        at_P = plain(input_ids=GIDS, attention_mask=mask, past_key_values=R.prefix_cache(kv, 2),
                     position_ids=torch.arange(GP, GP + 5)[None]).logits
    assert (logits - same).abs().max() <= FP32_KERNELS and (logits - at_P).abs().max() <= FP32_KERNELS
    out = R.peft_generate(pm, GIDS, max_new_tokens=10)
    assert out.shape == (2, 15) and torch.equal(out[:, :5], GIDS)
    # tokens, not floats: cached and recomputed logits differ by rounding only, far less than the
    # gap between each step's two best logits (at least 4.9e-3 in these tests)
    assert torch.equal(out, _greedy_by_full_recompute(pm, GIDS, 10))
    padded = torch.tensor([[0, 0, 7, 8, 9]])  # generate counts positions over real tokens only
    left = R.peft_generate(pm, padded, torch.tensor([[0, 0, 1, 1, 1]]), max_new_tokens=10)
    assert torch.equal(left[:, 5:], R.peft_generate(pm, padded[:, 2:], max_new_tokens=10)[:, 3:])


def test_gpt2_prompt_tuning_logits_and_generate(tmp_path):
    base, _ = R.hf_gpt2_tiny(tmp_path, seed=0, initializer_range=0.3)
    pm = R.peft_prompt_model(base, GP, torch.randn(GP, GD))
    with torch.no_grad(), R._quiet():
        full = pm(input_ids=GIDS).logits
    assert full.shape == (2, GP + 5, 130)
    assert torch.equal(R.run_peft_lm_logits(pm, GIDS), full[:, GP:])
    out = R.peft_generate(pm, GIDS, max_new_tokens=10)
    assert out.shape == (2, 15) and torch.equal(out[:, :5], GIDS)
    assert torch.equal(out, _greedy_by_full_recompute(pm, GIDS, 10))
    padded = torch.tensor([[0, 0, 7, 8, 9]])  # prompt tuning drops position_ids: pads shift positions
    left = R.run_peft_lm_logits(pm, padded, torch.tensor([[0, 0, 1, 1, 1]]))[:, -1]
    assert (left - R.run_peft_lm_logits(pm, padded[:, 2:])[:, -1]).abs().max() > 1e-3


def test_llama_gqa_prefix_table_unrotated_keys_and_positions(tmp_path):
    """Fact f.: the table is [P, L*2*H_kv*d], its keys enter the cache unturned, real tokens at P.."""
    c = R.TINY_LLAMA
    Lk, H_kv, dk = c["num_hidden_layers"], c["num_key_value_heads"], c["hidden_size"] // c["num_attention_heads"]
    base, path = R.hf_llama_tiny(tmp_path, seed=0, initializer_range=0.3)
    table = torch.randn(GP, Lk * 2 * H_kv * dk)
    pm = R.peft_prefix_model(base, GP, table)
    assert pm.peft_config["default"].num_attention_heads == H_kv and pm.peft_config["default"].token_dim == H_kv * dk
    cache = pm.get_prompt(2)
    kv = R.peft_kv_layout(table, Lk, H_kv, dk)
    for layer, (k, v) in zip(cache.layers, kv):
        assert layer.keys.shape == (2, H_kv, GP, dk) and torch.equal(layer.keys, k.expand(2, -1, -1, -1))
    plain = R.hf_llama(path)
    mask = torch.ones(2, GP + 5, dtype=torch.long)
    with torch.no_grad():  # the same prefix as an unturned cache, real tokens at P..P+N-1
        same = plain(input_ids=GIDS, attention_mask=mask, past_key_values=R.prefix_cache(kv, 2),
                     position_ids=torch.arange(GP, GP + 5)[None]).logits
        at_0 = plain(input_ids=GIDS, attention_mask=mask, past_key_values=R.prefix_cache(kv, 2),
                     position_ids=torch.arange(5)[None]).logits
    logits = R.run_peft_lm_logits(pm, GIDS, torch.ones_like(GIDS))
    assert (logits - same).abs().max() <= FP32_KERNELS
    assert (logits - at_0).abs().max() > 1e-3  # under RoPE an unturned prefix does see the shift
    padded = torch.tensor([[0, 0, 7, 8, 9]])  # generate counts positions over real tokens only
    left = R.peft_generate(pm, padded, torch.tensor([[0, 0, 1, 1, 1]]), max_new_tokens=10)
    assert torch.equal(left[:, 5:], R.peft_generate(pm, padded[:, 2:], max_new_tokens=10)[:, 3:])


def test_llama_prompt_tuning_generation_depends_on_left_padding(tmp_path):
    """Fact f.: prompt tuning numbers the pads, so a left-padded row generates other text."""
    base, _ = R.hf_llama_tiny(tmp_path, seed=0, initializer_range=0.3)
    pm = R.peft_prompt_model(base, GP, torch.randn(GP, R.TINY_LLAMA["hidden_size"]))
    with torch.no_grad(), R._quiet():
        assert pm(input_ids=GIDS).logits.shape == (2, GP + 5, 140)
    padded = torch.tensor([[0, 0, 0, 0, 7, 8, 9]])
    left = R.peft_generate(pm, padded, torch.tensor([[0, 0, 0, 0, 1, 1, 1]]), max_new_tokens=10)
    assert not torch.equal(left[:, 7:], R.peft_generate(pm, padded[:, 4:], max_new_tokens=10)[:, 3:])


@pytest.mark.parametrize("kind, width", [("prefix", L * 2 * D), ("prompt", D)])
def test_adapter_format_and_minimal_config_roundtrip(minilm_dir, tmp_path, kind, width):
    values = torch.randn(P, width)
    make = R.peft_prefix_model if kind == "prefix" else R.peft_prompt_model
    pm = make(R.hf_bert(minilm_dir), P, values)
    pm.save_pretrained(tmp_path / "saved")
    tensors = load_file(tmp_path / "saved" / "adapter_model.safetensors")
    assert list(tensors) == ["prompt_embeddings"] and torch.equal(tensors["prompt_embeddings"], values)
    saved_cfg = json.loads((tmp_path / "saved" / "adapter_config.json").read_text())
    assert saved_cfg["peft_type"] == ("PREFIX_TUNING" if kind == "prefix" else "PROMPT_TUNING")

    mine = tmp_path / "minimal"  # hand-written: the three fields PEFT needs, no base path
    mine.mkdir()
    (mine / "adapter_config.json").write_text(json.dumps(
        {"peft_type": saved_cfg["peft_type"], "task_type": "FEATURE_EXTRACTION", "num_virtual_tokens": P}))
    save_file({"prompt_embeddings": values}, mine / "adapter_model.safetensors")
    loaded = R.load_peft_adapter(R.hf_bert(minilm_dir), mine)
    assert torch.equal(R.run_peft_bert(loaded, IDS, MASK), R.run_peft_bert(pm, IDS, MASK))


def test_adapter_without_task_type_silently_drops_the_prefix(minilm_dir, tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": P}))
    save_file({"prompt_embeddings": torch.randn(P, L * 2 * D)}, tmp_path / "adapter_model.safetensors")
    loaded = R.load_peft_adapter(R.hf_bert(minilm_dir), tmp_path)
    with torch.no_grad():
        got = loaded(input_ids=IDS, attention_mask=MASK).last_hidden_state
        plain = R.hf_bert(minilm_dir)(input_ids=IDS, attention_mask=MASK).last_hidden_state
    assert type(loaded).__name__ == "PeftModel" and torch.equal(got, plain)
