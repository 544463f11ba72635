"""Use a trained checkpoint on new text: sentiment labels for sentences, entity tags for words.

    p = Predictor.from_checkpoint("runs/sst2")
    p.predict(["a gorgeous, witty film", "dull and overlong"])
        -> [{"text": ..., "label": "positive", "score": 0.93}, {..., "label": "negative", ...}]
    Predictor.from_checkpoint("runs/conll").predict(["John lives in Berlin"])
        -> [{"text": ..., "tags": [("John", "B-PER"), ("lives", "O"), ("in", "O"), ("Berlin", "B-LOC")]}]

Sentences for the NER task are split on whitespace into words (CoNLL's own tokenisation is
word-level); each word's tag is read at its first sub-token, as in training.
"""
from __future__ import annotations

import torch

from ..data import WordPiece, align_predictions
from ..errors import InputError, InputTypeError
from ..pretrained import default_model_dir
from .checkpoint import load_checkpoint
from .tasks import get_task


class Predictor:
    def __init__(self, model, meta: dict, tokenizer: WordPiece, device="cpu", max_length: int | None = None):
        self.model, self.meta, self.tok, self.device = model.eval(), meta, tokenizer, device
        self.task = get_task(meta["task"])
        self.labels = list(meta.get("labels") or self.task.labels)
        self.max_length = max_length or meta.get("train", {}).get("max_length", 128)

    @classmethod
    def from_checkpoint(cls, ckpt_dir, model_dir=None, device="cpu", max_length: int | None = None):
        model_dir = model_dir or default_model_dir()
        model, meta = load_checkpoint(ckpt_dir, model_dir, device)
        return cls(model, meta, WordPiece.from_model_dir(model_dir), device, max_length)

    @property
    def head_is_random(self) -> bool:
        """True for an imported adapter whose head was initialised at random (see import-peft)."""
        return self.meta.get("imported_from", {}).get("head") == "random"

    @torch.no_grad()
    def _logits(self, batch: dict) -> torch.Tensor:
        b = {k: v.to(self.device) for k, v in batch.items() if torch.is_tensor(v)}
        return self.model(b["input_ids"], b["attention_mask"], b["token_type_ids"]).float().cpu()

    def predict(self, texts: list[str], batch_size: int = 32) -> list[dict]:
        """One record per text: {"text", "label", "score"} (sentence task) or {"text", "tags"} (NER)."""
        if isinstance(texts, str):
            raise InputTypeError("predict() takes a list of strings, e.g. [text]")
        texts = [t.strip() for t in texts]
        empty = [i for i, t in enumerate(texts) if not t]
        if empty:
            raise InputError(f"text {empty[0] + 1} is empty")
        out = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            out += self._sentences(chunk) if self.task.kind == "sequence" else self._words(chunk)
        return out

    def _sentences(self, texts: list[str]) -> list[dict]:
        probs = self._logits(self.tok.encode(texts, self.max_length)).softmax(-1)  # [B, C]
        score, ids = probs.max(-1)  # [B]
        return [{"text": t, "label": self.labels[i], "score": round(float(s), 4)}
                for t, i, s in zip(texts, ids.tolist(), score.tolist())]

    def _words(self, texts: list[str]) -> list[dict]:
        words = [t.split() for t in texts]
        batch = self.tok.encode_words(words, max_length=self.max_length)
        preds = self._logits(batch).argmax(-1)  # [B, N]
        out = []
        for i, ws in enumerate(words):
            ids = align_predictions(preds[i], batch["word_ids"][i], len(ws))  # one per word
            out.append({"text": texts[i], "tags": [(w, self.labels[j]) for w, j in zip(ws, ids)]})
        return out
