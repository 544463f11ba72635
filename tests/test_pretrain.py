"""Pretraining a decoder from scratch (`pretrain`, training/pretrain.py) and the helpers that steer it.

Every run here is tiny (L=1, D=16, V=300, a few steps on 200 sentences of the shipped sample):
what is tested is the format and the plumbing — our BPE trainer's tokenizer.json read alike by
bpe.py, the `tokenizers` library and transformers; a folder transformers opens with our logits;
the same weights for the same seed; arguments refused before any work — not the model's quality
(benchmarks/steering.py measures that).
"""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from minigpt_ptv2.catalog import PretrainConfig
from minigpt_ptv2.cli import main
from minigpt_ptv2.data.bpe import ByteLevelBPE
from minigpt_ptv2.data.bpe_train import count_words, train_bpe, write_tokenizer
from minigpt_ptv2.data.sample import load_sst2_sample
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.models import load_pretrained
from minigpt_ptv2.outdir import OutputError
from minigpt_ptv2.training import pretrain as pt
from minigpt_ptv2.training.steer import sample_sentences, sentiment_texts, speak

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads cost more than they give

ROWS = [e.text for e in load_sst2_sample("train", 240)]
SENTENCES = (ROWS[:200], ROWS[200:])  # (training, held out)
TINY = PretrainConfig(layers=1, hidden=16, heads=2, vocab_size=300, context=24, batch_size=4, steps=3)
UNICODE = ["héllo wörld — ½ 日本語 🙂👍🏽 naïve", "  two  spaces\nand a new line\t tab", "it 's a charming , often "
           "affecting journey . ", "I'll we've they're 'S"]


def tiny_run(tmp_path, cfg=TINY, name="run"):
    summary, model, tok = pt.pretrain(cfg, tmp_path / name, show_progress=False, sentences=SENTENCES)
    return tmp_path / name, summary, model, tok


# ---------------------------------------------------------------- the tokenizer trainer

def test_a_merge_joins_the_most_frequent_pair_and_stops_below_two():
    # pieces: "ab", " ab" x2, " cd" -> (a,b) occurs 3 times, then (Ġ,ab) twice, everything else once
    vocab, merges = train_bpe(["ab ab ab cd"], vocab_size=1000)
    assert merges == [("a", "b"), ("Ġ", "ab")]
    assert len(vocab) == 258 and vocab["ab"] == 256 and vocab["Ġab"] == 257
    assert count_words(["ab ab"]) == {("a", "b"): 1, ("Ġ", "a", "b"): 1}
    vocab, merges = train_bpe(["ab ab ab cd"], vocab_size=257)  # the size is a ceiling
    assert merges == [("a", "b")] and len(vocab) == 257


def test_a_trained_tokenizer_gives_the_ids_tokenizers_and_transformers_give(tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    vocab, merges = train_bpe(ROWS, 400)
    path = write_tokenizer(vocab, merges, tmp_path, bos="Ċ", max_length=64)
    ours, theirs = ByteLevelBPE.from_model_dir(tmp_path), Tokenizer.from_file(str(path))
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert len(hf) == len(vocab) == 400  # no token added on the way (GPT-2's <|endoftext|> would be one)
    for text in ROWS[:50] + UNICODE:
        ids = ours.encode(text)
        assert ids == theirs.encode(text, add_special_tokens=False).ids == hf(text, add_special_tokens=False)["input_ids"]
        # with special tokens (transformers' default) a text starts from the newline, as a sentence does
        assert hf(text)["input_ids"] == theirs.encode(text).ids == [vocab["Ċ"]] + ids
        assert ours.decode(ids) == theirs.decode(ids) == hf.decode(ids) == text
    assert vocab["Ċ"] == 10 and ours.encode("\n") == [10]  # a newline is one token: byte 10


def test_the_trainer_refuses_a_vocabulary_smaller_than_the_bytes():
    with pytest.raises(InputError, match="vocab_size must be an int >= 256"):
        train_bpe(["a"], 255)
    with pytest.raises(InputError, match="bos 'x' is not a symbol"):
        write_tokenizer({"a": 0}, [], "unused", bos="x")


# ---------------------------------------------------------------- the folder

@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_the_folder_opens_in_transformers_with_equal_logits(tmp_path, arch):
    from transformers import AutoModelForCausalLM
    folder, summary, model, tok = tiny_run(tmp_path, TINY._replace(arch=arch))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "pretrain.json"} <= \
        {p.name for p in folder.iterdir()}
    ids = torch.tensor([tok.encode("\n" + " ".join(ROWS[i:i + 4]))[:20] for i in range(0, 16, 4)])  # [4, N=20]
    ref = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        theirs = ref(ids).logits  # [4, N, V]
        ours = model.eval()(ids).logits
        again = load_pretrained(folder)(ids).logits
    # float32 sums in another order (fused vs explicit attention kernels): equal within 1e-5
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, ours, rtol=0, atol=1e-5)
    record = json.loads((folder / "pretrain.json").read_text())
    assert record["config"] == TINY._replace(arch=arch)._asdict() and record["held_out_sentences"] > 0
    if arch == "gpt2":  # its config carries the newline as bos and eos: generation stops at a sentence's end
        hf = json.loads((folder / "config.json").read_text())
        assert hf["bos_token_id"] == hf["eos_token_id"] == tok.encode("\n")[0] == summary["eol_id"]


def test_the_same_seed_gives_the_same_weights_and_another_seed_others(tmp_path):
    _, a, model_a, _ = tiny_run(tmp_path, name="a")
    _, b, model_b, _ = tiny_run(tmp_path, name="b")
    _, c, model_c, _ = tiny_run(tmp_path, TINY._replace(seed=1), name="c")
    sa, sb, sc = model_a.state_dict(), model_b.state_dict(), model_c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["held_out_loss"] == b["held_out_loss"] and a["held_out_loss"] != c["held_out_loss"]
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_training_lowers_the_held_out_loss(tmp_path):
    _, start, _, _ = tiny_run(tmp_path, TINY._replace(steps=1, lr=1e-9), name="start")
    _, trained, _, _ = tiny_run(tmp_path, TINY._replace(steps=40, lr=1e-2), name="trained")
    # V=300 from a near-uniform start: ln 300 = 5.7 nats; 40 steps on 200 sentences gain well over one
    assert start["held_out_loss"] > 5.5 and trained["held_out_loss"] < start["held_out_loss"] - 1.0


# ---------------------------------------------------------------- the command

def cli(argv) -> tuple[int, str, str]:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own refusals
            code = e.code
    return code, out.getvalue(), err.getvalue()


TINY_ARGS = ["--layers", "1", "--hidden", "16", "--heads", "2", "--vocab-size", "300", "--context", "24",
             "--batch-size", "4", "--steps", "3", "--no-progress"]


@pytest.fixture
def small_sample(monkeypatch):
    """The command trains on the shipped sample; here on 240 of its rows, for speed."""
    monkeypatch.setattr(pt, "sst2_sentences", lambda: SENTENCES)


def test_the_command_writes_the_folder_and_replaces_it_only_when_told(tmp_path, small_sample):
    out = tmp_path / "decoder"
    code, printed, _ = cli(["pretrain", "--out", out, *TINY_ARGS, "--json"])
    assert code == 0 and json.loads(printed)["config"]["steps"] == 3
    first = (out / "model.safetensors").read_bytes()
    code, _, err = cli(["pretrain", "--out", out, *TINY_ARGS])
    assert code == 2 and f"--out {out} already holds a model" in err
    code, printed, _ = cli(["pretrain", "--out", out, *TINY_ARGS, "--seed", "1", "--overwrite"])
    assert code == 0 and "held-out perplexity" in printed and (out / "model.safetensors").read_bytes() != first


@pytest.mark.parametrize("argv, message", [
    (["--hidden", "30", "--heads", "4"], "heads=4 must divide hidden=30"),
    (["--vocab-size", "100"], "vocab_size must be an int >= 256"),
    (["--arch", "llama", "--hidden", "12", "--heads", "4"], "even size"),
    (["--context", "1"], "context must be at least 2"),
    (["--steps", "0"], "must be a positive integer"),
    (["--lr", "nan"], "must be a finite number"),
    (["--dropout", "1"], "must be in [0, 1)"),
    (["--arch", "bert"], "invalid choice: 'bert'"),
])
def test_the_command_refuses_bad_arguments_before_any_work(tmp_path, monkeypatch, argv, message):
    monkeypatch.setattr(pt, "pretrain", lambda *a, **k: pytest.fail("trained despite a bad argument"))
    code, _, err = cli(["pretrain", "--out", tmp_path / "x", *argv])
    assert code == 2 and message in err, err
    assert not (tmp_path / "x").exists()


def test_the_command_refuses_a_file_as_its_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(pt, "pretrain", lambda *a, **k: pytest.fail("trained into a file"))
    (tmp_path / "f").write_text("mine")
    code, _, err = cli(["pretrain", "--out", tmp_path / "f"])
    assert code == 2 and "is a file, not a folder" in err and (tmp_path / "f").read_text() == "mine"


def test_decoder_dir_builds_once_then_reuses_and_refuses_other_settings(tmp_path, small_sample):
    folder = pt.decoder_dir(tmp_path / "d", TINY, show_progress=False)
    assert (folder / "model.safetensors").is_file()
    built = (folder / "model.safetensors").stat().st_mtime_ns
    assert pt.decoder_dir(tmp_path / "d", TINY) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == built  # reused, not rebuilt
    with pytest.raises(InputError, match="pretrained with other settings"):
        pt.decoder_dir(tmp_path / "d", TINY._replace(seed=5))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a decoder")
    with pytest.raises(OutputError, match="already holds 1 entry"):  # outdir.py's rule, as for every writer
        pt.decoder_dir(tmp_path / "mine", TINY, show_progress=False)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


# ---------------------------------------------------------------- steering helpers

def test_sentiment_texts_are_the_samples_sentences_by_label(tmp_path):
    pos, neg = sentiment_texts(tmp_path)
    rows = load_sst2_sample("train")
    assert pos.read_text().splitlines() == [e.text for e in rows if e.label == 1]
    assert neg.read_text().splitlines() == [e.text for e in rows if e.label == 0]
    assert len(pos.read_text().splitlines()) == len(neg.read_text().splitlines()) == 1500


def test_sampled_sentences_end_at_a_newline_and_repeat_for_a_seed(tmp_path):
    _, _, model, tok = tiny_run(tmp_path, TINY._replace(steps=20, lr=1e-2))
    a = sample_sentences(model, tok, 8, seed=3, top_k=20)
    assert a == sample_sentences(model, tok, 8, seed=3, top_k=20) != sample_sentences(model, tok, 8, seed=4, top_k=20)
    assert len(a) == 8 and not any("\n" in t for t in a)
    assert all(t.startswith("the film") for t in sample_sentences(model, tok, 3, start="the film", max_new_tokens=5))
    with pytest.raises(InputError, match="max_new_tokens must be in 1..23"):
        sample_sentences(model, tok, 2, max_new_tokens=24)


def test_speak_writes_words_and_the_cache_changes_none_of_them(tmp_path):
    _, _, model, tok = tiny_run(tmp_path, TINY._replace(steps=1))
    with torch.no_grad():  # wide weights: every token then depends on all before it, so a broken cache shows
        for p in model.parameters():
            p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(p.numel()))
    said = speak(model, tok, "the film", max_new_tokens=6, n=3, seed=1)
    assert said["greedy"] == said["greedy, no cache"] and said["sampled"] == said["sampled, no cache"]
    assert len(said["sampled"]) == 3 and len(set(said["sampled"])) > 1  # three draws, not one thrice
    assert all(isinstance(t, str) and t.startswith("the film") and "\n" not in t
               for t in [said["greedy"], *said["sampled"]])
