"""Steering a frozen decoder with a trained prompt, and measuring it with a frozen classifier.

    folder = decoder_dir()                                      # pretrain's decoder, built once, then cached
    decoder, tok = load_decoder(folder), ByteLevelBPE.from_model_dir(folder)
    speak(decoder, tok, "the film is")                          # words: greedy and sampled, cache or not
    pos, neg = sentiment_texts("runs/steering")                 # one sentence per line, by label
    summary, _ = train_lm("prefix", pos, decoder_dir(), ...)    # a prompt on the positive sentences
    decoder, _ = load_lm_checkpoint(summary["checkpoint"]["path"])
    texts = sample_sentences(decoder, tok, n=200, seed=0)       # from a newline to the next
    share_positive(Predictor.from_checkpoint("runs/judge"), texts)

The texts follow the pretraining format (training/pretrain.py): one sentence per line, so
`train lm` reads them as the stream the decoder was pretrained on, and a sampled sentence starts
after a newline and ends at the next. The judge is any SST-2 checkpoint (`train sst2 ...`): the
share of sentences it calls positive is the measure.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.sample import load_sst2_sample
from ..data.sst2 import SST2_LABELS
from ..errors import InputError
from .pretrain import NEWLINE


def sentiment_texts(folder, split: str = "train") -> tuple[Path, Path]:
    """Write folder/positive.txt and folder/negative.txt: the shipped SST-2 sample's sentences of
    each label, one per line, in the sample's order. Returns their paths (positive, negative)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = load_sst2_sample(split)
    paths = []
    for label in (1, 0):
        path = folder / f"{SST2_LABELS[label]}.txt"
        path.write_text("".join(e.text + "\n" for e in rows if e.label == label), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


@torch.no_grad()
def sample_sentences(decoder, tok, n: int, seed: int = 0, temperature: float = 1.0, top_k: int | None = None,
                     start: str = "", max_new_tokens: int | None = None) -> list[str]:
    """n sentences sampled from the decoder (with whatever prompt is attached), each from a newline
    (and `start`, if given) to the next newline or max_new_tokens (default: as many as the
    positions allow). Returned as text, `start` included, without the newlines."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise InputError(f"n must be a positive int, got {n!r}")
    eol = tok.encode(NEWLINE)
    if len(eol) != 1:
        raise InputError(f"this tokenizer does not encode a newline as one token ({eol}): it is not a "
                         f"one-sentence-per-line decoder's")
    prompt = eol + tok.encode(start)
    room = decoder.config.max_position_embeddings - len(prompt)
    max_new_tokens = room if max_new_tokens is None else max_new_tokens
    if not 0 < max_new_tokens <= room:
        raise InputError(f"max_new_tokens must be in 1..{room} (the positions after the start), got {max_new_tokens}")
    ids = torch.tensor([prompt] * n)  # [n, 1 + len(start)]
    generator = torch.Generator().manual_seed(seed)
    out = decoder.generate(ids, max_new_tokens, attention_mask=torch.ones_like(ids), do_sample=True,
                           temperature=temperature, top_k=top_k, eos_token_id=eol[0], generator=generator)
    return _texts(out, len(prompt), tok, start)


@torch.no_grad()
def speak(decoder, tok, start: str = "the film is", max_new_tokens: int = 12, n: int = 3, seed: int = 0,
          temperature: float = 1.0, top_k: int | None = 40) -> dict:
    """What the decoder writes after a newline and `start`, as words, four ways:

        {"greedy": text, "greedy, no cache": text, "sampled": [n texts], "sampled, no cache": [n texts]}

    Greedy takes the likeliest token at every step; sampled draws from the top_k at `temperature`,
    the n rows from one generator seeded by `seed`. "no cache" recomputes the whole sequence at
    every step instead of reading the KV cache: the texts come out the same, since the cache only
    saves work (a difference would be a bug). A text stops at the first newline (the end of a
    sentence), which is not shown; `start` is."""
    eol = tok.encode(NEWLINE)
    prompt = eol + tok.encode(start)
    ids = torch.tensor([prompt])  # [1, N]
    rows = ids.expand(n, -1)  # [n, N]
    words = {}
    for cache in (True, False):
        late = "" if cache else ", no cache"
        greedy = decoder.generate(ids, max_new_tokens, attention_mask=torch.ones_like(ids), use_cache=cache,
                                  eos_token_id=eol[0])
        sampled = decoder.generate(rows, max_new_tokens, attention_mask=torch.ones_like(rows), do_sample=True,
                                   temperature=temperature, top_k=top_k, use_cache=cache, eos_token_id=eol[0],
                                   generator=torch.Generator().manual_seed(seed))
        words["greedy" + late] = _texts(greedy, len(prompt), tok, start)[0]
        words["sampled" + late] = _texts(sampled, len(prompt), tok, start)
    return words


def _texts(ids: torch.Tensor, skip: int, tok, start: str) -> list[str]:
    """ids [B, N + new] -> `start` + the new tokens of each row as text, up to its first newline."""
    eol = tok.encode(NEWLINE)[0]
    texts = []
    for row in ids[:, skip:].tolist():  # [B, new]
        end = row.index(eol) if eol in row else len(row)
        texts.append((start + tok.decode(row[:end])).strip())
    return texts


def share_positive(judge, texts: list[str]) -> dict:
    """The judge's verdict (a Predictor on an SST-2 checkpoint) on the non-empty texts: how many it
    read, how many were empty (a sentence that ended at once), and the share it calls positive."""
    said = [t for t in texts if t.strip()]
    labels = [r["label"] for r in judge.predict(said)] if said else []
    return {"n": len(said), "empty": len(texts) - len(said),
            "positive": sum(label == "positive" for label in labels) / max(1, len(labels))}
