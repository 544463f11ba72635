"""Bad files, refused by name: data files, config.json, weights, sharded indexes, tokenizer folders.

Each row is one example of a rule that holds at every load (issue rules 3, 6 and 7):
- no result from a broken number: a NaN or infinite weight, or an integer where a float belongs,
  is refused naming the tensor and the file;
- a file's error names the file, the line and the field: a Latin-1 byte, broken JSON, a field
  of the wrong kind ("384", true, a list), a header we do not read;
- a model folder's files stay inside it: a sharded index (or a symlink) leading elsewhere is
  refused, even when the file it leads to exists and would load.
Each row writes its bad input in `setup`, then `check` runs it: a UserError naming the culprit
(or, for the command line, exit 2 and one line), and nothing written.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from unittest import mock

import pytest
import torch
from harness import Case, check
from safetensors.torch import load_file, save_file

from minigpt_ptv2.cli import main
from minigpt_ptv2.data import data_dir, load_sst2, read_conll_file, read_sst2_file
from minigpt_ptv2.errors import InputError, MissingFileError, NonFiniteError
from minigpt_ptv2.models import load_pretrained
from minigpt_ptv2.pretrained import default_model_dir

transformers = pytest.importorskip("transformers")

TINY = {}  # "bert", "gpt2": tiny HF folders saved by transformers, made once per module
KEY = "encoder.layer.1.attention.self.key.weight"  # a BERT checkpoint key


@pytest.fixture(scope="module", autouse=True)
def tiny_models(tmp_path_factory):
    torch.manual_seed(5)
    TINY["bert"] = tmp_path_factory.mktemp("bert")
    transformers.BertModel(transformers.BertConfig(
        vocab_size=120, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=64)).save_pretrained(TINY["bert"])
    TINY["gpt2"] = tmp_path_factory.mktemp("gpt2")
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=130, n_embd=24, n_layer=2, n_head=4, n_positions=64)).save_pretrained(TINY["gpt2"])


@dataclass
class Row(Case):
    setup: Callable = lambda tmp: None  # writes the bad input before the snapshot


# --- writing bad inputs ------------------------------------------------------------------------------

def model(tmp, kind="bert") -> Path:
    """A copy of a tiny model folder at tmp/model."""
    return Path(shutil.copytree(TINY[kind], tmp / "model"))


def edit_config(kind="bert", **fields):
    def setup(tmp):
        path = model(tmp, kind) / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return setup


def edit_weights(edit, name="model.safetensors"):
    """Rewrite the tiny BERT's weights with edit(state_dict), as safetensors or a .bin pickle."""
    def setup(tmp):
        folder = model(tmp)
        sd = edit(dict(load_file(str(folder / "model.safetensors"))))
        (folder / "model.safetensors").unlink()
        if name.endswith(".safetensors"):
            save_file(sd, str(folder / name))
        else:
            torch.save(sd, folder / name)
    return setup


def with_value(key, value):
    def edit(sd):
        t = sd[key].clone()
        t.view(-1)[3] = value
        return {**sd, key: t}
    return edit


def sharded(weight_map=None, index=None, link=None):
    """The tiny BERT split in two shards plus an index; weight_map(keys, tmp) -> the map to write.
    The second shard is also written *outside* the folder (tmp/outside.safetensors), so a row
    that points there would load it if nothing stopped it."""
    def setup(tmp):
        folder = model(tmp)
        sd = load_file(str(folder / "model.safetensors"))
        (folder / "model.safetensors").unlink()
        keys = sorted(sd)
        first, second = keys[: len(keys) // 2], keys[len(keys) // 2:]
        save_file({k: sd[k] for k in first}, str(folder / "a.safetensors"))
        save_file({k: sd[k] for k in second}, str(tmp / "outside.safetensors"))
        wm = {**{k: "a.safetensors" for k in first}, **{k: "b.safetensors" for k in second}}
        if link:
            (folder / "b.safetensors").symlink_to(tmp / "outside.safetensors")
        else:
            shutil.copy(tmp / "outside.safetensors", folder / "b.safetensors")
        if weight_map:
            wm = weight_map(wm, tmp)
        body = index if index is not None else {"metadata": {}, "weight_map": wm}
        (folder / "model.safetensors.index.json").write_text(json.dumps(body))
    return setup


def write(relative, data: bytes):
    def setup(tmp):
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return setup


def load(tmp):
    return load_pretrained(tmp / "model")


def cli_import(tmp):
    """The command that loads a backbone and nothing else first: import-peft --model-dir."""
    adapter = tmp / "adapter"
    adapter.mkdir(exist_ok=True)
    return main(["import-peft", str(adapter), str(tmp / "out"), "--model-dir", str(tmp / "model")])


def cli_train(task):
    return lambda tmp: main(["train", task, "prefix", "--data-dir", str(tmp / "data"), "--out",
                             str(tmp / "run"), "--no-progress"])


def tokenizer_file(name: str, data: bytes, also=None):
    """A model folder holding one tokenizer file (and optionally another) with the given bytes."""
    def setup(tmp):
        folder = model(tmp)
        for n, d in ((name, data), *([also] if also else [])):
            (folder / n).write_bytes(d)
    return setup


LATIN1_SST2 = "text\tlabel\nfine\t1\ncaf\xe9 au lait\t1\n".encode("latin-1")
LATIN1_CONLL = "EU NNP B-ORG\n\nPel\xe9 NNP B-PER\n".encode("latin-1")

ROWS = [
    # --- data files: file, line, byte or field ----------------------------------------------------
    Row("sst2 Latin-1 byte", lambda tmp: read_sst2_file(tmp / "d.tsv"), ["d.tsv:3", "0xe9", "UTF-8"],
        InputError, setup=write("d.tsv", LATIN1_SST2)),
    Row("conll Latin-1 byte", lambda tmp: read_conll_file(tmp / "d.txt"), ["d.txt:3", "0xe9", "UTF-8"],
        InputError, setup=write("d.txt", LATIN1_CONLL)),
    Row("sst2 saved as UTF-16", lambda tmp: read_sst2_file(tmp / "d.tsv"), ["d.tsv:1", "UTF-16"],
        InputError, setup=write("d.tsv", "text\tlabel\nok\t1\n".encode("utf-16"))),
    Row("sst2 GLUE test header", lambda tmp: read_sst2_file(tmp / "d.tsv"),
        ["d.tsv:1", "bad header", "'sentence<TAB>label'"], InputError,
        setup=write("d.tsv", b"index\tsentence\n0\tit 's a film\n")),
    Row("sst2 label 2", lambda tmp: read_sst2_file(tmp / "d.tsv"), ["d.tsv:2", "0 or 1", "'2'"],
        InputError, setup=write("d.tsv", b"text\tlabel\nmeh\t2\n")),
    Row("conll unknown tag", lambda tmp: read_conll_file(tmp / "d.txt"), ["d.txt:1", "'B-PERSON'"],
        InputError, setup=write("d.txt", b"Peter NNP B-PERSON\n")),
    Row("data dir is a file", lambda tmp: data_dir(tmp / "f"), ["--data-dir", "is a file"],
        MissingFileError, setup=write("f", b"")),
    Row("max_examples 0", lambda tmp: load_sst2("dev", tmp / "data", max_examples=0), ["max_examples", "0"],
        InputError, setup=write("data/sst2/dev.tsv", b"text\tlabel\nok\t1\n")),
    Row("cli: train on Latin-1 sst2", cli_train("sst2"), ["train.tsv:3", "0xe9"], cli=True,
        setup=write("data/sst2/train.tsv", LATIN1_SST2)),
    Row("cli: train on Latin-1 conll", cli_train("conll"), ["train.txt:3", "0xe9"], cli=True,
        setup=write("data/conll2003/train.txt", LATIN1_CONLL)),

    # --- config.json: file, line, field and the kind expected ---------------------------------------
    Row("hidden_size \"384\"", load, ["config.json", "'hidden_size'", "an int", '"384" (str)'], InputError,
        setup=edit_config(hidden_size="384")),
    Row("num_attention_heads true", load, ["config.json", "'num_attention_heads'", "true (bool)"], InputError,
        setup=edit_config(num_attention_heads=True)),
    Row("vocab_size a list", load, ["config.json", "'vocab_size'", "(list)"], InputError,
        setup=edit_config(vocab_size=[120])),
    Row("gpt2 n_embd \"24\": the file's spelling", load, ["config.json", "'n_embd'", "(str)"], InputError,
        setup=edit_config("gpt2", n_embd="24")),
    Row("layer_norm_eps NaN", load, ["config.json", "'layer_norm_eps'", "finite"], InputError,
        setup=edit_config(layer_norm_eps=float("nan"))),
    Row("n_layer 0", load, ["config.json", "n_layer must be positive", "0"], InputError,
        setup=edit_config("gpt2", n_layer=0)),
    Row("config.json broken JSON", load, ["config.json", "line 2, column"], InputError,
        setup=lambda tmp: (model(tmp) / "config.json").write_text('{"model_type": "bert",\n "x": }')),
    Row("config.json a list", load, ["config.json", "JSON object", "list"], InputError,
        setup=lambda tmp: (model(tmp) / "config.json").write_text("[]")),
    Row("config.json Latin-1", load, ["config.json", "not UTF-8"], InputError,
        setup=lambda tmp: (model(tmp) / "config.json").write_bytes(b'{"model_type": "b\xe9rt"}')),
    Row("MINIGPT_PTV2_MODEL missing", lambda tmp: _with_env(tmp / "nope", default_model_dir),
        ["MINIGPT_PTV2_MODEL", "does not exist", "nope"], MissingFileError),
    Row("cli: config field of the wrong kind", cli_import, ["config.json", "'hidden_size'"], cli=True,
        setup=edit_config(hidden_size="24")),

    # --- weights: finite, floating, a state dict ----------------------------------------------------
    Row("NaN backbone weight", load, ["model.safetensors", repr(KEY), "1 NaN"], NonFiniteError,
        setup=edit_weights(with_value(KEY, float("nan")))),
    Row("inf in pytorch_model.bin", load, ["pytorch_model.bin", "'pooler.dense.weight'", "1 infinite"],
        NonFiniteError, setup=edit_weights(with_value("pooler.dense.weight", float("inf")), "pytorch_model.bin")),
    Row("integer weight", load, ["layers.0.ffn_in.bias", "torch.int64", "floating"], InputError,
        setup=edit_weights(lambda sd: {**sd, "encoder.layer.0.intermediate.dense.bias":
                                       torch.zeros(40, dtype=torch.int64)})),
    Row("pytorch_model.bin holds a list", load, ["pytorch_model.bin", "state dict", "list"], InputError,
        setup=edit_weights(lambda sd: list(sd.values()), "pytorch_model.bin")),
    Row("model.safetensors is text", load, ["model.safetensors", "could not read"], InputError,
        setup=lambda tmp: (model(tmp) / "model.safetensors").write_bytes(b"not a safetensors file")),
    Row("cli: NaN backbone weight", cli_import, ["model.safetensors", repr(KEY), "NaN"], cli=True,
        setup=edit_weights(with_value(KEY, float("nan")))),

    # --- sharded index: stays in the folder, has the documented shape --------------------------------
    Row("index points at ../outside", load, ["'../outside.safetensors'", "outside the model folder"],
        InputError, setup=sharded(lambda wm, tmp: {k: ("../outside.safetensors" if f == "b.safetensors" else f)
                                                   for k, f in wm.items()})),
    Row("index points at an absolute path", load, ["outside.safetensors", "outside the model folder"],
        InputError, setup=sharded(lambda wm, tmp: {k: (str(tmp / "outside.safetensors") if f == "b.safetensors"
                                                       else f) for k, f in wm.items()})),
    Row("shard is a symlink out of the folder", load, ["'b.safetensors'", "outside the model folder"],
        InputError, setup=sharded(link=True)),
    Row("model.safetensors symlinked from elsewhere", load, ["'model.safetensors'", "outside the model folder"],
        InputError, setup=lambda tmp: _link_out(model(tmp) / "model.safetensors", tmp / "w.safetensors")),
    Row("weight_map a list", load, ["model.safetensors.index.json", "'weight_map'", "an object"], InputError,
        setup=sharded(index={"weight_map": ["a.safetensors"]})),
    Row("weight_map value an int", load, ["model.safetensors.index.json", "weight_map['", "a file name"],
        InputError, setup=sharded(lambda wm, tmp: {**wm, next(iter(wm)): 3})),
    Row("index names a missing shard", load, ["'c.safetensors'", "not in"], MissingFileError,
        setup=sharded(lambda wm, tmp: {k: ("c.safetensors" if f == "b.safetensors" else f) for k, f in wm.items()})),
    Row("index assigns tensors to a shard that lacks them", load,
        ["b.safetensors", "does not hold what", "absent ['embeddings."], InputError,
        setup=sharded(lambda wm, tmp: {k: "b.safetensors" for k in wm})),
    Row("cli: index points outside", cli_import, ["outside the model folder"], cli=True,
        setup=sharded(lambda wm, tmp: {k: "../outside.safetensors" for k in wm})),

    # --- tokenizer folder ----------------------------------------------------------------------------
    Row("tokenizer folder without vocab", lambda tmp: _wordpiece(tmp / "model"),
        ["tokenizer.json", "vocab.txt"], MissingFileError, setup=model),
    Row("tokenizer.json broken JSON", lambda tmp: _wordpiece(tmp / "model"),
        ["tokenizer.json", "line 1, column"], InputError, setup=tokenizer_file("tokenizer.json", b'{"model": ')),
    Row("tokenizer.json not a tokenizer", lambda tmp: _wordpiece(tmp / "model"),
        ["tokenizer.json", "not a tokenizer file"], InputError,
        setup=tokenizer_file("tokenizer.json", b'{"version": "1.0", "model": 3}')),
    Row("vocab.txt Latin-1", lambda tmp: _wordpiece(tmp / "model"), ["vocab.txt:2", "0xe9"], InputError,
        setup=tokenizer_file("vocab.txt", "[PAD]\ncaf\xe9\n".encode("latin-1"))),
    Row("tokenizer_config do_lower_case \"yes\"", lambda tmp: _wordpiece(tmp / "model"),
        ["tokenizer_config.json", "'do_lower_case'", "true or false"], InputError,
        setup=tokenizer_file("tokenizer_config.json", b'{"do_lower_case": "yes"}',
                             also=("vocab.txt", b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n"))),
]



def _with_env(value, fn):
    with mock.patch.dict(os.environ, {"MINIGPT_PTV2_MODEL": str(value)}):
        return fn()


def _link_out(link: Path, target: Path):
    shutil.move(link, target)
    link.symlink_to(target)


def _wordpiece(folder):
    from minigpt_ptv2.data import WordPiece
    return WordPiece.from_model_dir(folder)


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_refused(row, tmp_path):
    row.setup(tmp_path)
    check(row, tmp_path)


def test_the_outside_shard_would_load(tmp_path):
    """The index rows above are refused for where they point, not for a file that could not be
    read: the same shards inside the folder load (so 'outside' really held good weights)."""
    sharded()(tmp_path)
    assert load_pretrained(tmp_path / "model").config.hidden_size == 24
