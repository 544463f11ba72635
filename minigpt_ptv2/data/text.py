"""A plain-text file as causal-LM training data: one token stream, cut into blocks, the last tenth held out.

    file --UTF-8--> text --tokenizer--> ids [T] --cut--> blocks of max_length ids --> train | held out

Blocks are consecutive and do not overlap; the last one may be shorter (a block of a single token
predicts nothing and is dropped). The held-out blocks are the *last* 10% of the file (at least one),
so the perplexity is measured on text the prompt never trained on, not on a shuffled sample of it.

Each batch carries input_ids and attention_mask [B, N] (padding on the right, pad id 0, mask 0
there) and labels [B, N-1]: the shift of next-token prediction happens here, once —
labels[:, t] = input_ids[:, t+1], the token position t must predict (-100 where that is padding).
training/lm.py's model returns the matching logits [B, N-1, V] (position t's prediction), so the
trainer's plain cross-entropy (heads.task_loss) is the LM loss.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import InputError
from .batches import _loader
from .paths import text_lines
from .tokenize import IGNORE, pad_batch

HELD_OUT = 0.1  # the share of blocks kept for the perplexity


def read_text(path: str | os.PathLike) -> str:
    """The whole file as one string (UTF-8; a bad byte is named with its line, see paths.text_lines)."""
    path = Path(path)
    lines = [line for _, line in text_lines(path, "--text-file")]
    text = "\n".join(lines)
    if not text.strip():
        raise InputError(f"{path} is empty: there is no text to train on")
    return text


def sha256_of(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cut_blocks(ids: list[int], max_length: int) -> list[list[int]]:
    """Consecutive blocks of max_length ids; a last block of one id (nothing to predict) is dropped."""
    if max_length < 2:
        raise InputError(f"max_length must be at least 2 for next-token prediction, got {max_length}")
    blocks = [ids[i:i + max_length] for i in range(0, len(ids), max_length)]
    return [b for b in blocks if len(b) >= 2]


def split_blocks(blocks: list[list[int]], source, held_out: float = HELD_OUT):
    """(train, held out): the last max(1, round(held_out * n)) blocks are held out."""
    if len(blocks) < 2:
        raise InputError(f"{source} gives {len(blocks)} block(s) of tokens: at least 2 are needed (one to train "
                         f"on, one held out for the perplexity); use a longer text or a smaller --max-length")
    n_held = min(len(blocks) - 1, max(1, round(held_out * len(blocks))))
    return blocks[:-n_held], blocks[-n_held:]


def next_token_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """labels [B, N-1]: what position t must predict, input_ids[:, t+1]; -100 where that is padding."""
    labels = input_ids[:, 1:].clone()  # [B, N-1]
    labels[attention_mask[:, 1:] == 0] = IGNORE
    return labels


class BlockDataset(Dataset):
    """Blocks of token ids; `collate_fn` pads a batch and adds the shifted labels."""

    def __init__(self, blocks: list[list[int]], pad_id: int = 0):
        self.input_ids, self.pad_id = blocks, pad_id

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i]}

    def collate_fn(self, rows: list[dict]) -> dict:
        batch = pad_batch([r["input_ids"] for r in rows], self.pad_id)
        del batch["token_type_ids"]  # a decoder has none
        batch["labels"] = next_token_labels(batch["input_ids"], batch["attention_mask"])  # [B, N-1]
        return batch

    def fingerprint(self) -> str:
        """sha256 of the rows: a resume must read the same blocks."""
        return hashlib.sha256(repr(self.input_ids).encode()).hexdigest()[:16]


def block_batches(blocks, batch_size: int = 8, shuffle: bool = False, seed: int = 0, pad_id: int = 0):
    """A DataLoader over blocks (shuffled by `seed` alone when shuffle=True)."""
    return _loader(BlockDataset(blocks, pad_id), batch_size, shuffle, seed)


def text_blocks(path, tokenizer, max_length: int, held_out: float = HELD_OUT) -> dict:
    """Read, tokenise, cut and split a text file: {"train", "held_out"} blocks plus what describes the data."""
    text = read_text(path)
    ids = tokenizer.encode(text)
    train, held = split_blocks(cut_blocks(ids, max_length), path, held_out)
    return {"train": train, "held_out": held, "file": Path(path).name, "sha256": sha256_of(path),
            "tokens": len(ids), "characters": len(text)}
