"""Causal-LM prompt training of the decoders from the command line (`train lm`, `generate`).

No pretrained decoder exists here, so the decoders are random tiny GPT-2 and LLaMA models saved
with transformers' save_pretrained, each with a byte-level BPE tokenizer.json trained on the text
by the `tokenizers` library. Their weights are drawn wider than usual (initializer_range=0.3), so
the untrained model is confidently wrong (held-out perplexity ~550-1400 for V=300) and a prompt
has something to steer. Measured over seeds 0-2 (P=4, 10 epochs, lr 0.2, blocks of 32 tokens):
the train loss falls by 0.74-2.6 nats (asserted: 0.4) and the held-out perplexity ends at 0.02-0.19
of the untrained prompt's (asserted: below 0.35 of it).
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import reference as R
from architectures import ARCHS, DECODERS, hf_folder
from minigpt_ptv2.cli import main
from minigpt_ptv2.data.bpe import ByteLevelBPE
from minigpt_ptv2.data.text import block_batches, next_token_labels
from minigpt_ptv2.prompts import SoftPrompt, make_method
from minigpt_ptv2.training import state as run_state
from minigpt_ptv2.training.checkpoint import load_checkpoint, read_checkpoint
from minigpt_ptv2.training.heads import task_loss
from minigpt_ptv2.training.keeper import Keeper
from minigpt_ptv2.training.lm import LMTaskModel, load_decoder
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads cost more than they give

V = 300
TEXT = "".join(f"the {a} sat on the {b}. " for a, b in [("cat", "mat"), ("dog", "log"), ("bird", "wire"),
                                                         ("fox", "box")])
UNICODE = ["Hello world! It's 2024, isn't it?  Two  spaces\n\nnew lines\t tab",
           "héllo wörld — ½ ² ٣ 日本語のテキスト 🙂👍🏽 naïve café", "the cat sat.<|endoftext|>the dog",
           "   leading and trailing   ", "", "\u2003em\u00a0nbsp \x1c sep", "I'll we've they're 'S 'LL"]
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
TRAIN = ["--P", "4", "--epochs", "10", "--lr", "0.2", "--batch-size", "4", "--max-length", "32", "--seed", "0"]


def bpe(style: str = "gpt2", corpus=(TEXT,) * 20) -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=style == "llama3"))
    if style == "llama3":  # its own regex, then bytes as characters
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), "isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=style == "prefix-space")
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(list(corpus), trainers.BpeTrainer(
        vocab_size=V, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok


def decoder_folder(path: Path, arch: str, seed: int = 0) -> Path:
    """The architectures table's tiny decoder (tests/architectures.py) over the BPE's V tokens, wide
    weights. A sliding window shorter than the text would hide a prefix from the later tokens (as in
    transformers): here it covers the whole text, so every method has the same chance to lower the loss."""
    windowed = "sliding_window" in ARCHS[arch].tiny.to_dict()
    hf_folder(arch, path, seed, {"sliding_window": 64} if windowed else None, vocab_size=V, initializer_range=0.3)
    bpe().save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    (root / "text.txt").write_text(TEXT * 20, encoding="utf-8")
    return {"root": root, "text": root / "text.txt",
            **{arch: decoder_folder(root / arch, arch) for arch in DECODERS}}


def cli(argv) -> tuple[int, str]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main([str(a) for a in argv])
    return code, out.getvalue()


def train(folders, arch, method, out, *extra):
    code, printed = cli(["train", "lm", method, "--text-file", folders["text"], "--model-dir", folders[arch],
                         *TRAIN, "--out", out, "--json", *extra])
    assert code == 0
    return json.loads(printed)


@pytest.fixture(scope="module")
def trained(folders):
    return {}  # (arch, method) -> (summary, checkpoint folder), filled by the first test that trains it


# ---------------------------------------------------------------- the tokenizer

@pytest.mark.parametrize("style", ["gpt2", "prefix-space", "llama3"])
def test_byte_level_bpe_gives_the_ids_and_the_text_tokenizers_gives(style):
    tok = bpe(style, corpus=[TEXT * 3] * 20 + UNICODE)
    spec = json.loads(tok.to_str())
    ours = ByteLevelBPE(spec)
    old = ByteLevelBPE({**spec, "model": {**spec["model"], "merges": [" ".join(m) for m in spec["model"]["merges"]]}})
    for text in UNICODE + [TEXT]:
        ids = tok.encode(text).ids
        assert ours.encode(text) == ids == old.encode(text), text  # merges as pairs, or as "a b" strings
        assert ours.decode(ids) == tok.decode(ids)
        assert ours.decode(ids, skip_special_tokens=False) == tok.decode(ids, skip_special_tokens=False)
    assert tok.encode("<|endoftext|>").ids == ours.encode("<|endoftext|>") == [0]


def test_a_missing_or_unsupported_tokenizer_json_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'tokenizer.json'} not found"):
        ByteLevelBPE.from_model_dir(tmp_path)
    word_level = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match=r"tokenizer.json: this is not a byte-level BPE.*'WordLevel'.*Whitespace"):
        ByteLevelBPE.from_model_dir(tmp_path)


def test_gpt2s_older_vocab_json_and_merges_txt_are_the_same_tokenizer(tmp_path):
    from tokenizers import ByteLevelBPETokenizer
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator([TEXT] * 20 + UNICODE, vocab_size=V, special_tokens=["<|endoftext|>"], show_progress=False)
    tok.save_model(str(tmp_path))  # vocab.json + merges.txt (with its '#version' line)
    ours = ByteLevelBPE.from_model_dir(tmp_path)
    for text in UNICODE:
        assert ours.encode(text) == tok.encode(text).ids, text


# ---------------------------------------------------------------- labels: shifted once, none on the prompt

def test_labels_are_the_next_tokens_with_padding_ignored():
    batch = block_batches([[5, 6, 7, 8], [9, 10]], batch_size=2).collate_fn([{"input_ids": [5, 6, 7, 8]},
                                                                            {"input_ids": [9, 10]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert batch["labels"].tolist() == [[6, 7, 8], [10, -100, -100]] == \
        next_token_labels(batch["input_ids"], batch["attention_mask"]).tolist()
    assert "token_type_ids" not in batch


def test_the_prompt_carries_no_loss_without_any_minus_100_over_it(folders):
    """PEFT pads the labels with P times -100 for its virtual tokens; here the decoder returns
    real-token logits only, so labels = the text's own next tokens score the same real rows.
    One difference, on purpose: PEFT's prompt-tuning loss also scores the first real token,
    predicted from the last virtual row (N terms); ours scores N-1, as prefix tuning does."""
    decoder = load_decoder(folders["gpt2"])
    ids = torch.randint(1, V, (2, 12), generator=torch.Generator().manual_seed(0))  # [B, N]
    mask = torch.ones_like(ids)
    P = 3
    prompt = torch.randn(P, decoder.config.hidden_size, generator=torch.Generator().manual_seed(1))  # [P, D]
    model = LMTaskModel(decoder.attach(SoftPrompt(decoder.config, P, init=prompt, positions="shifted"))).eval()
    with torch.no_grad():
        logits = model(ids, mask)
        ours = task_loss(logits, next_token_labels(ids, mask))
    assert logits.shape == (2, 11, V)  # [B, N-1, V]: no prompt rows
    peft = R.peft_prompt_model(R.hf_gpt2(folders["gpt2"]), P, prompt.clone()).eval()
    with torch.no_grad(), R._quiet():
        theirs = peft(input_ids=ids, attention_mask=mask, labels=ids)  # logits [B, P+N, V]
    real_rows = F.cross_entropy(theirs.logits[:, P:-1].flatten(0, 1), ids[:, 1:].flatten())  # N-1 terms
    assert abs(float(ours) - float(real_rows)) < 1e-5
    with_first = F.cross_entropy(theirs.logits[:, P - 1:-1].flatten(0, 1), ids.flatten())  # N terms
    assert abs(float(theirs.loss) - float(with_first)) < 1e-5 and abs(float(ours) - float(theirs.loss)) > 1e-3
    for name in ("prefix", "deep"):  # the other styles: N-1 rows too, one per real token but the last
        decoder.attach(make_method(name, decoder.config, P))
        assert model(ids, mask).shape == (2, 11, V)


def test_perplexity_is_kept_lower_is_better():
    saved = []
    keeper = Keeper(None, "perplexity", 3, saved.append, {}, higher_is_better=False)
    for epoch, value in enumerate([50.0, 40.0, 45.0], start=1):
        keeper.on_epoch({"epoch": epoch, "perplexity": value}, lambda extra: None)
    assert keeper.best["epoch"] == 2 and keeper.best["value"] == 40.0


# ---------------------------------------------------------------- train lm, generate

@pytest.mark.parametrize("arch", DECODERS)
@pytest.mark.parametrize("method", ["prefix", "deep", "soft", "gated"])
def test_train_lm_lowers_the_loss_and_the_held_out_perplexity(folders, trained, tmp_path, arch, method):
    out = tmp_path / "run"
    s = train(folders, arch, method, out)
    first, last = s["history"][0], s["history"][-1]
    assert last["train_loss"] < first["train_loss"] - 0.4
    assert s["kept"]["metric"] == "perplexity" and s["kept"]["value"] < 0.35 * s["untrained"]["perplexity"]
    assert s["kept"]["value"] == min(h["perplexity"] for h in s["history"])  # lower is better
    assert s["text"]["file"] == "text.txt" and s["text"]["held_out_blocks"] >= 1
    meta, tensors = read_checkpoint(out)
    assert meta["task"] == "lm" and meta["method"] == method and meta["train"]["max_length"] == 32
    assert len(meta["text"]["sha256"]) == 64 and meta["backbone"]["model_type"] == arch
    assert all(n.startswith("decoder.prompt.") for n in tensors)  # the prompt only
    assert s["checkpoint"]["bytes"] < 6 * 1024
    trained[arch, method] = (s, out)

    new = ["--max-new-tokens", "8", "--ignore-eos", "--json"]
    code, printed = cli(["generate", out, "the cat", *new])
    assert code == 0
    with_prompt = json.loads(printed)
    code, printed = cli(["generate", "--model-dir", folders[arch], "the cat", *new])
    bare = json.loads(printed)
    assert len(with_prompt["new_ids"]) == len(bare["new_ids"]) == 8
    assert with_prompt["new_ids"] != bare["new_ids"]
    assert with_prompt["method"] == method and bare["method"] is None


def test_generate_samples_reproducibly_and_prints_text(folders, trained, tmp_path, capsys):
    out = trained.get(("gpt2", "prefix"), (None, None))[1]
    if out is None:
        out = tmp_path / "run"
        train(folders, "gpt2", "prefix", out)
    args = ["generate", out, "the dog", "--do-sample", "--top-k", "5", "--seed", "3", "--max-new-tokens", "6",
            "--ignore-eos"]
    assert cli(args) == cli(args) and cli(args)[1].startswith("the dog")
    with pytest.raises(ValueError, match="not a task model.*generate"):
        load_checkpoint(out)  # eval and predict refuse it with a pointer to generate
    assert main(["generate", "the dog"]) == 2
    assert "a checkpoint (generate CKPT TEXT) or --model-dir" in capsys.readouterr().err


def test_an_interrupted_lm_run_resumes_with_only_the_folder(folders, trained, tmp_path, monkeypatch, capsys):
    full = trained.get(("gpt2", "prefix"), (None, None))[0] or train(folders, "gpt2", "prefix", tmp_path / "full")
    out = tmp_path / "cut"
    real = run_state.save
    done = []

    def save_then_stop(run_dir, meta, tensors):
        real(run_dir, meta, tensors)
        done.append(meta["epochs_done"])
        if meta["epochs_done"] == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(run_state, "save", save_then_stop)
    text = tmp_path / "text.txt"
    text.write_bytes(Path(folders["text"]).read_bytes())
    assert cli(["train", "lm", "prefix", "--text-file", text, "--model-dir", folders["gpt2"], *TRAIN,
                "--out", out, "--no-progress"])[0] == 130
    assert f"interrupted: `train --resume {out}` continues after epoch 3" in capsys.readouterr().err
    monkeypatch.undo()
    assert cli(["train", "--resume", out, "--max-train", "5"])[0] == 2
    assert "train lm reads --text-file, not --max-train" in capsys.readouterr().err
    original = text.read_bytes()
    text.write_bytes(original + b" and more")  # a few tokens more: the held-out tail changes, the blocks may not
    assert cli(["train", "--resume", out])[0] == 2
    assert "the training data" in capsys.readouterr().err
    text.write_bytes(original)
    code, printed = cli(["train", "--resume", out, "--json"])
    assert code == 0, capsys.readouterr().err
    s = json.loads(printed)
    timeless = [{k: v for k, v in h.items() if k != "seconds"} for h in s["history"]]
    assert s["resumed_after_epoch"] == 3
    assert timeless == [{k: v for k, v in h.items() if k != "seconds"} for h in full["history"]]
    assert s["kept"] == full["kept"]


def test_bad_text_files_and_arguments_are_named(folders, tmp_path, capsys):
    def refused(text_file, *extra, method="prefix"):
        argv = ["train", "lm", method, "--text-file", text_file, "--model-dir", folders["gpt2"], "--max-length", "32",
                "--out", tmp_path / "out", "--no-progress", *extra]
        assert cli(argv)[0] == 2
        return capsys.readouterr().err

    assert str(tmp_path / "nope.txt") in refused(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    assert f"{tmp_path / 'empty.txt'} is empty" in refused(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes(b"one\ntwo\ncaf\xe9\n")
    assert f"{tmp_path / 'latin1.txt'}:3: byte 0xe9" in refused(tmp_path / "latin1.txt")
    (tmp_path / "short.txt").write_text("the cat")
    assert f"{tmp_path / 'short.txt'} gives 1 block(s)" in refused(tmp_path / "short.txt")
    assert "--max-length 100 is beyond the model's 64 positions" in refused(folders["text"], "--max-length", "100")
    assert "train lm trains a prompt method" in refused(folders["text"], method="head-only")
    assert not (tmp_path / "out").exists()  # nothing left behind
    assert cli(["train", "lm", "prefix", "--model-dir", folders["gpt2"]])[0] == 2
    assert "train lm needs --text-file FILE" in capsys.readouterr().err
    assert cli(["train", "sst2", "prefix", "--text-file", folders["text"]])[0] == 2
    assert "--text-file is for task lm" in capsys.readouterr().err
    assert "[CLS]" not in refused(tmp_path / "short.txt", "--max-length", "2")  # not the encoder's rule


def test_an_lm_checkpoint_is_pointed_to_generate(folders, trained, tmp_path, capsys):
    out = tmp_path / "lm"
    train(folders, "gpt2", "prefix", out)
    assert cli(["export-hf", out, tmp_path / "hf"])[0] == 2
    assert f"`generate {out} TEXT`" in capsys.readouterr().err
