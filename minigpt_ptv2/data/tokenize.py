"""WordPiece tokenisation for BERT, with word-to-label alignment for token tasks (NER).

A thin wrapper over the fast `tokenizers` library that makes three things explicit instead of
hiding them in tokenizer.json settings:
- special tokens: ``[CLS] tokens... [SEP]``, added here, kept when truncating to ``max_length``;
- padding: dynamic, to the longest row of the batch, on the right, ``attention_mask`` 0 there;
- label alignment: a word's label goes to its *first* sub-token; later sub-tokens, [CLS], [SEP]
  and padding get -100, the index ``torch.nn.functional.cross_entropy`` ignores;
- long texts: ``token_rows`` / ``word_rows`` truncate to ``max_length`` (and ``token_rows``
  reports how many sub-tokens each row lost); ``word_windows`` instead reads every word, in
  overlapping windows (see windows.py), which is what prediction and evaluation use for NER.
Nothing is ever downloaded: the vocabulary comes from a local model folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from ..core.checks import check_max_length
from ..errors import InputError, InputTypeError, MissingFileError
from ..validate import read_json, require, token_id_list
from .paths import text_lines
from .windows import default_stride, word_windows

IGNORE = -100  # label for positions that carry no loss (cross_entropy's default ignore_index)


def pad_batch(rows: list[list[int]], pad_id: int, label_rows: list[list[int]] | None = None
              ) -> dict[str, torch.Tensor]:
    """Right-pad id rows to the longest one: input_ids / attention_mask / token_type_ids [B, N]."""
    B, N = len(rows), max((len(r) for r in rows), default=0)
    input_ids = torch.full((B, N), pad_id, dtype=torch.long)  # [B, N]
    attention_mask = torch.zeros((B, N), dtype=torch.long)  # [B, N], 1 = real token
    for i, row in enumerate(rows):
        input_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, :len(row)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "token_type_ids": torch.zeros((B, N), dtype=torch.long)}  # single segment: all 0
    if label_rows is not None:
        labels = torch.full((B, N), IGNORE, dtype=torch.long)  # [B, N]
        for i, row in enumerate(label_rows):
            labels[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        batch["labels"] = labels
    return batch


def first_subtoken_labels(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """Per-position labels: a word's label on its first sub-token, -100 everywhere else.

    word_ids [None, 0, 0, 1, 1, None] with word_labels [1, 2] -> [-100, 1, -100, 2, -100, -100].
    """
    out, prev = [], None
    for w in word_ids:
        out.append(word_labels[w] if w is not None and w != prev else IGNORE)
        prev = w
    return out


def align_predictions(token_preds, word_ids: list[int | None], n_words: int, fill: int = 0) -> list[int]:
    """Map per-token predictions [N] back to one per word (the first sub-token's), in word order.

    Words with no token left (cut off by truncation) get ``fill`` (0 = "O" for CoNLL), so that
    evaluation still scores every gold word: truncation costs recall instead of being hidden.
    """
    preds = token_preds.tolist() if hasattr(token_preds, "tolist") else list(token_preds)
    out = [fill] * n_words
    seen = set()
    for pos, w in enumerate(word_ids):
        if w is not None and w not in seen:
            seen.add(w)
            out[w] = int(preds[pos])
    return out


class WordPiece:
    """BERT's uncased WordPiece tokenizer with explicit specials, truncation and padding."""

    def __init__(self, tokenizer: Tokenizer):
        tokenizer.no_padding()  # a shipped tokenizer.json may pad every row to 128: we pad ourselves
        tokenizer.no_truncation()
        self._tok = tokenizer
        ids = {t: tokenizer.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[UNK]")}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise InputError(f"vocabulary lacks BERT special tokens {missing}")
        self.pad_id, self.cls_id, self.sep_id, self.unk_id = (
            ids["[PAD]"], ids["[CLS]"], ids["[SEP]"], ids["[UNK]"])
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike | None = None) -> "WordPiece":
        """Load ``tokenizer.json`` from a HF-format BERT folder, else build one from ``vocab.txt``."""
        if model_dir is None:
            from ..pretrained import default_model_dir
            model_dir = default_model_dir()
        model_dir = Path(model_dir)
        if (model_dir / "tokenizer.json").is_file():
            path = model_dir / "tokenizer.json"
            read_json(path)  # a broken file is named with its line and column, not by the Rust parser
            try:
                return cls(Tokenizer.from_file(str(path)))
            except Exception as e:  # valid JSON that is not a tokenizer: the library's own words
                raise InputError(f"{path} is not a tokenizer file the tokenizers library can read: "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        if (model_dir / "vocab.txt").is_file():
            return cls(_from_vocab(model_dir))
        raise MissingFileError(f"{model_dir} has neither tokenizer.json nor vocab.txt")

    def token_rows(self, texts: list[str], max_length: int = 128, cut: list | None = None) -> list[list[int]]:
        """Unpadded ``[CLS] ... [SEP]`` id rows, each at most ``max_length`` long. When a list is
        passed as ``cut``, it receives, per text, how many sub-tokens truncation dropped (0 = none)."""
        keep = _room(max_length)
        encodings = self._tok.encode_batch(_texts(texts), add_special_tokens=False)
        if cut is not None:
            cut.extend(max(0, len(e.ids) - keep) for e in encodings)
        return [[self.cls_id, *e.ids[:keep], self.sep_id] for e in encodings]

    def encode(self, texts: list[str], max_length: int = 128) -> dict[str, torch.Tensor]:
        """Tokenise a batch of sentences: input_ids, attention_mask, token_type_ids, all [B, N]
        (exactly a model's keyword arguments; ``token_rows(..., cut=[])`` tells what was cut)."""
        return pad_batch(self.token_rows(texts, max_length), self.pad_id)

    def word_windows(self, word_lists: list[list[str]], max_length: int = 128,
                     stride: int | None = None) -> list[dict]:
        """Every sub-token of every pre-split text, in overlapping windows of at most ``max_length``
        tokens (see windows.py): rows {"text": i, "start", "input_ids", "reads"}, in text order. ``stride``
        sub-tokens are shared by consecutive windows (default: half of the max_length - 2 a window
        holds). A text that fits gives one row, the one ``word_rows`` would give."""
        room = _room(max_length)
        stride = default_stride(room) if stride is None else stride
        encodings = self._tok.encode_batch([list(w) for w in _texts(word_lists, words=True)],
                                           is_pretokenized=True, add_special_tokens=False)
        rows = []
        for i, enc in enumerate(encodings):
            for row in word_windows(enc.ids, enc.word_ids, room, stride, self.cls_id, self.sep_id):
                rows.append({"text": i, **row})
        return rows

    def word_rows(self, word_lists: list[list[str]], word_labels: list[list[int]] | None = None,
                  max_length: int = 128):
        """Unpadded id rows, aligned label rows (or None) and word_ids rows for pre-split words."""
        keep = _room(max_length)
        if word_labels is not None and len(word_labels) != len(word_lists):
            raise InputError(f"{len(word_lists)} sentences but {len(word_labels)} label lists")
        encodings = self._tok.encode_batch([list(w) for w in word_lists],
                                           is_pretokenized=True, add_special_tokens=False)
        rows, label_rows, word_id_rows = [], [], []
        for i, enc in enumerate(encodings):
            rows.append([self.cls_id, *enc.ids[:keep], self.sep_id])
            word_ids = [None, *enc.word_ids[:keep], None]  # word index of each position
            word_id_rows.append(word_ids)
            if word_labels is not None:
                if len(word_labels[i]) != len(word_lists[i]):
                    raise InputError(f"sentence {i}: {len(word_lists[i])} words but "
                                     f"{len(word_labels[i])} labels")
                label_rows.append(first_subtoken_labels(word_ids, word_labels[i]))
        return rows, (label_rows if word_labels is not None else None), word_id_rows

    def encode_words(self, word_lists: list[list[str]], word_labels: list[list[int]] | None = None,
                     max_length: int = 128) -> dict:
        """Tokenise pre-split words (NER).

        Adds ``labels`` [B, N] when ``word_labels`` are given, and ``word_ids``: per row, a list of
        length N giving each position's word index (None for [CLS], [SEP] and padding).
        """
        rows, label_rows, word_id_rows = self.word_rows(word_lists, word_labels, max_length)
        batch = pad_batch(rows, self.pad_id, label_rows)
        N = batch["input_ids"].shape[1]
        batch["word_ids"] = [w + [None] * (N - len(w)) for w in word_id_rows]
        return batch

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Ids (list or 1-D tensor) back to text; WordPiece '##' pieces are glued back on."""
        return self._tok.decode(token_id_list(ids, "decode: ids"), skip_special_tokens=skip_special_tokens)

    def tokens(self, ids) -> list[str]:
        """Ids to vocabulary strings, e.g. ['[CLS]', 'sun', '##dar', ...]: for looking, not decoding."""
        return [self._tok.id_to_token(i) for i in token_id_list(ids, "tokens: ids")]


def _room(max_length: int) -> int:
    """How many real sub-tokens fit once [CLS] and [SEP] are reserved (at least one: the rule
    `train`, `eval` and `predict` share)."""
    return check_max_length(max_length) - 2


def _texts(texts, words: bool = False) -> list:
    """The batch as a list whose items are each a str (words: a list of word strings), refused by
    position otherwise: the tokenizers library raised a TypeError of its own, and a str where a
    word list belongs was read as a list of one-character words."""
    what = "word lists" if words else "strings"
    if isinstance(texts, str):
        raise InputTypeError(f"pass a list of {what} (a batch), e.g. [{'text.split()' if words else 'text'}]")
    texts = list(texts)
    for n, t in enumerate(texts):
        ok = isinstance(t, (list, tuple)) and all(isinstance(w, str) for w in t) if words else isinstance(t, str)
        if not ok:
            hint = ": split each text into its words, e.g. text.split()" if words and isinstance(t, str) else ""
            raise InputTypeError(f"item {n} of the batch must be {'a list of word strings' if words else 'a str'}, "
                                 f"got {type(t).__name__} {str(t)[:40]!r}{hint}")
    return texts


def _from_vocab(model_dir: Path) -> Tokenizer:
    """Rebuild BERT's tokenizer pipeline from vocab.txt (lower-casing as tokenizer_config.json says)."""
    lowercase = True
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        lowercase = require(read_json(config), config, {}, {"do_lower_case": "bool"}).get("do_lower_case", True)
    vocab = model_dir / "vocab.txt"
    for _ in text_lines(vocab):  # every line UTF-8, or the error names the file, the line and the byte
        pass
    tok = Tokenizer(models.WordPiece.from_file(str(vocab), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    specials = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if tok.token_to_id(t) is not None]
    tok.add_special_tokens(specials)  # so decode(skip_special_tokens=True) drops them, as tokenizer.json does
    return tok
