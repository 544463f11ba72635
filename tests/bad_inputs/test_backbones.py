"""A checkpoint meets only the backbone it was trained on, at every door (core/fingerprint.py): eval,
predict, predict --also, generate, the API's loaders. One changed weight deep in the model, another
tokenizer or another dtype is refused, naming the checkpoint and what differs; --allow-other-
backbone runs it anyway with one warning line; an old checkpoint (the 16-row fingerprint) still
loads, with one note line. Rows run on tiny folders made once: a BERT and a GPT-2 saved by
save_pretrained, each with a copy whose last layer has one weight nudged."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from harness import Case, check
from safetensors.torch import load_file, save_file

from minigpt_ptv2 import BertEncoder, GPT2Decoder, preset
from minigpt_ptv2.cli import main
from minigpt_ptv2.core.fingerprint import legacy_fingerprint
from minigpt_ptv2.data.bpe import ByteLevelBPE
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.models import load_pretrained, save_pretrained
from minigpt_ptv2.prompts import freeze_backbone, make_method
from minigpt_ptv2.training import build_task_model, load_checkpoint, save_checkpoint
from minigpt_ptv2.training.lm import LMTaskModel, load_lm_checkpoint
from minigpt_ptv2.training.mixed import load_mixed

pytestmark = pytest.mark.usefixtures("one_thread")

F = {}  # folder name -> path, made once
VOCAB = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\ncat\n"


@dataclass
class Row(Case):
    setup: Callable = lambda tmp: None


def nudged(src, dst, key):
    """A copy of model folder src whose tensor `key` has one entry moved by 1e-3."""
    shutil.copytree(src, dst)
    sd = load_file(str(dst / "model.safetensors"))
    sd[key].view(-1)[5] += 1e-3
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module", autouse=True)
def folders(tmp_path_factory):
    from test_train_lm import bpe
    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    save_pretrained(BertEncoder(preset("bert-tiny")), root / "bert")
    (root / "bert" / "vocab.txt").write_text(VOCAB, encoding="utf-8")
    save_pretrained(GPT2Decoder(preset("gpt2-tiny").replace(vocab_size=300)), root / "gpt2")
    bpe("gpt2").save(str(root / "gpt2" / "tokenizer.json"))  # 300 tokens
    ByteLevelBPE.from_model_dir(root / "gpt2").encode("warm up")  # its \p{L} tables are built once, here
    F.update(bert=root / "bert", gpt2=root / "gpt2",
             bert_nudged=nudged(root / "bert", root / "bert-nudged", "encoder.layer.2.output.dense.weight"),
             gpt2_nudged=nudged(root / "gpt2", root / "gpt2-nudged", "transformer.h.2.mlp.c_proj.weight"))
    shutil.copytree(root / "bert", root / "bert-vocab")
    (root / "bert-vocab" / "vocab.txt").write_text(VOCAB.replace("cat", "dog"), encoding="utf-8")
    F["bert_vocab"] = root / "bert-vocab"
    for task in ("sst2", "conll"):
        save_checkpoint(build_task_model(task, "prefix", 2, model_dir=root / "bert"), root / task, task=task,
                        method="prefix", P=2, extra={"train": {"max_length": 16}})
        F[task] = root / task
    save_checkpoint(build_task_model("conll", "prefix", 2, model_dir=F["bert_nudged"]), root / "conll-nudged",
                    task="conll", method="prefix", P=2, extra={"train": {"max_length": 16}})
    save_checkpoint(build_task_model("sst2", "full", 0, model_dir=root / "bert"), root / "full", task="sst2",
                    method="full", P=0, extra={"train": {"max_length": 16}})
    decoder = load_pretrained(root / "gpt2")
    decoder.attach(make_method("prefix", decoder.config, 2))
    lm = LMTaskModel(decoder)
    freeze_backbone(lm, ("decoder.prompt.",))
    save_checkpoint(lm, root / "lm", task="lm", method="prefix", P=2,
                    extra={"train": {"model_dir": str(root / "gpt2"), "max_length": 16}})
    F.update({n: root / n for n in ("conll-nudged", "full", "lm")})
    legacy = shutil.copytree(root / "sst2", root / "legacy")
    meta = json.loads((legacy / "checkpoint.json").read_text())
    meta["backbone"] = {k: v for k, v in meta["backbone"].items() if k in ("model_type", "D", "L", "H", "H_kv", "d",
                                                                         "vocab_size")}
    meta["backbone"]["fingerprint"] = legacy_fingerprint(load_pretrained(root / "bert"))
    (legacy / "checkpoint.json").write_text(json.dumps(meta))
    F["legacy"] = legacy


def cli(*argv):
    """`main` on argv, {name} standing for a folder made above; stdout swallowed."""
    def run(tmp):
        with contextlib.redirect_stdout(io.StringIO()):
            return main([a.format(**F) for a in argv])
    return run


def works_with_one_warning(*argv, warns: str):
    """Exit 0, and stderr is exactly one line: the warning naming what differs."""
    def run(tmp):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main([a.format(**F) for a in argv])
        lines = err.getvalue().strip().splitlines()
        assert code == 0 and len(lines) == 1 and lines[0].startswith("warning: ") and warns in lines[0], lines
        return code
    return run


def as_bf16(tmp):
    encoder = load_pretrained(F["bert"], dtype=torch.bfloat16)
    return load_checkpoint(F["sst2"], encoder=encoder)


def edited_ck(name, edit):
    """tmp/ck: checkpoint `name` with checkpoint.json's backbone record edited."""
    def setup(tmp):
        folder = shutil.copytree(F[name], tmp / "ck")
        meta = json.loads((folder / "checkpoint.json").read_text())
        edit(meta["backbone"])
        (folder / "checkpoint.json").write_text(json.dumps(meta))
    return setup


def quietly(fn):
    def run(tmp):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(tmp)
    return run


CASES = [
    Case("eval on a backbone with one weight changed", cli("eval", "{sst2}", "--model-dir", "{bert_nudged}"),
         ["checkpoint", "sst2", "weights: 1 of", "first layers.2.ffn_out.weight"], cli=True, was="silent"),
    Case("predict on a backbone with one weight changed",
         cli("predict", "{sst2}", "the cat", "--model-dir", "{bert_nudged}"),
         ["sst2 was trained on a different backbone", "layers.2.ffn_out.weight"], cli=True, was="silent"),
    Case("predict on another tokenizer", cli("predict", "{sst2}", "the cat", "--model-dir", "{bert_vocab}"),
         ["different backbone", "tokenizer: its files differ"], cli=True, was="silent"),
    Case("predict --also: a member trained on another backbone",
         cli("predict", "{sst2}", "--also", "{conll-nudged}", "sst2: the cat", "--model-dir", "{bert}"),
         ["conll-nudged was trained on a different backbone", "layers.2.ffn_out.weight"], cli=True,
         was="silent"),
    Case("generate with an lm prompt on a changed decoder",
         cli("generate", "{lm}", "the cat", "--model-dir", "{gpt2_nudged}", "--max-new-tokens", "2"),
         ["lm was trained on a different backbone", "layers.2.ffn_out.weight"], cli=True, was="silent"),
    Case("API: load_checkpoint on a changed backbone", lambda tmp: load_checkpoint(F["sst2"], F["bert_nudged"]),
         ["different backbone", "weights: 1 of"], InputError, was="silent"),
    Case("API: load_lm_checkpoint on a changed decoder", lambda tmp: load_lm_checkpoint(F["lm"], F["gpt2_nudged"]),
         ["different backbone", "weights: 1 of"], InputError, was="silent"),
    Case("API: load_mixed over another backbone",
         lambda tmp: load_mixed({"sst2": F["sst2"], "conll": F["conll-nudged"]}, F["bert"]),
         ["conll-nudged", "different backbone"], InputError, was="silent"),
    Case("API: the backbone loaded in bfloat16", as_bf16, ["dtype: checkpoint float32 vs model bfloat16"],
         InputError),
    Case("a full checkpoint on another tokenizer", cli("eval", "{full}", "--model-dir", "{bert_vocab}"),
         ["full was trained on a different backbone", "tokenizer"], cli=True, was="silent"),
    Case("predict --allow-other-backbone: runs, one warning line",
         works_with_one_warning("predict", "{sst2}", "the cat", "--model-dir", "{bert_nudged}",
                                "--allow-other-backbone", warns="layers.2.ffn_out.weight"),
         works=True, cli=True, was="silent"),
    Case("generate --allow-other-backbone: runs, one warning line",
         works_with_one_warning("generate", "{lm}", "the cat", "--model-dir", "{gpt2_nudged}", "--max-new-tokens", "2",
                                "--allow-other-backbone", warns="using it anyway"),
         works=True, cli=True, was="silent"),
    Case("an old checkpoint loads with one note line",
         works_with_one_warning("predict", "{legacy}", "the cat", "--model-dir", "{bert}",
                                warns="older backbone fingerprint"), works=True, cli=True),
    Row("an old checkpoint's 16 rows differ", quietly(lambda tmp: load_checkpoint(tmp / "ck", F["bert"])),
        ["embedding table: checkpoint 0000000000000000"], InputError,
        setup=edited_ck("legacy", lambda b: b.update(fingerprint="0" * 16))),
    Row("a record whose tensor digests were edited", lambda tmp: load_checkpoint(tmp / "ck", F["bert"]),
        ["weights: 1 of", "first embeddings.word_embeddings.weight"], InputError,
        setup=edited_ck("sst2", lambda b: b.update(weights="0" * 64, tensors={
            **b["tensors"], "embeddings.word_embeddings.weight": "0" * 16}))),
    Case("train --allow-other-backbone without --resume",
         cli("train", "sst2", "prefix", "--allow-other-backbone", "--out", "run"),
         ["--allow-other-backbone goes with --resume"], cli=True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_backbone(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    getattr(case, "setup", lambda tmp: None)(tmp_path)
    check(case, tmp_path)
