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
from ..lines import check_text
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
        check_stride_used([self.task], stride, names[1])
        self.max_length, self.stride = limits(self.meta, self.model.encoder, max_length, stride, names)

    @classmethod
    def from_checkpoint(cls, ckpt_dir, model_dir=None, device="cpu", max_length: int | None = None,
                        stride: int | None = None, names: tuple[str, str] = ("max_length", "stride"),
                        allow_other_backbone: bool = False):
        model_dir = model_dir or default_model_dir()
        model, meta = load_checkpoint(ckpt_dir, model_dir, device, allow_other_backbone=allow_other_backbone)
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
        texts = clean_texts(texts)
        check_batch_size(batch_size)
        rows = model_rows(self.task, self.tok, texts, self.max_length, self.stride)
        outputs = []  # per row: logits [C] or [N, C]
        for start in progress(range(0, len(rows), batch_size), f"{self.task.name}: predicting", unit="batch",
                              enabled=show_progress):
            chunk = rows[start:start + batch_size]
            outputs += list(self._logits(pad_batch([r["input_ids"] for r in chunk], self.tok.pad_id)))
        return records(self.task, self.labels, texts, rows, outputs)


def limits(meta: dict, encoder, max_length: int | None = None, stride: int | None = None,
           names: tuple[str, str] = ("max_length", "stride")) -> tuple[int, int]:
    """(max_length, stride) for a checkpoint's rows: see Predictor.set_limits."""
    if max_length is None:
        max_length = meta.get("train", {}).get("max_length", 128)
        names = ("the checkpoint's max_length", names[1])
    max_length = check_max_length(max_length, encoder, names[0])
    room = max_length - 2
    return max_length, default_stride(room) if stride is None else check_stride(stride, room, names[1])


def check_stride_used(tasks, stride: int | None, name: str = "stride") -> None:
    """Refuse a stride where no task reads windows (it would be ignored without a word): a
    sentence classifier reads each text as one row, cut at max_length."""
    if stride is not None and all(t.kind == "sequence" for t in tasks):
        raise InputError(f"{name} {stride} does nothing for {'/'.join(sorted({t.name for t in tasks}))}: only a "
                         f"token-tagging (CoNLL) checkpoint reads a long text in overlapping windows; a sentence "
                         f"is classified on its first max_length tokens: drop {name}")


def model_rows(task, tok: WordPiece, texts: list[str], max_length: int, stride: int) -> list[dict]:
    """The rows the model reads for `texts`, in text order: {"text": i, "input_ids", ...}. A sentence
    is one row (its first max_length - 2 sub-tokens; "cut" says how many more it had); an NER text
    one row per window of its words (data/windows.py: "reads" says which words a window tags)."""
    if task.kind == "sequence":
        cut = []
        ids = tok.token_rows(texts, max_length, cut)
        return [{"text": i, "input_ids": r, "cut": c} for i, (r, c) in enumerate(zip(ids, cut))]
    return tok.word_windows([t.split() for t in texts], max_length, stride)


def records(task, labels: list[str], texts: list[str], rows: list[dict], outputs: list[torch.Tensor]) -> list[dict]:
    """One record per text from its rows' logits (outputs[j] belongs to rows[j]): a label and its
    probability for a sentence; for NER every word's tag, read in the window that gives it most context."""
    if task.kind == "sequence":
        out = []
        for r, logits in zip(rows, outputs):
            score, i = logits.softmax(-1).max(-1)  # [C] -> the best label and its probability
            out.append({"text": texts[r["text"]], "label": labels[int(i)], "score": round(float(score), 4),
                        "cut_tokens": r["cut"]})
        return out
    words = [t.split() for t in texts]
    tags = [[0] * len(ws) for ws in words]  # 0 = "O" stays only for a word with no sub-token
    n_windows = [0] * len(texts)
    for r, logits in zip(rows, outputs):
        scatter_reads(tags[r["text"]], logits.argmax(-1), r["reads"])  # [N] predictions of one window
        n_windows[r["text"]] += 1
    return [{"text": t, "tags": [(w, labels[j]) for w, j in zip(ws, ids)], "windows": n}
            for t, ws, ids, n in zip(texts, words, tags, n_windows)]


def clean_texts(texts) -> list[str]:
    """The texts stripped, each checked to be a non-empty string (refused naming its position)."""
    if isinstance(texts, str):
        raise InputTypeError("predict() takes a list of strings, e.g. [text]")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputTypeError(f"text {i + 1} is a {type(t).__name__}, not a string")
        if not t.strip():
            raise InputError(f"text {i + 1} is empty" + (" (only whitespace)" if t else ""))
        check_text(t, f"text {i + 1}")
    return [t.strip() for t in texts]
