"""Each architecture's converter works both ways: a HuggingFace folder -> ours -> (changed, as
fine-tuning changes it) -> save_pretrained -> a folder transformers loads with outputs equal to
ours. And `export-hf` takes a fully fine-tuned checkpoint out of the project that way."""
from __future__ import annotations

import json

import pytest
import torch

from minigpt_ptv2.cli import main
from minigpt_ptv2.models import architecture, load_pretrained, save_pretrained
from minigpt_ptv2.models.presets import PRESETS
from minigpt_ptv2.prompts import KVPrefix
from tolerances import FP32_KERNELS

transformers = pytest.importorskip("transformers")
import reference as R  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _perturbed(model, seed: int):
    """Every weight moved a little, as fine-tuning moves it: the saved folder must carry our values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def small_bert_dir(tmp_path_factory):
    """A random BertModel with every dimension distinct (and a pooler), saved by transformers."""
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=40, max_position_embeddings=32)
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("bert_small")
    transformers.BertModel(cfg).eval().save_pretrained(path)
    return path


def _hf_outputs(kind, path, ids):
    with torch.no_grad():
        if kind == "bert":
            out = transformers.BertModel.from_pretrained(path).eval()(ids)
            return torch.cat([out.last_hidden_state.flatten(), out.pooler_output.flatten()])
        cls = transformers.GPT2LMHeadModel if kind == "gpt2" else transformers.LlamaForCausalLM
        return cls.from_pretrained(path).eval()(ids).logits.flatten()


def _our_outputs(model, ids):
    with torch.no_grad():
        out = model(ids)
    if hasattr(out, "pooler_output"):
        return torch.cat([out.last_hidden_state.flatten(), out.pooler_output.flatten()])
    return out.logits.flatten()


@pytest.mark.parametrize("kind, folder", [("bert", "small_bert_dir"), ("gpt2", "gpt2_tiny_dir"),
                                          ("llama", "llama_tiny_dir"), ("llama", "tied_llama_dir")])
def test_folder_to_ours_to_folder_to_transformers(kind, folder, request, tmp_path):
    ours = _perturbed(load_pretrained(request.getfixturevalue(folder)), seed=1)
    ours.attach(KVPrefix(ours.config, 3))  # a prompt is not part of the backbone folder
    out = save_pretrained(ours, tmp_path / "out")
    ours.detach_prompt()
    ids = torch.randint(1, ours.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(2))
    theirs, mine = _hf_outputs(kind, out, ids), _our_outputs(ours, ids)
    assert (theirs - mine).abs().max().item() <= FP32_KERNELS
    assert (theirs - _our_outputs(load_pretrained(request.getfixturevalue(folder)), ids)).abs().max() > 1e-3
    again = load_pretrained(out)  # and back into ours: the very same tensors
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == kind and not any(k.startswith("prompt") for k in saved)


@pytest.fixture(scope="module")
def tied_llama_dir(tmp_path_factory):
    return R.hf_llama_tiny(tmp_path_factory.mktemp("llama_tied"), seed=6, tie_word_embeddings=True)[1]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_config_survives_the_trip_through_config_json(name):
    cfg = PRESETS[name]
    arch = architecture(cfg.model_type)
    hf = json.loads(json.dumps(arch.config_to_hf(cfg)))  # as written to disk
    assert arch.config_from_hf(hf, "config.json") == cfg
    assert transformers.AutoConfig.for_model(**hf).model_type == cfg.model_type


def test_export_hf_takes_a_fully_fine_tuned_checkpoint_out(minilm_dir, tmp_path, capsys):
    data = tmp_path / "data" / "sst2"
    data.mkdir(parents=True)
    rows = "".join(f"{t}\t{y}\n" for t, y in [("a fine film", 1), ("a dull film", 0), ("great fun", 1),
                                              ("boring and long", 0)])
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", "sst2", "full", "--epochs", "1", "--batch-size", "2", "--max-length", "16",
                 "--lr", "1e-3", "--no-progress", "--data-dir", str(tmp_path / "data"),
                 "--model-dir", str(minilm_dir), "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["export-hf", str(run), str(tmp_path / "hf"), "--model-dir", str(minilm_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"config.json", "model.safetensors", "vocab.txt"} <= set(info["files"])
    from minigpt_ptv2.training.checkpoint import load_checkpoint
    tuned, _ = load_checkpoint(run, minilm_dir)
    ids = torch.tensor([[101, 1037, 2986, 2143, 102]])
    with torch.no_grad():
        ref = transformers.BertModel.from_pretrained(tmp_path / "hf").eval()(ids).last_hidden_state
        assert (tuned.encoder(ids).last_hidden_state - ref).abs().max().item() <= FP32_KERNELS
        original = transformers.BertModel.from_pretrained(minilm_dir).eval()(ids).last_hidden_state
    assert (original - ref).abs().max() > 1e-4  # training moved the backbone: the export carries it
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")  # a folder a user can load whole
    assert tok("a fine film")["input_ids"][0] == 101


def test_export_hf_refuses_a_prompt_checkpoint(minilm_dir, tmp_path, capsys):
    from minigpt_ptv2.training.checkpoint import save_checkpoint
    from minigpt_ptv2.training.tasks import build_task_model
    model = build_task_model("sst2", "prefix", 2, model_dir=minilm_dir)
    save_checkpoint(model, tmp_path / "run", task="sst2", method="prefix", P=2)
    assert main(["export-hf", str(tmp_path / "run"), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "method 'prefix', which leaves the backbone as it was" in err and "export-peft" in err
    assert not (tmp_path / "hf").exists()
