"""Two prompts trained against each other, so that each learns what tells its class apart.

    pair = train_contrast("prefix", decoder_dir(), "runs/contrast", lam=1.0)
    decoder, meta = load_lm_checkpoint(pair["positive"])    # ordinary `train lm` checkpoints
    sample_sentences(decoder, tok, n=200)                   # writes positive text, if it steers

Why. `train lm` on the positive sentences rewards the prompt for predicting them better; most of
what it can learn is how SST-2 sentences go in general (their common words, their punctuation),
which the negative sentences share. Knowing the class is worth at most ln 2 nats per *sentence*
(the label is one bit), about 0.02-0.03 nats per token of a 25-token sentence: the LM loss barely
notices it, and a prompt trained on it alone learns a small part of the class bias.

The discriminative term (GeDi, Krause et al. 2020) puts the gradient on exactly that bit. Every
training sentence x is read under both prompts, and Bayes' rule with equal priors turns the two
summed log-likelihoods into a classifier:

    p(positive | x) = softmax([log p(x | negative prompt), log p(x | positive prompt)])[1]

Its cross-entropy against the sentence's label is zero only when each prompt makes its own class
likelier than the other prompt does; what the classes share cancels in the difference. The loss:

    loss = LM loss (mean NLL per token of each sentence under its own prompt)
         + lam * mean over sentences of CE(label, softmax([ll_negative, ll_positive]))

lam=0 is `train lm`'s objective on the same sentences, both prompts in one batch. Both prompts
run in one forward through MixedPrompts: the batch of B sentences twice, [2B, N], the first B
rows under the negative prompt and the next B under the positive one, so column c of
[ll_negative, ll_positive] is SST-2 label c.

The frozen decoder runs without dropout (eval mode) by default: dropout noise would differ
between a sentence's two readings and blur exactly the difference the term learns from.
Both prompts start as one (the same initial numbers), so at step 0 Bayes' rule says 1/2 for every
sentence and the term's first gradient pushes the two apart exactly oppositely. Each prompt is saved alone as a `train lm` checkpoint (out_dir/positive, out_dir/negative), so
`load_lm_checkpoint` and `python -m minigpt_ptv2 generate` read it as any other.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import outdir
from ..catalog import LM_LR, LM_TASK, METHODS
from ..data.bpe import ByteLevelBPE
from ..data.sample import load_sst2_sample
from ..data.sst2 import SST2_LABELS
from ..errors import InputError
from ..progress import progress as bar
from ..prompts import freeze_backbone, make_method
from ..prompts.mixed import MixedPrompts
from .checkpoint import backbone_info, save_checkpoint
from .lm import LMTaskModel, check_tokenizer, load_decoder
from .pretrain import sentence_batch
from .trainer import set_seed

CLASSES = tuple(SST2_LABELS)  # ("negative", "positive"): the member of column c is label c's prompt


def sentence_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [R, N, V], labels [R, N] (-100: not scored) -> (summed log p(x) per row [R], tokens
    scored per row [R]): CausalLM's loss (position t scores token t+1), summed per row instead of
    averaged over the batch."""
    R = labels.shape[0]
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100,
                          reduction="none").view(R, -1)  # [R, N-1]: rows of V classes, 0 where not scored
    return -nll.sum(-1), (labels[:, 1:] != -100).sum(-1)  # [R], [R]


def contrast_loss(decoder, ids, mask, labels, y, lam: float) -> tuple[torch.Tensor, dict]:
    """The objective on one batch of B sentences. decoder has a MixedPrompts of CLASSES attached;
    ids, mask, labels [B, N] (sentence_batch); y [B] the SST-2 labels (1 positive, 0 negative).
    Returns (loss, {"lm", "disc", "accuracy"}): the two terms and how often Bayes' rule on the
    two likelihoods gets a sentence's label right."""
    _check_lam(lam)
    pair = getattr(decoder, "prompt", None)
    if not isinstance(pair, MixedPrompts) or tuple(pair.names) != CLASSES:
        raise InputError(f"contrast_loss needs the decoder's prompt to be a MixedPrompts of exactly {list(CLASSES)} "
                         f"(train_contrast attaches one), got {type(pair).__name__}"
                         + (f" of {pair.names}" if isinstance(pair, MixedPrompts) else ""))
    B = ids.shape[0]
    _check_labels(y, B)
    if not bool((labels[:, 1:] != -100).any()):
        raise InputError("labels score no token (every next-token label is -100): nothing to learn from")
    pair.use_rows([c for c in CLASSES for _ in range(B)])  # rows 0..B-1 negative, B..2B-1 positive
    ids, mask, labels = (torch.cat([t, t]) for t in (ids, mask, labels))  # [2B, N] each: every sentence twice
    logits = decoder(ids, attention_mask=mask).logits  # [2B, N, V]
    ll, tokens = sentence_log_likelihood(logits, labels)  # [2B], [2B]
    ll = ll.view(len(CLASSES), B).T  # [B, 2]: column c = log p(x | prompt of label c)
    tokens = tokens.view(len(CLASSES), B).T  # [B, 2]
    own = ll.gather(1, y[:, None]).squeeze(1)  # [B]: under the sentence's own prompt
    lm = -own.sum() / tokens.gather(1, y[:, None]).sum()  # mean NLL per token, own prompt
    disc = F.cross_entropy(ll, y)  # Bayes' rule, equal priors: softmax over the two likelihoods
    accuracy = (ll.argmax(1) == y).float().mean()
    return lm + lam * disc, {"lm": lm.item(), "disc": disc.item(), "accuracy": accuracy.item()}


def _check_lam(lam) -> None:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise InputError(f"lam must be a finite number >= 0 (0: the LM loss alone), got {lam!r}")


def _check_labels(y, B: int) -> None:
    """y: the SST-2 labels of a batch of B sentences, an int tensor [B] of 0s and 1s."""
    if not torch.is_tensor(y) or y.dtype not in (torch.int64, torch.int32) or tuple(y.shape) != (B,):
        raise InputError(f"y must be an int64 tensor [B] = [{B}] of labels 0 (negative) and 1 (positive), got "
                         + (f"{y.dtype} {list(y.shape)}" if torch.is_tensor(y) else type(y).__name__))
    if bool(((y != 0) & (y != 1)).any()):
        raise InputError(f"y must hold labels 0 (negative) and 1 (positive) only, got {sorted(set(y.tolist()))}")


def _check_pairs(name: str, pairs, both: bool) -> None:
    """(text, label) pairs: a str and an int label 0 or 1 each; both labels present when `both`."""
    if not pairs:
        raise InputError(f"{name} is empty")
    for i, pair in enumerate(pairs):
        ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)
        if not ok or type(pair[1]) is not int or pair[1] not in (0, 1):
            raise InputError(f"{name}[{i}] must be a (text, label) pair with label the int 0 (negative) or 1 "
                             f"(positive), got {pair!r}"[:300])
    if both and {y for _, y in pairs} != {0, 1}:
        raise InputError(f"{name} must hold sentences of both labels, 0 (negative) and 1 (positive)")


def _check(method: str, P: int, lam: float, epochs: int, batch_size: int, lr: float | None) -> None:
    if method not in METHODS:
        raise InputError(f"method must be one of {list(METHODS)}, not {method!r}")
    for name, value in (("P", P), ("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{name} must be a positive int, got {value!r}")
    _check_lam(lam)
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr)
                           or lr <= 0):
        raise InputError(f"lr must be a finite number > 0, got {lr!r}")


def train_contrast(method: str, model_dir, out_dir, *, P: int = 10, lam: float = 1.0, epochs: int = 3,
                   lr: float | None = None, batch_size: int = 16, seed: int = 0, sentences=None, held_out=None,
                   method_kwargs: dict | None = None, dropout: bool = False, overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Train a positive and a negative prompt of `method` on the frozen decoder in `model_dir`
    with the loss above; write out_dir/positive and out_dir/negative (train lm checkpoints).

    sentences: [(text, label)] with label 1 positive, 0 negative; the shipped SST-2 sample's
    training rows by default. held_out: more such pairs, scored once after training. Returns
    {"positive": path, "negative": path, "history": [...], "held_out": {...} or None, "seconds"}:
    per epoch the mean of each term and the training accuracy of Bayes' rule; the same on held_out."""
    _check(method, P, lam, epochs, batch_size, lr)
    if sentences is None:
        sentences = [(e.text, e.label) for e in load_sst2_sample("train")]
    _check_pairs("sentences", sentences, both=True)
    if held_out is not None:
        _check_pairs("held_out", held_out, both=False)  # before training, not after it
    if not isinstance(dropout, bool):
        raise InputError(f"dropout must be True or False, got {dropout!r}")
    lr = lr or LM_LR[method]
    with outdir.writing(out_dir, "out_dir", reads={"model_dir": model_dir}, overwrite=overwrite) as stage:
        tok = ByteLevelBPE.from_model_dir(model_dir)
        decoder = load_decoder(model_dir)
        check_tokenizer(tok, decoder)
        backbone = backbone_info(decoder)
        set_seed(seed)
        members = {c: make_method(method, decoder.config, P, **(method_kwargs or {})) for c in CLASSES}
        members["positive"].load_state_dict(members["negative"].state_dict())  # one start: all difference is learned
        decoder.attach(MixedPrompts(decoder.config, members))
        freeze_backbone(LMTaskModel(decoder), ("decoder.prompt.",))
        decoder.train(dropout)
        params = [p for p in decoder.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        limit = decoder.config.max_position_embeddings
        order = torch.Generator().manual_seed(seed)
        history, t0 = [], time.perf_counter()
        for epoch in range(epochs):
            sums = {"lm": 0.0, "disc": 0.0, "accuracy": 0.0}
            perm = torch.randperm(len(sentences), generator=order).tolist()
            batches = [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
            for rows in bar(batches, f"contrast {method} epoch {epoch + 1}", enabled=progress, unit="batch"):
                ids, mask, labels = sentence_batch(tok, [sentences[i][0] for i in rows], limit)  # [B, N] each
                y = torch.tensor([sentences[i][1] for i in rows])  # [B]
                loss, parts = contrast_loss(decoder, ids, mask, labels, y, lam)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for k in sums:
                    sums[k] += parts[k] / len(batches)
            history.append({"epoch": epoch + 1, **sums})
        seconds = time.perf_counter() - t0
        scored = score(decoder, tok, held_out, lam) if held_out is not None else None
        settings = {"objective": "contrast", "lam": lam, "epochs": epochs, "lr": lr, "seed": seed,
                    "batch_size": batch_size, "dropout": dropout, "sentences": len(sentences),
                    "model_dir": str(Path(model_dir).resolve())}
        for c, member in members.items():
            decoder.attach(member)
            save_checkpoint(LMTaskModel(decoder), stage / c, task=LM_TASK, method=method, P=P,
                            method_kwargs=method_kwargs, extra={"backbone": backbone, "train": settings,
                                                                "history": history})
    out = Path(out_dir)
    return {c: out / c for c in CLASSES} | {"history": history, "held_out": scored, "seconds": seconds}


@torch.no_grad()
def score(decoder, tok, sentences, lam: float, batch_size: int = 50) -> dict:
    """The two terms and Bayes' rule's accuracy on [(text, label)] (decoder with its pair attached),
    without dropout: how well the two prompts tell sentences they never trained on apart."""
    was_training, sums = decoder.training, {"lm": 0.0, "disc": 0.0, "accuracy": 0.0}
    decoder.eval()
    for i in range(0, len(sentences), batch_size):
        rows = sentences[i:i + batch_size]
        ids, mask, labels = sentence_batch(tok, [t for t, _ in rows], decoder.config.max_position_embeddings)
        _, parts = contrast_loss(decoder, ids, mask, labels, torch.tensor([y for _, y in rows]), lam)  # [B, N] each
        for k in sums:
            sums[k] += parts[k] * len(rows) / len(sentences)  # a mean over sentences (lm: of batch means)
    decoder.train(was_training)
    return sums

