"""How many parameters each method trains: closed forms, the backbone's size, and the CLI.

The closed forms are written out from each method's definition, independently of the code
that counts them, so a changed layer size or a forgotten bias shows up here.
"""
from __future__ import annotations

import pytest

from minigpt_ptv2 import BertEncoder, preset
from minigpt_ptv2.cli import main
from minigpt_ptv2.prompts import METHODS, make_method, parameter_report
from minigpt_ptv2.prompts.registry import backbone_parameters

P = 20
BERT_BASE_BACKBONE = 109_482_240  # transformers BertModel (with pooler) at bert-base-uncased's config
GPT2_BACKBONE = 124_439_808  # GPT-2 small, LM head tied to the token embedding


def closed_form(name: str, cfg, P: int) -> int:
    D, L = cfg.hidden_size, cfg.num_hidden_layers
    W = L * 2 * cfg.num_key_value_heads * cfg.head_dim  # a K/V row: L*2*D, or L*2*H_kv*d under grouped heads
    h = D  # default width of the P-tuning encoders and of deep-mlp
    lin = lambda i, o: i * o + o  # noqa: E731  (a Linear with bias)
    lstm_dir = lambda i: 4 * h * i + 4 * h * h + 8 * h  # noqa: E731  (W_ih, W_hh, two biases)
    return {
        "soft": P * D,
        "ptuning-mlp": P * D + lin(D, h) + lin(h, h) + lin(h, D),
        "ptuning-lstm": P * D + 2 * lstm_dir(D) + 2 * lstm_dir(2 * h) + lin(2 * h, 2 * h) + lin(2 * h, D),
        "deep": L * P * D,
        "deep-mlp": P * D + lin(D, h) + lin(h, L * D),
        "prefix": P * W,
        "prefix-mlp": P * D + D * 512 + 512 + 512 * W + W,  # hidden=512
        "gated": L * (P * D + 1),  # per adapted layer (all L by default): P rows of D, and one gate
    }[name]


def test_every_method_has_a_closed_form():
    assert set(METHODS) == {"soft", "ptuning-mlp", "ptuning-lstm", "deep", "deep-mlp", "prefix",
                            "prefix-mlp", "gated"}


@pytest.mark.parametrize("config", ["bert-base", "minilm", "gpt2", "llama-1b", "llama-tiny"])
def test_report_matches_the_closed_forms(config):
    cfg = preset(config)
    rows = parameter_report(cfg, P)
    assert [r["method"] for r in rows] == list(METHODS)
    total = rows[0]["backbone"]
    for r in rows:
        assert r["trainable"] == closed_form(r["method"], cfg, P), r["method"]
        assert r["backbone"] == total
        assert r["percent"] == pytest.approx(100 * r["trainable"] / total, rel=1e-12)  # Python floats


def test_the_headline_numbers_for_bert_base():
    cfg = preset("bert-base")
    got = {r["method"]: r["trainable"] for r in parameter_report(cfg, P)}
    assert got["soft"] == 15_360  # 20 x 768
    assert got["deep"] == 184_320  # 12 x 20 x 768
    assert got["prefix"] == 368_640  # 20 x 12 x 2 x 768: twice deep, K and V separately
    assert got["prefix-mlp"] == 15_360 + 393_216 + 512 + 9_437_184 + 18_432


def test_the_headline_numbers_for_a_1b_llama():
    """LLaMA 3.2 1B's shape (D=2048, L=16, H=32, H_kv=8, d=64): a K/V prefix row is L*2*H_kv*d =
    16,384 wide, a quarter of L*2*D, because 32 query heads share 8 key/value heads."""
    got = {r["method"]: r for r in parameter_report(preset("llama-1b"), 16)}
    assert got["prefix"]["trainable"] == 262_144  # 16 x 16 x 2 x 8 x 64
    assert got["deep"]["trainable"] == 524_288  # 16 x 16 x 2048: now twice the K/V prefix
    assert got["soft"]["trainable"] == 32_768
    assert got["prefix"]["backbone"] == 1_235_814_400
    assert round(got["prefix"]["percent"], 3) == 0.021


def test_backbone_sizes():
    assert backbone_parameters(preset("bert-base")) == BERT_BASE_BACKBONE
    assert backbone_parameters(preset("gpt2")) == GPT2_BACKBONE


def test_minilm_backbone_equals_the_real_checkpoint(minilm_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertModel.from_pretrained(minilm_dir)
    n_hf = sum(p.numel() for p in hf.parameters())
    n_ours = sum(p.numel() for p in BertEncoder.from_pretrained(minilm_dir).parameters())
    assert n_ours == n_hf
    assert parameter_report(preset("minilm"), P)[0]["backbone"] == n_hf


@pytest.mark.parametrize("name", sorted(METHODS))
def test_report_counts_what_a_real_method_trains(name):
    """The report builds methods on the meta device; a real one must count the same."""
    cfg = preset("minilm")
    real = make_method(name, cfg, P)
    assert sum(p.numel() for p in real.parameters() if p.requires_grad) == closed_form(name, cfg, P)


def _parse(out: str) -> dict:
    """The report's rows: method -> (trainable, percent)."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in METHODS:
            rows[parts[0]] = (int(parts[1].replace(",", "")), float(parts[2].rstrip("%")))
    return rows


@pytest.mark.parametrize("config", ["bert-base", "minilm"])
def test_params_command_prints_the_report(config, capsys):
    assert main(["params", "--config", config, "--P", str(P)]) == 0
    out = capsys.readouterr().out
    cfg = preset(config)
    assert f"D={cfg.hidden_size} L={cfg.num_hidden_layers} H={cfg.num_attention_heads}, P={P}" in out
    rows = _parse(out)
    assert set(rows) == set(METHODS)
    total = backbone_parameters(cfg)
    for name, (n, pct) in rows.items():
        assert n == closed_form(name, cfg, P)
        assert pct == pytest.approx(100 * n / total, abs=5e-4)  # printed with 3 decimals
    if config == "bert-base":
        assert "368,640" in out  # the prefix row, with thousands separators


def test_params_command_subset_and_errors(capsys):
    assert main(["params", "--config", "minilm", "--P", "8", "--methods", "prefix", "deep"]) == 0
    rows = _parse(capsys.readouterr().out)
    assert rows.keys() == {"prefix", "deep"}
    assert rows["prefix"][0] == 8 * 6 * 2 * 384
    assert main(["params", "--config", "llama-1b", "--P", "16", "--methods", "prefix"]) == 0
    out = capsys.readouterr().out
    assert "llama-1b: D=2048 L=16 H=32 H_kv=8, P=16" in out and _parse(out)["prefix"] == (262_144, 0.021)
    with pytest.raises(SystemExit) as e:  # refused by the parser, naming the option
        main(["params", "--P", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument --P: must be a positive integer, got 0" in err
    assert len(err.strip().splitlines()) == 1

