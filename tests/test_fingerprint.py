"""The backbone fingerprint tells backbones apart: one changed weight deep in the shipped MiniLM
(not in the embedding table) and a checkpoint trained on the original is refused, naming the
checkpoint and the tensor."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from minigpt_ptv2 import BertEncoder, preset
from minigpt_ptv2.core import fingerprint as fp
from minigpt_ptv2.core.fingerprint import differences
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.models import load_pretrained, save_pretrained
from minigpt_ptv2.training import build_task_model, load_checkpoint, save_checkpoint
from minigpt_ptv2.training.checkpoint import BackboneWarning

DEEP = "encoder.layer.5.intermediate.dense.weight"  # HF name: the last layer's FFN, far from the embeddings


@pytest.fixture(scope="module")
def changed_dir(minilm_dir, tmp_path_factory):
    """A copy of the MiniLM folder with ONE weight of its last layer nudged by 1e-3."""
    out = tmp_path_factory.mktemp("minilm-changed")
    for f in minilm_dir.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copyfile(f, out / f.name)
    sd = load_file(str(minilm_dir / "model.safetensors"))
    sd[DEEP][7, 3] += 1e-3
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_one_changed_deep_weight_is_refused_by_name(minilm_dir, changed_dir, tmp_path):
    model = build_task_model("sst2", "prefix", 4, encoder=load_pretrained(minilm_dir, expect="bert"))
    save_checkpoint(model, tmp_path / "ck", task="sst2", method="prefix", P=4)
    load_checkpoint(tmp_path / "ck", minilm_dir)  # the same backbone passes
    with pytest.raises(InputError) as info:
        load_checkpoint(tmp_path / "ck", changed_dir)
    message = str(info.value)
    assert str(tmp_path / "ck") in message and "layers.5.ffn_in.weight" in message, message


def test_another_backbone_on_purpose_loads_with_a_warning_and_says_what_differs(minilm_dir, changed_dir, tmp_path):
    model = build_task_model("sst2", "prefix", 4, encoder=load_pretrained(minilm_dir, expect="bert"))
    save_checkpoint(model, tmp_path / "ck", task="sst2", method="prefix", P=4)
    with pytest.warns(BackboneWarning, match=r"different backbone \(weights: 1 of 79 tensors differ"):
        _, meta = load_checkpoint(tmp_path / "ck", changed_dir, allow_other_backbone=True)
    assert meta["other_backbone"] == "weights: 1 of 79 tensors differ, first layers.5.ffn_in.weight"


# --- the digest itself, on a tiny model ----------------------------------------------------------

def tiny_folder(path, vocab=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat")):
    torch.manual_seed(0)
    save_pretrained(BertEncoder(preset("bert-tiny")), path)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def test_the_digest_is_kept_until_a_weight_changes_in_place(monkeypatch):
    model = BertEncoder(preset("bert-tiny"))
    first = model.fingerprint()
    hashed = []
    real = fp.tensor_digest
    monkeypatch.setattr(fp, "tensor_digest", lambda t: hashed.append(1) or real(t))
    assert model.fingerprint() == first and not hashed  # kept: nothing hashed again
    with torch.no_grad():
        model.layers[2].ffn_out.weight[0, 0] += 1.0  # in place: torch counts it in the tensor's _version
    second = model.fingerprint()
    assert len(hashed) == len(first["tensors"]) and second["weights"] != first["weights"]
    assert [n for n in first["tensors"] if first["tensors"][n] != second["tensors"][n]] == ["layers.2.ffn_out.weight"]
    model.layers[0].ffn_in.weight.data[0, 0] += 1.0  # through .data: torch does not count it...
    assert model.fingerprint()["weights"] == second["weights"]
    assert model.fingerprint(recompute=True)["weights"] != second["weights"]  # ...until asked to hash anew


def test_another_dtype_or_tokenizer_is_named(tmp_path):
    folder = tiny_folder(tmp_path / "tiny")
    encoder = load_pretrained(folder, expect="bert")
    saved = encoder.fingerprint()
    assert saved["tokenizer"] is not None and differences(saved, encoder) == []
    assert differences(saved, load_pretrained(folder, dtype=torch.bfloat16))[0] == \
        "dtype: checkpoint float32 vs model bfloat16"
    other_vocab = tiny_folder(tmp_path / "other", vocab=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "dog"))
    assert differences(saved, load_pretrained(other_vocab)) == [
        "tokenizer: its files differ from the ones it was trained with"]
    built = BertEncoder(preset("bert-tiny"))  # built in Python: no tokenizer to compare, the weights still are
    assert built.tokenizer_digest is None and differences(saved, built)[0].startswith("weights: ")


def test_an_old_checkpoint_still_loads_with_a_note_and_is_checked_as_far_as_it_goes(tmp_path):
    folder = tiny_folder(tmp_path / "tiny")
    encoder = load_pretrained(folder, expect="bert")
    save_checkpoint(build_task_model("sst2", "prefix", 2, encoder=encoder), tmp_path / "ck", task="sst2",
                    method="prefix", P=2)
    meta = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    old = {k: v for k, v in meta["backbone"].items() if k in fp.DIMS}  # as written before every weight counted
    meta["backbone"] = {**old, "fingerprint": fp.legacy_fingerprint(encoder)}
    (tmp_path / "ck" / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.warns(BackboneWarning, match="older backbone fingerprint") as seen:
        load_checkpoint(tmp_path / "ck", folder)
    assert len(seen) == 1
    meta["backbone"]["fingerprint"] = "0" * 16
    (tmp_path / "ck" / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"different backbone \(embedding table: checkpoint 0000000000000000 vs"):
        load_checkpoint(tmp_path / "ck", folder)


def test_a_run_resumed_on_another_backbone_is_refused_unless_asked_and_then_recorded(tmp_path, monkeypatch, capsys):
    from test_train_lm import TEXT, TRAIN, cli, decoder_folder
    from minigpt_ptv2.training import state as run_state
    original = decoder_folder(tmp_path / "gpt2", "gpt2")
    changed = shutil.copytree(original, tmp_path / "changed")
    sd = load_file(str(changed / "model.safetensors"))
    sd["transformer.h.1.mlp.c_fc.weight"][0, 0] += 1e-3  # one weight of the last block
    save_file(sd, str(changed / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "text.txt").write_text(TEXT * 20, encoding="utf-8")
    real = run_state.save

    def save_then_stop(run_dir, meta, tensors):
        real(run_dir, meta, tensors)
        if meta["epochs_done"] == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(run_state, "save", save_then_stop)
    out = tmp_path / "run"
    assert cli(["train", "lm", "prefix", "--text-file", tmp_path / "text.txt", "--model-dir", original, *TRAIN,
                "--epochs", "2", "--out", out, "--no-progress"])[0] == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert cli(["train", "--resume", out, "--model-dir", changed])[0] == 2
    err = capsys.readouterr().err
    assert "different backbone (weights: 1 of " in err and "layers.1.ffn_in.weight" in err, err
    legacy = shutil.copytree(out, tmp_path / "legacy")  # as a run started before every weight was hashed
    state = legacy / run_state.DIRNAME / "state.json"
    meta = json.loads(state.read_text())
    meta["extra"]["args"]["backbone"] = fp.legacy_fingerprint(load_pretrained(original))
    state.write_text(json.dumps(meta))
    ck = json.loads((legacy / "checkpoint.json").read_text())
    ck["backbone"] = {**{k: ck["backbone"][k] for k in fp.DIMS}, "fingerprint": meta["extra"]["args"]["backbone"]}
    (legacy / "checkpoint.json").write_text(json.dumps(ck))
    assert cli(["train", "--resume", legacy, "--model-dir", original, "--no-progress"])[0] == 0
    assert "older backbone fingerprint" in capsys.readouterr().err
    assert cli(["train", "--resume", out, "--model-dir", changed, "--allow-other-backbone", "--no-progress"])[0] == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "layers.1.ffn_in.weight); using it anyway" in err, err
    recorded = json.loads((out / "checkpoint.json").read_text())["backbone"]
    assert recorded["resumed_on_other_backbone"].startswith("weights: 1 of ")
    assert cli(["train", "lm", "prefix", "--text-file", tmp_path / "text.txt", "--model-dir", original,
                "--allow-other-backbone", "--out", tmp_path / "new"])[0] == 2  # only a resume may
