"""Tiny checkpoints: a save/load round trip gives identical logits, the files are small, a
different backbone is refused with the difference named, a failed save leaves the previous
checkpoint intact, and a mixed or broken pair is refused instead of loading half of something.
Kills at every step of a save: tests/test_checkpoint_faults.py."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from minigpt_ptv2 import BertEncoder
from minigpt_ptv2.training import build_task_model, load_checkpoint, read_meta, save_checkpoint
from minigpt_ptv2.training import checkpoint as ckpt
from minigpt_ptv2.training.checkpoint import check_backbone

IDS = torch.tensor([[101, 1037, 6919, 2143, 102], [101, 10634, 102, 0, 0]])  # [B, N]
MASK = (IDS != 0).long()


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return BertEncoder.from_pretrained(minilm_dir)


def _trained(encoder, task="sst2", method="prefix", P=4, seed=0, **kw):
    """A model whose prompt and head hold non-default values, as after training."""
    torch.manual_seed(seed)
    model = build_task_model(task, method, P, encoder=copy.deepcopy(encoder), **kw)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _logits(model):
    with torch.no_grad():
        return model(IDS, MASK)


@pytest.mark.parametrize("task,method,kw", [
    ("sst2", "prefix", {}),
    ("sst2", "prefix-mlp", {"hidden": 32, "positions": "shifted"}),  # options + position policy survive
    ("conll", "deep", {}),
    ("sst2", "head-only", {}),
])
def test_round_trip_gives_identical_logits(encoder, minilm_dir, tmp_path, task, method, kw):
    model = _trained(encoder, task, method, **kw)
    info = save_checkpoint(model, tmp_path, task=task, method=method, P=4, method_kwargs=kw)
    loaded, meta = load_checkpoint(tmp_path, minilm_dir)
    assert torch.equal(_logits(loaded), _logits(model))  # the same weights through the same kernels
    assert not loaded.training and (meta["task"], meta["method"]) == (task, method)
    if method != "head-only":
        assert loaded.encoder.prompt.positions == kw.get("positions", "real")
    assert info["bytes"] == sum(f.stat().st_size for f in tmp_path.iterdir())
    assert sorted(f.name for f in tmp_path.iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]


def test_prompt_checkpoints_are_kilobytes(encoder, tmp_path):
    sizes = {}
    for method in ("soft", "prefix"):
        info = save_checkpoint(_trained(encoder, "sst2", method), tmp_path / method, task="sst2", method=method, P=4)
        sizes[method] = info["bytes"]
    # soft: [4, 384] fp32 = 6 KiB; prefix: [4, 6*2*384] fp32 = 72 KiB; plus head [2, 384] (3 KiB) and
    # about 5 KiB of JSON, 4 KiB of it the backbone's digest per tensor (79 tensors, core/fingerprint.py)
    assert 6 * 1024 < sizes["soft"] < 16 * 1024
    assert 72 * 1024 < sizes["prefix"] < 84 * 1024


def test_a_different_backbone_is_refused_and_the_difference_named(encoder, minilm_dir, tmp_path):
    save_checkpoint(_trained(encoder), tmp_path, task="sst2", method="prefix", P=4)
    saved = read_meta(tmp_path)["backbone"]
    check_backbone(saved, encoder)  # the same backbone passes
    torch.manual_seed(0)
    random_same_dims = BertEncoder(encoder.config)
    with pytest.raises(ValueError, match=r"different backbone \(weights: 79 of 79 tensors differ, first embeddings"):
        check_backbone(saved, random_same_dims)
    smaller = BertEncoder(encoder.config.replace(hidden_size=128, num_attention_heads=4, intermediate_size=256))
    with pytest.raises(ValueError, match=r"\(D: checkpoint 384 vs model 128; H: checkpoint 12 vs model 4"):
        check_backbone(saved, smaller)


def test_loading_onto_a_saved_model_of_other_dims_says_what_differs(encoder, tmp_path):
    transformers = pytest.importorskip("transformers")
    small = transformers.BertConfig(vocab_size=encoder.config.vocab_size, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64)
    transformers.BertModel(small).save_pretrained(tmp_path / "small-bert")
    save_checkpoint(_trained(encoder), tmp_path / "ck", task="sst2", method="prefix", P=4)
    with pytest.raises(ValueError, match="D: checkpoint 384 vs model 32; L: checkpoint 6 vs model 2"):
        load_checkpoint(tmp_path / "ck", tmp_path / "small-bert")


def test_corrupted_files_give_clear_errors(encoder, minilm_dir, tmp_path):
    save_checkpoint(_trained(encoder), tmp_path, task="sst2", method="prefix", P=4)
    weights, meta = tmp_path / "checkpoint.safetensors", tmp_path / "checkpoint.json"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="does not match checkpoint.json \\(sha256 differs\\)"):
        load_checkpoint(tmp_path, minilm_dir)
    m = json.loads(meta.read_text())
    del m["weights_sha256"]  # an older checkpoint without the hash: the reader itself must complain
    meta.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="could not read .*checkpoint.safetensors.*corrupted or truncated"):
        load_checkpoint(tmp_path, minilm_dir)
    meta.write_text("{not json")
    with pytest.raises(ValueError, match="checkpoint.json is not valid JSON"):
        load_checkpoint(tmp_path, minilm_dir)
    with pytest.raises(FileNotFoundError, match="is not a minigpt_ptv2 checkpoint: no checkpoint.json"):
        load_checkpoint(tmp_path / "nowhere", minilm_dir)


def test_a_failure_while_saving_leaves_the_previous_checkpoint_intact(encoder, minilm_dir, tmp_path, monkeypatch):
    first = _trained(encoder, seed=1)
    save_checkpoint(first, tmp_path, task="sst2", method="prefix", P=4)
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    real = ckpt.atomic.write_file

    def dies_half_way(path, data):
        real(path, data[: len(data) // 2])  # some bytes reach the disk, then the write fails
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.atomic, "write_file", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_trained(encoder, seed=2), tmp_path, task="sst2", method="prefix", P=4)
    monkeypatch.undo()
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before  # no leftover, no lock file
    assert torch.equal(_logits(load_checkpoint(tmp_path, minilm_dir)[0]), _logits(first))


def test_a_pair_mixed_by_hand_is_refused_on_load(encoder, minilm_dir, tmp_path):
    """What a kill can no longer produce (tests/test_checkpoint_faults.py), a copy still can."""
    save_checkpoint(_trained(encoder, seed=1), tmp_path / "a", task="sst2", method="prefix", P=4)
    save_checkpoint(_trained(encoder, seed=2), tmp_path / "b", task="sst2", method="prefix", P=4)
    (tmp_path / "a" / ckpt.WEIGHTS).write_bytes((tmp_path / "b" / ckpt.WEIGHTS).read_bytes())
    with pytest.raises(ValueError, match="two different saves"):
        load_checkpoint(tmp_path / "a", minilm_dir)


def test_a_non_finite_model_is_never_saved(encoder, tmp_path):
    model = _trained(encoder)
    with torch.no_grad():
        model.heads["sst2"].classifier.bias[0] = float("inf")
    with pytest.raises(FloatingPointError, match="refusing to save .*heads.sst2.classifier.bias hold NaN or "
                                                 "infinite values .*nothing was written"):
        save_checkpoint(model, tmp_path / "ck", task="sst2", method="prefix", P=4)
    assert not (tmp_path / "ck").exists()


def test_a_checkpoint_whose_json_names_no_weights_file_loads_checkpoint_safetensors(encoder, minilm_dir, tmp_path):
    """Checkpoints saved before checkpoint.json named its weights file keep loading."""
    model = _trained(encoder)
    save_checkpoint(model, tmp_path, task="sst2", method="prefix", P=4)
    meta = json.loads((tmp_path / ckpt.META).read_text())
    del meta["weights"]
    (tmp_path / ckpt.META).write_text(json.dumps(meta))
    assert torch.equal(_logits(load_checkpoint(tmp_path, minilm_dir)[0]), _logits(model))


def test_full_fine_tuning_round_trip(encoder, minilm_dir, tmp_path):
    """A `full` checkpoint carries the whole backbone, so its changed embeddings are not taken
    for a different backbone; only the dimensions are checked."""
    model = _trained(encoder, "sst2", "full")
    save_checkpoint(model, tmp_path, task="sst2", method="full", P=0)
    loaded, _ = load_checkpoint(tmp_path, minilm_dir)
    assert torch.equal(_logits(loaded), _logits(model))


def _to_version_1(tmp_path):
    """Rewrite a version-2 checkpoint as version 1 wrote it: backbone matrices in nn.Linear's
    [out, in] layout and separate query/key/value."""
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(tmp_path / ckpt.WEIGHTS))
    old = {}
    for k, t in tensors.items():
        if ".attn.qkv." in k:
            for name, part in zip(("query", "key", "value"), t.chunk(3, dim=-1)):
                old[k.replace(".qkv.", f".{name}.")] = (part.t() if t.dim() == 2 else part).contiguous()
        elif k.startswith("encoder.") and k.endswith(".weight") and any(
                s in k for s in (".attn.output.", ".ffn_in.", ".ffn_out.", "encoder.pooler.")):
            old[k] = t.t().contiguous()
        else:
            old[k] = t
    save_file(old, str(tmp_path / ckpt.WEIGHTS))
    meta = json.loads((tmp_path / ckpt.META).read_text())
    meta.update(version=1, weights_sha256=ckpt._sha256(tmp_path / ckpt.WEIGHTS))
    (tmp_path / ckpt.META).write_text(json.dumps(meta))
    return old


def test_version_1_checkpoints_are_converted_on_load(encoder, minilm_dir, tmp_path):
    model = _trained(encoder, "sst2", "full")
    save_checkpoint(model, tmp_path, task="sst2", method="full", P=0)
    old = _to_version_1(tmp_path)
    assert "encoder.layers.0.attn.query.weight" in old and "encoder.layers.0.attn.qkv.weight" not in old
    loaded, meta = load_checkpoint(tmp_path, minilm_dir)
    assert meta["version"] == 1
    assert torch.equal(_logits(loaded), _logits(model))


def test_an_unknown_version_is_refused(encoder, minilm_dir, tmp_path):
    save_checkpoint(_trained(encoder), tmp_path, task="sst2", method="prefix", P=4)
    meta = json.loads((tmp_path / ckpt.META).read_text())
    (tmp_path / ckpt.META).write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(ValueError, match="checkpoint version 99"):
        load_checkpoint(tmp_path, minilm_dir)
