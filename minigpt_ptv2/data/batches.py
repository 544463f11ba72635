"""Examples -> padded training batches: torch Datasets plus a collate function.

Tokenisation happens once, up front, with the fast tokenizer's batch encode (all of SST-2 train
in about two seconds); each batch is then padded only to its own longest row. Datasets return
plain Python lists, and the collate object is picklable, so they work with DataLoader workers and
with a DistributedSampler unchanged.

Training rows are truncated to max_length, and each dataset counts what that cut (`cut`,
`words_cut`). Evaluation of a token task reads every word instead: `ConllDataset.windows()`
gives the same sentences as overlapping windows (see windows.py).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from .conll import CONLL_LABEL_TO_ID
from .tokenize import WordPiece, pad_batch


class PadCollate:
    """Collate rows of {input_ids, labels[, word_ids]} into tensors padded to the batch's longest row.

    Sentence labels (ints) become ``labels`` [B]; token labels (lists) become ``labels`` [B, N]
    padded with -100; ``word_ids`` (if present) stay lists, padded with None, for evaluation.
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        ids = [r["input_ids"] for r in rows]
        token_labels = isinstance(rows[0]["labels"], list)
        batch = pad_batch(ids, self.pad_id, [r["labels"] for r in rows] if token_labels else None)
        if not token_labels:
            batch["labels"] = torch.tensor([r["labels"] for r in rows], dtype=torch.long)  # [B]
        if "word_ids" in rows[0]:
            N = batch["input_ids"].shape[1]
            batch["word_ids"] = [r["word_ids"] + [None] * (N - len(r["word_ids"])) for r in rows]
        return batch


class SST2Dataset(Dataset):
    """Sentence classification rows: (text, label) examples tokenised to [CLS] ... [SEP] ids.
    `cut[i]`: sub-tokens example i lost to truncation at max_length (0 when it fit)."""

    def __init__(self, examples, tokenizer: WordPiece, max_length: int = 128):
        self.max_length, self.cut = max_length, []
        self.input_ids = tokenizer.token_rows([text for text, _ in examples], max_length, self.cut)
        self.labels = [int(label) for _, label in examples]
        self.collate_fn = PadCollate(tokenizer.pad_id)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}


class ConllDataset(Dataset):
    """Token classification rows: (words, tags) sentences with labels on each word's first sub-token.

    Rows are truncated to max_length (what training reads); `words_cut[i]` counts the words of
    sentence i that lost every sub-token to it. `windows()` reads every word, for evaluation."""

    def __init__(self, sentences, tokenizer: WordPiece, max_length: int = 128):
        words = [list(w) for w, _ in sentences]
        tag_ids = [[CONLL_LABEL_TO_ID[t] for t in tags] for _, tags in sentences]
        self.input_ids, self.labels, self.word_ids = tokenizer.word_rows(words, tag_ids, max_length)
        self.n_words = [len(w) for w in words]  # to score every gold word, even truncated ones
        self.words_cut = [n - len({w for w in ids if w is not None}) for n, ids in zip(self.n_words, self.word_ids)]
        self.collate_fn = PadCollate(tokenizer.pad_id)
        self.max_length, self._words, self._tokenizer = max_length, words, tokenizer

    def windows(self, stride: int | None = None) -> "WindowDataset":
        """The same sentences, every word read, in windows of at most max_length tokens."""
        return WindowDataset(self._tokenizer.word_windows(self._words, self.max_length, stride),
                             self._tokenizer.pad_id)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i], "word_ids": self.word_ids[i]}


class WindowDataset(Dataset):
    """Window rows {"text", "input_ids", "reads"} from `WordPiece.word_windows`; batches carry
    input_ids / attention_mask / token_type_ids [B, N] plus the `text` and `reads` lists."""

    def __init__(self, rows: list[dict], pad_id: int):
        self.rows, self.pad_id = rows, pad_id

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]

    def collate_fn(self, rows: list[dict]) -> dict:
        batch = pad_batch([r["input_ids"] for r in rows], self.pad_id)
        N = batch["input_ids"].shape[1]
        batch["text"] = [r["text"] for r in rows]
        batch["reads"] = [r["reads"] + [None] * (N - len(r["reads"])) for r in rows]
        return batch


def _loader(dataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    """A DataLoader whose shuffling order depends only on ``seed`` (a new order each epoch)."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=dataset.collate_fn)


def sst2_batches(examples, tokenizer: WordPiece, batch_size: int = 32, shuffle: bool = False,
                 seed: int = 0, max_length: int = 128) -> DataLoader:
    """Batches of input_ids / attention_mask / token_type_ids [B, N] and labels [B]."""
    return _loader(SST2Dataset(examples, tokenizer, max_length), batch_size, shuffle, seed)


def conll_batches(sentences, tokenizer: WordPiece, batch_size: int = 32, shuffle: bool = False,
                  seed: int = 0, max_length: int = 128) -> DataLoader:
    """Batches of input_ids / attention_mask / token_type_ids / labels [B, N] plus word_ids lists."""
    return _loader(ConllDataset(sentences, tokenizer, max_length), batch_size, shuffle, seed)
