"""Use a trained checkpoint on new text: sentiment labels for sentences, entity tags for words.

    p = Predictor.from_checkpoint("runs/sst2")
    p.predict(["a gorgeous, witty film", "dull and overlong"])
        -> [{"text": ..., "label": "positive", "score": 0.93, "cut_tokens": 0}, {...}]
    Predictor.from_checkpoint("runs/conll").predict(["John lives in Berlin"])
        -> [{"text": ..., "tags": [("John", "B-PER"), ("lives", "O"), ...], "windows": 1}]

Length. The model reads at most `max_length` tokens at once (the checkpoint's training value by
default; never more than its position table holds).
- NER reads texts of any length: words are split on whitespace (CoNLL's tokenisation is
  word-level), and a text longer than max_length is read in overlapping windows that share
  `stride` sub-tokens (default: half a window), each word's tag read at its first sub-token in
  the window where it has the most context (data/windows.py). `windows` says how many were read.
- A sentence classifier reads the first max_length - 2 sub-tokens; `cut_tokens` says how many
  it did not read (0 when the text fit).
"""
from __future__ import annotations

import torch

from ..core.checks import check_batch_size, check_max_length
from ..data import WordPiece, pad_batch
from ..data.windows import check_stride, default_stride, scatter_reads
from ..errors import InputError, InputTypeError
from ..pretrained import default_model_dir
from ..progress import progress
from .checkpoint import load_checkpoint
from .tasks import get_task


class Predictor:
    def __init__(self, model, meta: dict, tokenizer: WordPiece, device="cpu", max_length: int | None = None,
                 stride: int | None = None, names: tuple[str, str] = ("max_length", "stride")):
        self.model, self.meta, self.tok, self.device = model.eval(), meta, tokenizer, device
        self.task = get_task(meta["task"])
        self.labels = list(meta.get("labels") or self.task.labels)
        self.set_limits(max_length, stride, names)

    def set_limits(self, max_length: int | None = None, stride: int | None = None,
                   names: tuple[str, str] = ("max_length", "stride")) -> None:
        """Tokens per forward row (default: the checkpoint's training value), within the model's
        position table, and the windows' overlap (default: half of max_length - 2). Refused at
        once, by `names` (the CLI passes its flags), rather than at the first long text."""
        if max_length is None:
            max_length = self.meta.get("train", {}).get("max_length", 128)
            names = ("the checkpoint's max_length", names[1])
        self.max_length = check_max_length(max_length, self.model.encoder, names[0])
        room = self.max_length - 2
        self.stride = default_stride(room) if stride is None else check_stride(stride, room, names[1])

    @classmethod
    def from_checkpoint(cls, ckpt_dir, model_dir=None, device="cpu", max_length: int | None = None,
                        stride: int | None = None, names: tuple[str, str] = ("max_length", "stride")):
        model_dir = model_dir or default_model_dir()
        model, meta = load_checkpoint(ckpt_dir, model_dir, device)
        return cls(model, meta, WordPiece.from_model_dir(model_dir), device, max_length, stride, names)

    @torch.no_grad()
    def _logits(self, batch: dict) -> torch.Tensor:
        b = {k: v.to(self.device) for k, v in batch.items() if torch.is_tensor(v)}
        return self.model(b["input_ids"], b["attention_mask"], b["token_type_ids"]).float().cpu()

    def predict(self, texts: list[str], batch_size: int = 32, show_progress: bool = False) -> list[dict]:
        """One record per text: {"text", "label", "score", "cut_tokens"} (sentence task) or
        {"text", "tags", "windows"} (NER). batch_size: texts (sentence task) or windows (NER) per
        forward pass. An empty or whitespace-only text is refused, naming its position.
        show_progress: a bar over the batches (on a terminal: see progress.py)."""
        texts = _clean(texts)
        check_batch_size(batch_size)
        if self.task.kind == "sequence":
            starts = progress(range(0, len(texts), batch_size), f"{self.task.name}: predicting", unit="batch",
                              enabled=show_progress)
            return [r for start in starts for r in self._sentences(texts[start:start + batch_size])]
        return self._words(texts, batch_size, show_progress)

    def _sentences(self, texts: list[str]) -> list[dict]:
        cut = []
        rows = self.tok.token_rows(texts, self.max_length, cut)
        probs = self._logits(pad_batch(rows, self.tok.pad_id)).softmax(-1)  # [B, C]
        score, ids = probs.max(-1)  # [B]
        return [{"text": t, "label": self.labels[i], "score": round(float(s), 4), "cut_tokens": c}
                for t, i, s, c in zip(texts, ids.tolist(), score.tolist(), cut)]

    def _words(self, texts: list[str], batch_size: int, show_progress: bool = False) -> list[dict]:
        words = [t.split() for t in texts]
        rows = self.tok.word_windows(words, self.max_length, self.stride)
        tags = [[0] * len(ws) for ws in words]  # 0 = "O" stays only for a word with no sub-token
        for start in progress(range(0, len(rows), batch_size), f"{self.task.name}: tagging", unit="batch",
                              enabled=show_progress):
            chunk = rows[start:start + batch_size]
            preds = self._logits(pad_batch([r["input_ids"] for r in chunk], self.tok.pad_id)).argmax(-1)  # [b, N]
            for r, p in zip(chunk, preds):
                scatter_reads(tags[r["text"]], p, r["reads"])
        n_windows = [0] * len(texts)
        for r in rows:
            n_windows[r["text"]] += 1
        return [{"text": t, "tags": [(w, self.labels[j]) for w, j in zip(ws, ids)], "windows": n}
                for t, ws, ids, n in zip(texts, words, tags, n_windows)]


def _clean(texts) -> list[str]:
    if isinstance(texts, str):
        raise InputTypeError("predict() takes a list of strings, e.g. [text]")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputTypeError(f"text {i + 1} is a {type(t).__name__}, not a string")
        if not t.strip():
            raise InputError(f"text {i + 1} is empty" + (" (only whitespace)" if t else ""))
    return [t.strip() for t in texts]
