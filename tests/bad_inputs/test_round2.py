"""A second, independent round of bad inputs: cases found by trying the package without this table.

Each row is a new way in, grouped by where it enters:
- checkpoints and run folders: a Ctrl-C that lands just after a save's commit point (the save
  used to delete the weights its new JSON names), fields of checkpoint.json that disagree with
  each other or with the head, a run whose output folder is removed while it trains, a full disk
  under the resume state;
- model folders: a config.json whose sizes disagree with its weights (refused before any tensor
  of that size is allocated), tokenizer.json files of the wrong shape or whose added-token ids
  the tokenizers library would read otherwise;
- the command line: empty paths, options that do nothing where they are given, defaults that do
  not fit the model, messages that named the wrong cause;
- the API: arguments of the wrong type at load_pretrained, save_pretrained, the tokenizers and
  generate, and logits that turn non-finite during generation.
Rows run on tiny inputs (tests/tiny_world.py); each is refused before a model is loaded, or in
well under a second.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from unittest import mock

import pytest
import tiny_world
import torch
from harness import Case, Row, check

from minigpt_ptv2 import preset
from minigpt_ptv2.cli import main
from minigpt_ptv2.data.bpe import ByteLevelBPE
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.prompts import make_method
from minigpt_ptv2.training import atomic, save_checkpoint
from minigpt_ptv2.training.checkpoint import read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
W: dict = {}


@pytest.fixture(scope="module", autouse=True)
def world(tmp_path_factory):
    from minigpt_ptv2.models import save_pretrained
    from minigpt_ptv2.models.llama import LlamaDecoder
    root = tmp_path_factory.mktemp("round2")
    W.update(tiny_world.build(root))
    W["llama"] = save_pretrained(LlamaDecoder(preset("llama-tiny").replace(vocab_size=300)), root / "llama")


def cli(*argv):
    """A row running `main` (in the row's folder: test_round2 moves there); {tmp} is that folder,
    {bert}, {ck}, ... the world's."""
    return lambda tmp: main([a.format(tmp=tmp, **W) for a in argv])


# --- checkpoints and run folders ---------------------------------------------------------------------

def interrupted_just_after_commit(tmp):
    """Ctrl-C arriving between os.replace (the commit point) and the end of its try block: the new
    checkpoint must stay whole (the save used to delete the weights the new JSON names)."""
    from minigpt_ptv2.training import load_checkpoint
    model, meta = load_checkpoint(W["ck"], W["bert"])
    out = tmp / "ck"
    shutil.copytree(W["ck"], out)
    with torch.no_grad():
        model.encoder.prompt.embedding.weight.add_(1.0)
    real = os.replace

    def replace_then_interrupt(src, dst):
        real(src, dst)
        raise KeyboardInterrupt
    with mock.patch.object(atomic.os, "replace", replace_then_interrupt), pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, out, task="sst2", method="prefix", P=2, method_kwargs=meta["method_kwargs"],
                        labels=meta["labels"])
    _, tensors = read_checkpoint(out)  # whole and readable: the new pair
    assert torch.equal(tensors["encoder.prompt.embedding.weight"], model.encoder.prompt.embedding.weight)


def ck_edited(edit):
    """Setup: tmp/ck, a copy of the world's prefix checkpoint (positions "shifted") whose
    checkpoint.json has gone through edit(meta)."""
    def setup(tmp):
        shutil.copytree(W["ck"], tmp / "ck")
        meta = json.loads((tmp / "ck" / "checkpoint.json").read_text())
        edit(meta)
        (tmp / "ck" / "checkpoint.json").write_text(json.dumps(meta))
    return setup


def load_ck(tmp):
    from minigpt_ptv2.training import load_checkpoint
    return load_checkpoint(tmp / "ck", W["bert"])


# --- the command line and text ------------------------------------------------------------------------

def symlinks(*pairs):
    """Setup: symbolic links (name, target) in tmp, e.g. ("loop", "loop")."""
    return lambda tmp: [os.symlink(target, tmp / name) for name, target in pairs]


def tsv(text: bytes):
    """Setup: tmp/train.tsv holding `text`."""
    return lambda tmp: (tmp / "train.tsv").write_bytes(text)


def read_tsv(tmp):
    from minigpt_ptv2.data.sst2 import read_sst2_file
    return read_sst2_file(tmp / "train.tsv")


def predicted_from_stdin(data: bytes, texts: list):
    """A row that works: predict reads `data` on standard input and predicts exactly `texts`."""
    def run(tmp):
        out = io.StringIO()
        with mock.patch("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert cli("predict", "{ck}", "--model-dir", "{bert}", "--max-length", "32", "--json")(tmp) == 0
        assert [p["text"] for p in json.loads(out.getvalue())["predictions"]] == texts, out.getvalue()
    return run


TRAIN = ("train", "sst2", "prefix", "--model-dir", "{bert}", "--data-dir", "{data}", "--epochs", "1",
         "--max-length", "32", "--no-progress")


# --- the API: arguments of the wrong type ---------------------------------------------------------------

def bpe():
    return ByteLevelBPE.from_model_dir(W["gpt2"])


def wordpiece():
    from minigpt_ptv2.data import WordPiece
    return WordPiece.from_model_dir(W["bert"])


def assert_equal(a, b):
    assert a == b, (a, b)


def saved_over_file(tmp):
    from minigpt_ptv2.models import load_pretrained, save_pretrained
    (tmp / "text.txt").write_text("notes")
    try:
        save_pretrained(load_pretrained(W["bert"]), tmp / "text.txt")
    finally:
        assert (tmp / "text.txt").read_text() == "notes"
        (tmp / "text.txt").unlink()  # the row's snapshot is taken before it was written


def loaded(**kw):
    from minigpt_ptv2.models import load_pretrained
    return lambda tmp: load_pretrained(kw.pop("model_dir", W["bert"]), **kw)


# --- model folders: config.json sizes against the weights; tokenizer.json fields ---------------------

def edited(key, file="config.json", **changes):
    """Setup: a copy of the world's folder `key` whose JSON `file` has `changes`."""
    def setup(tmp):
        shutil.copytree(W[key], tmp / key)
        config = json.loads((tmp / key / file).read_text())
        (tmp / key / file).write_text(json.dumps({**config, **changes}))
    return setup


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32, "rope_theta": 10000.0}


def load(key):
    from minigpt_ptv2.models import load_pretrained
    return lambda tmp: load_pretrained(tmp / key)


def refused_unbuilt(run, names=()):
    """A row whose refusal used to come only after a long build (3000 blocks: seconds): refused by
    name without a model being built at all."""
    from minigpt_ptv2.models.gpt2 import GPT2Decoder

    def unbuilt(tmp):
        with mock.patch.object(GPT2Decoder, "__init__", side_effect=AssertionError("a model was built")), \
                pytest.raises(InputError) as info:
            run(tmp)
        assert all(n in str(info.value) for n in names), str(info.value)
    return unbuilt


def bpe_edited(edit):
    """ByteLevelBPE of the tiny GPT-2's tokenizer.json after edit(spec) (the spec as a dict)."""
    def run(tmp):
        spec = json.loads((W["gpt2"] / "tokenizer.json").read_text())
        edit(spec)
        return ByteLevelBPE(spec, "tokenizer.json")
    return run


def same_ids_as_tokenizers(edit, text):
    def run(tmp):
        from tokenizers import Tokenizer
        spec = json.loads((W["gpt2"] / "tokenizer.json").read_text())
        edit(spec)
        ours = ByteLevelBPE(spec, "tokenizer.json").encode(text)
        assert ours == Tokenizer.from_str(json.dumps(spec)).encode(text).ids and 279 in ours, ours
    return run


def added(content, id, **flags):
    return {"id": id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": False, **flags}


ROWS = [
    Case("a Ctrl-C just after a save's commit point keeps the new checkpoint", interrupted_just_after_commit,
         works=True, was="loss"),

    Row("checkpoint.json: method_kwargs with an option the method does not take", load_ck,
        ["checkpoint.json: method_kwargs", "'prefix' takes no option 'foo'", "'positions'"], InputError,
        was="escape", setup=ck_edited(lambda m: m["method_kwargs"].update(foo=1))),
    Row("checkpoint.json: method_kwargs init (a train option, not the method's)", load_ck,
        ["checkpoint.json: method_kwargs", "takes no option 'init'"], InputError,
        was="escape", setup=ck_edited(lambda m: m["method_kwargs"].update(init="tokens"))),
    Row("checkpoint.json: one label name for a two-class head", cli("predict", "{tmp}/ck", "--model-dir", "{bert}",
                                                                    "--max-length", "32", "a fine film"),
        ["checkpoint.json: field 'labels' must be 2 names", "sst2"], cli=True, was="escape",
        setup=ck_edited(lambda m: m.update(labels=["bad"]))),
    Row("checkpoint.json: three label names for a two-class head", load_ck,
        ["field 'labels' must be 2 names", "['x', 'y', 'z']"], InputError, was="silent",
        setup=ck_edited(lambda m: m.update(labels=["x", "y", "z"]))),
    Row("checkpoint.json: labels that are numbers", load_ck, ["field 'labels' must be 2 names (strings)", "[1, 2]"],
        InputError, was="silent", setup=ck_edited(lambda m: m.update(labels=[1, 2]))),
    Row("checkpoint.json: positions real beside method_kwargs positions shifted", load_ck,
        ["method_kwargs says positions 'shifted'", "field 'positions' says 'real'"], InputError, was="silent",
        setup=ck_edited(lambda m: m.update(positions="real"))),
    Row("checkpoint.json: no positions field beside method_kwargs positions shifted", load_ck,
        ["method_kwargs says positions 'shifted'", "(absent: real)"], InputError, was="silent",
        setup=ck_edited(lambda m: m.pop("positions"))),
    Row("checkpoint.json: backbone.weights a number", load_ck,
        ["checkpoint.json, backbone: field 'weights' must be a string", "5 (int)"], InputError, was="ugly",
        setup=ck_edited(lambda m: m["backbone"].update(weights=5))),
    Row("checkpoint.json: backbone.D a string", load_ck,
        ["checkpoint.json, backbone: field 'D' must be a positive int", '"24" (str)'], InputError, was="ugly",
        setup=ck_edited(lambda m: m["backbone"].update(D="24"))),
    Case("make_method with an option the method does not take",
         lambda tmp: make_method("soft", preset("bert-tiny"), 2, init_std=0.1),
        ["make_method: prompt method 'soft' takes no option 'init_std'", "'init_range'"], InputError, was="escape"),

    Case("predict --stride on a sentence-classifier checkpoint", cli("predict", "{ck}", "--model-dir", "{bert}",
                                                                    "--max-length", "32", "--stride", "29", "a film"),
         ["--stride 29 does nothing for sst2", "drop --stride"], cli=True, was="silent"),
    Case("generate --temperature without --do-sample", cli("generate", "--model-dir", "{gpt2}", "the cat",
                                                          "--temperature", "0.5"),
         ["--temperature 0.5 only acts when sampling", "add --do-sample or drop --temperature"], cli=True, was="silent"),
    Case("generate --top-k and --seed without --do-sample", cli("generate", "--model-dir", "{gpt2}", "the cat",
                                                               "--top-k", "3", "--seed", "5"),
         ["--top-k 3, --seed 5 only act when sampling", "drop --top-k, --seed"], cli=True, was="silent"),
    Case("generate on an encoder folder: named for generating, not only for training",
         cli("generate", "--model-dir", "{bert}", "the cat"), ["holds a 'bert' model, not a decoder",
                                                               "generating text"], cli=True, was="ugly"),
    Case("trace on a 64-position preset without --N (the default 128 did not fit, --N unnamed)",
         lambda tmp: assert_equal(main(["trace", "--config", "bert-tiny", "--B", "1"]), 0), works=True, was="ugly"),
    Case("trace --N past the position table", cli("trace", "--config", "gpt2-tiny", "--N", "100"),
         ["--N 100: the model has 64 positions", "--N 64 or less"], cli=True),
    Case("export-peft into an empty OUT ''", cli("export-peft", "{ck}", ""), ["OUT is empty ('')"], cli=True, was="ugly"),
    Case("train --out '' (was: trained into the default runs/sst2-prefix)", cli(*TRAIN, "--out", ""),
         ["--out is empty ('')"], cli=True, was="silent"),
    Row("export-peft into a symbolic link to itself", cli("export-peft", "{ck}", "loop"),
        ["OUT loop is a symbolic link to loop", "lead round in a loop"], cli=True, was="ugly",
        setup=symlinks(("loop", "loop"))),
    Row("export-peft under a symbolic link that leads into itself", cli("export-peft", "{ck}", "loop2/out"),
        ["under loop2", "lead round in a loop"], cli=True, was="ugly", setup=symlinks(("loop2", "loop2/x"))),
    Row("an SST-2 file with CR-only line ends", read_tsv, ["train.tsv:1: a carriage return", "at character 15",
                                                           "\\r alone"], InputError, was="ugly",
        setup=tsv(b"sentence\tlabel\ra fine film\t1\ra dull film\t0\r")),
    Row("an SST-2 row whose sentence is only spaces", read_tsv, ["train.tsv:3: the sentence is empty (only whitespace)"],
        InputError, was="silent", setup=tsv(b"sentence\tlabel\na fine film\t1\n   \t1\n")),
    Case("standard input starting with a UTF-8 byte-order mark", predicted_from_stdin(
        b"\xef\xbb\xbfa film\nb film\n", ["a film", "b film"]), works=True, was="silent"),
    Case("standard input whose first line is only a byte-order mark", predicted_from_stdin(
        b"\xef\xbb\xbf\na film\n", ["a film"]), works=True, was="silent"),

    Row("llama3 rope with original_max_position_embeddings 0 (was read as max_position_embeddings)", load("llama"),
        ["rope_parameters: original_max_position_embeddings must be a positive int, got 0"], InputError,
        was="silent", setup=edited("llama", rope_parameters=LLAMA3 | {"original_max_position_embeddings": 0})),
    Row("linear rope with factor 1e-300 (angles overflow, every logit NaN)", load("llama"),
        ["rope_parameters: factor 1e-300 is so small", "overflow float32"], InputError, was="silent",
        setup=edited("llama", rope_parameters={"rope_type": "linear", "factor": 1e-300, "rope_theta": 10000.0})),
    Row("linear rope with factor 0.5 loads (a context shrunk, not overflowing)", lambda tmp: load("llama")(tmp),
        works=True, setup=edited("llama", rope_parameters={"rope_type": "linear", "factor": 0.5, "rope_theta": 1e4})),

    Case("save_pretrained into an existing file", saved_over_file, ["text.txt is a file, not a folder"], InputError,
         was="escape"),
    Case("load_pretrained(None)", loaded(model_dir=None), ["load_pretrained: model_dir must be a folder path",
                                                           "NoneType"], was="escape"),
    Case("load_pretrained(dtype='float16')", loaded(dtype="float16"),
         ["load_pretrained: dtype must be a floating torch dtype", "'float16' (str)"], was="escape"),
    Case("load_pretrained(device='gpu')", loaded(device="gpu"), ["load_pretrained: device 'gpu' is not a device"],
         InputError, was="escape"),
    Case("ByteLevelBPE.encode(bytes)", lambda tmp: bpe().encode(b"the cat"),
         ["text to encode must be a str, got bytes", "decode the bytes first"], was="escape"),
    Case("ByteLevelBPE.encode(None)", lambda tmp: bpe().encode(None), ["must be a str, got NoneType"], was="escape"),
    Case("ByteLevelBPE.decode a negative id (was: dropped)", lambda tmp: bpe().decode([-1, 5]),
         ["decode: ids[0] must be a token id", "-1 (int)"], InputError, was="silent"),
    Case("ByteLevelBPE.decode a float id (was: truncated)", lambda tmp: bpe().decode([1.7]),
         ["decode: ids[0] must be a token id", "1.7 (float)"], InputError, was="silent"),
    Case("ByteLevelBPE.decode a string", lambda tmp: bpe().decode("abc"),
         ["decode: ids must be a list or a 1-D tensor of token ids, got str"], was="escape"),
    Case("ByteLevelBPE.decode an id past the vocabulary is skipped, as the tokenizers library does",
         lambda tmp: assert_equal(bpe().decode([10 ** 6, 5]), bpe().decode([5])), works=True),
    Case("WordPiece.encode([None])", lambda tmp: wordpiece().encode([None]),
         ["item 0 of the batch must be a str", "NoneType"], was="escape"),
    Case("WordPiece.encode([bytes])", lambda tmp: wordpiece().encode([b"abc"]),
         ["item 0 of the batch must be a str", "bytes"], was="escape"),
    Case("WordPiece.decode([-1])", lambda tmp: wordpiece().decode([-1]), ["decode: ids[0] must be a token id", "-1"],
         InputError, was="escape"),
    Case("WordPiece.word_windows of texts, not word lists (was: each character a word)",
         lambda tmp: wordpiece().word_windows(["a b"]),
         ["item 0 of the batch must be a list of word strings", "text.split()"], was="silent"),

    Row("config.json n_inner 10**9 beside weights of 96", load("gpt2"),
        ["shape mismatch for layers.0.ffn_in.weight", "[24, 96]", "[24, 1000000000]"], InputError, was="escape",
        setup=edited("gpt2", n_inner=10**9)),
    Row("config.json n_embd 2**20 beside weights of 24", load("gpt2"),
        ["shape mismatch for wte.weight", "[300, 24]", "[300, 1048576]"], InputError, was="escape",
        setup=edited("gpt2", n_embd=2**20, n_head=1)),
    Row("config.json n_layer 3000 beside weights of 3: refused before 3000 blocks are built",
        refused_unbuilt(load("gpt2"), names=["missing keys", "h.10."]), works=True, was="ugly",
        setup=edited("gpt2", n_layer=3000)),

    Case("tokenizer.json: model.vocab a list", bpe_edited(lambda s: s["model"].update(vocab=list(s["model"]["vocab"]))),
         ["tokenizer.json", "model.vocab must be a non-empty object"], InputError, was="escape"),
    Case("tokenizer.json: no model.vocab", bpe_edited(lambda s: s["model"].pop("vocab")),
         ["model.vocab must be", "None"], InputError, was="escape"),
    Case("tokenizer.json: model a string", bpe_edited(lambda s: s.update(model="BPE")),
         ["field 'model' must be an object", "'BPE' (str)"], InputError, was="escape"),
    Case("tokenizer.json: an added token a bare string", bpe_edited(lambda s: s.update(added_tokens=["<|endoftext|>"])),
         ["added_tokens[0] must be an object", "'<|endoftext|>' (str)"], InputError, was="escape"),
    Case("tokenizer.json: an added token without id", bpe_edited(lambda s: s["added_tokens"][0].pop("id")),
         ["added_tokens[0] must be an object", "'id'"], InputError, was="escape"),
    Case("tokenizer.json: normalizer a string", bpe_edited(lambda s: s.update(normalizer="x")),
         ["field 'normalizer' must be an object", "'x' (str)"], InputError, was="escape"),
    Case("tokenizer.json: vocabulary ids as strings",
         bpe_edited(lambda s: s["model"].update(vocab={t: str(i) for t, i in s["model"]["vocab"].items()})),
         ["model.vocab['<|endoftext|>'] must be a token id", "'0' (str)"], InputError, was="escape"),
    Case("tokenizer.json: a merge of three symbols",
         bpe_edited(lambda s: s["model"].update(merges=["a b c", *s["model"]["merges"]])),
         ["model.merges[0] must be two symbols", "'a b c'"], InputError, was="silent"),
    Case("tokenizer.json: a negative vocabulary id", bpe_edited(lambda s: s["model"]["vocab"].update({"Ġcat": -5})),
         ["model.vocab['Ġcat'] must be a token id", "-5"], InputError, was="silent"),
    Case("tokenizer.json: an added token whose id is not the vocabulary's",
         bpe_edited(lambda s: s["added_tokens"][0].update(id=5)),
         ["added token '<|endoftext|>' has id 5", "reads it as 0"], InputError, was="silent"),
    Case("tokenizer.json: a new added token numbered past the next free id",
         bpe_edited(lambda s: s["added_tokens"].append(added(" cat", 299, normalized=True))),
         ["added token ' cat' has id 299", "reads it as 279"], InputError, was="silent"),
    Case("tokenizer.json: a new added token at the next free id reads as tokenizers reads it",
         same_ids_as_tokenizers(lambda s: s["added_tokens"].append(added("zz", 279)), "a zz b"), works=True),
    Case("tokenizer.json: a pre_tokenizer Sequence whose steps are strings", bpe_edited(lambda s: s.update(
        pre_tokenizer={"type": "Sequence", "pretokenizers": ["ByteLevel"]})),
         ["not a byte-level BPE tokenizer minigpt_ptv2 reads", "pre_tokenizer step 'ByteLevel' (not an object)"], InputError, was="escape"),
    Case("tokenizer.json: a Split pre_tokenizer whose pattern is a string", bpe_edited(lambda s: s.update(
        pre_tokenizer={"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": "x", "behavior": "Isolated"},
                                                             {"type": "ByteLevel", "use_regex": False}]})),
         ["pre_tokenizer 'Split'"], InputError),
    Case("tokenizer.json: a pre_tokenizer regex that does not compile", bpe_edited(lambda s: s.update(pre_tokenizer={
        "type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(("}, "behavior": "Isolated"},
                                              {"type": "ByteLevel", "use_regex": False}]})),
         ["pre_tokenizer's regex does not compile"], InputError, was="escape"),
]


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_round2(row, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    getattr(row, "setup", lambda tmp: None)(tmp_path)
    check(row, tmp_path)
