"""Tiny inputs for every command that writes a folder, built in well under a second: a bert-tiny
HF folder with a vocab.txt, an SST-2 folder of eight sentences, a prefix checkpoint
(positions="shifted"), a `full` checkpoint, the PEFT adapter exported from the prefix one, and
a tiny GPT-2 folder with a byte-level BPE tokenizer.json and a text file.

    world = build(tmp_path)      # {"bert", "data", "ck", "full", "adapter", ["gpt2", "text", "lm_adapter"]} -> Path
"""
from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "film", "fine", "dull", "great", "fun",
         "boring", "and", "long", "good", "bad", "movie", "it", "is", "was"]
SENTENCES = [("a fine film", 1), ("a dull film", 0), ("great fun", 1), ("boring and long", 0)] * 2
TEXT = "".join(f"the {a} sat on the {b}. " for a, b in [("cat", "mat"), ("dog", "log"), ("fox", "box")]) * 8


def bert(folder: Path) -> Path:
    """bert-tiny (L=3, D=24, V=120, 64 positions) with random weights, saved as a HF folder."""
    from minigpt_ptv2 import BertEncoder, preset
    from minigpt_ptv2.models import save_pretrained
    cfg = preset("bert-tiny")
    save_pretrained(BertEncoder(cfg), folder)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = WORDS + [c for c in letters if c not in WORDS] + ["##" + c for c in letters]
    words += [f"[unused{i}]" for i in range(cfg.vocab_size - len(words))]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return folder


def sst2(folder: Path) -> Path:
    (folder / "sst2").mkdir(parents=True)
    rows = "".join(f"{text}\t{label}\n" for text, label in SENTENCES)
    for split in ("train", "dev"):
        (folder / "sst2" / f"{split}.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    return folder


def gpt2(folder: Path) -> Path:
    """gpt2-tiny (64 positions) with random weights and 300 tokens, saved as a HF folder, with a
    byte-level BPE tokenizer.json trained on TEXT (the tokenizers library; no transformers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from minigpt_ptv2 import preset
    from minigpt_ptv2.models import save_pretrained
    from minigpt_ptv2.models.gpt2 import GPT2Decoder
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([TEXT] * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    save_pretrained(GPT2Decoder(preset("gpt2-tiny").replace(vocab_size=300)), folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def build(root: Path, decoder: bool = True) -> dict:
    from minigpt_ptv2.interop import export_checkpoint
    from minigpt_ptv2.training import build_task_model, save_checkpoint
    torch.manual_seed(0)
    world = {"bert": bert(root / "bert"), "data": sst2(root / "data")}
    labels = ("negative", "positive")
    model = build_task_model("sst2", "prefix", 2, model_dir=world["bert"], positions="shifted")
    save_checkpoint(model, root / "ck", task="sst2", method="prefix", P=2, method_kwargs={"positions": "shifted"},
                    labels=labels)
    model = build_task_model("sst2", "full", 0, model_dir=world["bert"])
    save_checkpoint(model, root / "full", task="sst2", method="full", P=0, labels=labels)
    export_checkpoint(root / "ck", root / "adapter", model_dir=world["bert"])
    world.update(ck=root / "ck", full=root / "full", adapter=root / "adapter")
    if decoder:
        world["gpt2"] = gpt2(root / "gpt2")
        from minigpt_ptv2.interop import save_adapter
        from minigpt_ptv2.models import load_pretrained
        from minigpt_ptv2.prompts import KVPrefix
        decoder = load_pretrained(world["gpt2"])
        world["lm_adapter"] = root / "lm_adapter"  # a CAUSAL_LM prefix-tuning adapter for it
        save_adapter(world["lm_adapter"], KVPrefix(decoder.config, 2, positions="shifted"), decoder)
        world["text"] = root / "text.txt"
        world["text"].write_text(TEXT, encoding="utf-8")
    return world
