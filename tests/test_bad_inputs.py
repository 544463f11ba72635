"""Bad input, collected: one table across the public API and the command line.

Every row must fail *at the door* with a clear error that names what was wrong — never a
traceback from deep inside torch, never a NaN, never a half-written file.
"""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from minigpt_ptv2 import GPT2Decoder, BertEncoder, BertConfig, preset
from minigpt_ptv2.cli import main
from minigpt_ptv2.data import read_conll_file, read_sst2_file
from minigpt_ptv2.prompts import DeepPrompt, KVPrefix, SoftPrompt
from minigpt_ptv2.training import load_checkpoint


@pytest.fixture(scope="module")
def enc():
    return BertEncoder(preset("bert-tiny")).eval()


@pytest.fixture(scope="module")
def dec():
    return GPT2Decoder(preset("gpt2-tiny")).eval()


def ids(model, B=2, N=5):
    return torch.randint(0, model.config.vocab_size, (B, N))


@pytest.fixture
def tiny_bert_dir(tmp_path):
    """A saved random BERT folder in the HF layout, written by our own model + a rename."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=120, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=40, max_position_embeddings=64)
    transformers.BertModel(cfg).save_pretrained(tmp_path)
    return tmp_path


def _attach(model, method):
    return lambda: model.attach(method)


# (id, callable that must raise, exception type, substrings the message must contain)
def api_cases(enc, dec):
    big = preset("bert-base")
    enc_double = BertEncoder(preset("bert-tiny")).double().eval()
    enc_double.attach(KVPrefix(preset("bert-tiny"), 3))  # prompt stays float32
    return [
        ("ids rank 3", lambda: enc(torch.zeros(2, 3, 4, dtype=torch.long)), ValueError, ["input_ids", "[2, 3, 4]"]),
        ("ids rank 1", lambda: dec(torch.zeros(5, dtype=torch.long)), ValueError, ["input_ids", "[5]", "unsqueeze"]),
        ("float ids", lambda: enc(torch.zeros(2, 3)), TypeError, ["input_ids", "float32"]),
        ("mask shape", lambda: enc(ids(enc), attention_mask=torch.ones(2, 4)), ValueError,
         ["attention_mask", "[2, 4]", "[2, 5]"]),
        ("mask values", lambda: enc(ids(enc), attention_mask=torch.full((2, 5), 0.5)), ValueError, ["attention_mask", "0/1"]),
        ("id >= V", lambda: enc(torch.full((1, 3), 120)), ValueError, ["token id 120", "[0, 120)"]),
        ("id < 0", lambda: dec(torch.full((1, 3), -1)), ValueError, ["token id -1"]),
        ("too long", lambda: enc(torch.zeros(1, 65, dtype=torch.long)), ValueError, ["position 64", "64 rows"]),
        ("too long shifted", lambda: BertEncoder(preset("bert-tiny")).attach(
            KVPrefix(preset("bert-tiny"), 4, positions="shifted"))(torch.zeros(1, 61, dtype=torch.long)),
         ValueError, ["position 64", "shift of P=4"]),
        ("token types", lambda: enc(ids(enc), token_type_ids=torch.full((2, 5), 2)), ValueError, ["token_type_ids", "2"]),
        ("heads !| D", lambda: BertConfig(hidden_size=30, num_attention_heads=4), ValueError,
         ["num_attention_heads=4", "hidden_size=30"]),
        ("prompt other D", _attach(enc, SoftPrompt(big, 3)), ValueError, ["D: prompt 768 vs model 24"]),
        ("prompt other L", _attach(enc, DeepPrompt(preset("bert-tiny").replace(num_hidden_layers=5), 3)),
         ValueError, ["L: prompt 5 vs model 3"]),
        ("P = 0", lambda: KVPrefix(preset("bert-tiny"), 0), ValueError, ["P", "positive"]),
        ("prompt dtype", lambda: enc_double(ids(enc_double)), ValueError, ["float32", "float64"]),
        ("not a method", lambda: enc.attach(torch.nn.Linear(2, 2)), TypeError, ["PromptMethod", "Linear"]),
        ("negative new tokens", lambda: dec.generate(ids(dec), -1), ValueError, ["max_new_tokens", "-1"]),
        ("temperature 0", lambda: dec.generate(ids(dec), 2, do_sample=True, temperature=0.0), ValueError,
         ["temperature"]),
        ("generate past table", lambda: dec.generate(ids(dec, 1, 60), 10), ValueError, ["position", "(0..63)"]),
        ("labels shape", lambda: dec(ids(dec), labels=torch.zeros(2, 4, dtype=torch.long)), ValueError,
         ["labels", "[2, 4]"]),
    ]


def test_api_table_has_at_least_twenty_rows(enc, dec):
    assert len(api_cases(enc, dec)) >= 20


@pytest.mark.parametrize("row", range(20))
def test_bad_api_input_fails_clearly(row, enc, dec):
    name, call, exc, needles = api_cases(enc, dec)[row]
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, f"{name}: {needle!r} not in {msg!r}"


# --- files: checkpoints, model folders, datasets --------------------------------------------
def test_pickle_where_safetensors_is_expected(tiny_bert_dir):
    (tiny_bert_dir / "model.safetensors").write_bytes(pickle.dumps({"a": torch.zeros(2)}))
    with pytest.raises(ValueError, match="could not read weights from .*model.safetensors"):
        BertEncoder.from_pretrained(tiny_bert_dir)


def test_truncated_model_weights(tiny_bert_dir):
    path = tiny_bert_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupted, truncated"):
        BertEncoder.from_pretrained(tiny_bert_dir)


def test_gpt2_folder_refused_as_encoder(tiny_bert_dir):
    cfg = json.loads((tiny_bert_dir / "config.json").read_text())
    (tiny_bert_dir / "config.json").write_text(json.dumps({**cfg, "model_type": "t5"}))
    with pytest.raises(ValueError, match="unsupported model_type 't5'"):
        BertEncoder.from_pretrained(tiny_bert_dir)


@pytest.mark.parametrize("content, needles", [
    ("", ["empty"]),
    ("text\tlabel\n", ["no examples"]),
    ("text\tlabel\ngood film\t2\n", ["train.tsv:2", "label"]),
    ("words\tstars\nfine\t1\n", ["train.tsv:1", "header"]),
])
def test_bad_sst2_files(tmp_path, content, needles):
    path = tmp_path / "train.tsv"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        read_sst2_file(path)
    msg = str(info.value).lower()
    assert "train.tsv" in msg and all(n.lower() in msg for n in needles), msg


def test_unknown_ner_tag(tmp_path):
    path = tmp_path / "dev.txt"
    path.write_text("Paris NNP B-LOC\nis VBZ O\nnice JJ B-FOOD\n\n")
    with pytest.raises(ValueError, match=r"dev\.txt:3: unknown tag 'B-FOOD'"):
        read_conll_file(path)


def _fake_checkpoint(tmp_path, minilm_dir):
    """A real (tiny, untrained) checkpoint saved by the training code, without training."""
    from minigpt_ptv2.training import build_task_model, save_checkpoint
    model = build_task_model("sst2", "soft", 2, model_dir=minilm_dir)
    save_checkpoint(model, tmp_path / "ck", task="sst2", method="soft", P=2, labels=("negative", "positive"))
    return tmp_path / "ck"


def test_corrupted_checkpoint_weights(tmp_path, minilm_dir):
    ck = _fake_checkpoint(tmp_path, minilm_dir)
    w = ck / "checkpoint.safetensors"
    w.write_bytes(w.read_bytes()[:-50])
    with pytest.raises(ValueError, match="checkpoint"):
        load_checkpoint(ck, model_dir=minilm_dir)


def test_checkpoint_on_another_backbone(tmp_path, minilm_dir, tiny_bert_dir):
    ck = _fake_checkpoint(tmp_path, minilm_dir)
    with pytest.raises(ValueError, match="different backbone.*D: checkpoint 384 vs model 24"):
        load_checkpoint(ck, model_dir=tiny_bert_dir)


# --- the command line: one line on stderr, exit 2, nothing written ---------------------------
@pytest.mark.parametrize("argv, needle", [
    (["train", "sst2", "magic"], "invalid choice"),
    (["train", "sst2", "prefix", "--P", "0"], "--P"),
    (["train", "sst2", "prefix", "--epochs", "-1"], "--epochs"),
    (["train", "sst2", "prefix", "--data-dir", "/nonexistent/data"], "/nonexistent/data"),
    (["eval", "/nonexistent/ckpt"], "/nonexistent/ckpt"),
    (["predict", "/nonexistent/ckpt", "a sentence"], "/nonexistent/ckpt"),
    (["trace", "--method", "prefix", "--config", "nope"], "nope"),
    (["export-peft", "/nonexistent/ckpt", "/nonexistent/out"], "/nonexistent/ckpt"),
])
def test_cli_bad_arguments_fail_in_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default --out would land here
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own refusals
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert needle in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir()), "a failed command wrote files"


def test_fully_padded_row_and_masked_prefix_give_no_nan(enc, dec):
    for model in (enc, dec):
        model.attach(KVPrefix(model.config, 3))
        model.prompt.virtual_keep[:] = False
        x = ids(model, 2, 4)
        mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
        out = model(x, attention_mask=mask)
        t = out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits
        model.detach_prompt()
        assert torch.isfinite(t).all()
