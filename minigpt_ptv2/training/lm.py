"""Prompt training for a decoder (GPT-2, LLaMA-style) on a plain-text file: what `train lm` runs.

    summary, model = train_lm("prefix", "notes.txt", "path/to/gpt2", P=16, epochs=3, out_dir="runs/lm")
    decoder, meta = load_lm_checkpoint("runs/lm")          # the backbone + the trained prompt
    decoder.generate(ids, max_new_tokens=20)

The frozen decoder learns nothing; only its attached prompt (soft, deep, K/V prefix, ...) trains,
to lower the next-token loss on the text. After every epoch the perplexity on the held-out last
tenth of the file, exp(mean next-token NLL), picks the epoch the checkpoint keeps (lower is
better). The run shares everything else with `train_task` (run.py): the claimed and locked
output folder, the best-epoch keeper, resume, the divergence stop, atomic checkpoints.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..catalog import LM_LR, LM_TASK, METHODS
from ..core.causal_lm import CausalLM
from ..data.bpe import ByteLevelBPE
from ..data.text import block_batches, text_blocks
from ..errors import InputError, InputTypeError
from ..progress import progress
from ..prompts import freeze_backbone, make_method
from . import distributed
from .checkpoint import backbone_info, check_backbone, read_checkpoint, save_checkpoint
from .run import Prepared, run_claimed
from .runfolder import check_start
from .trainer import TrainConfig, batch_to


class LMTaskModel(nn.Module):
    """A frozen decoder and its attached prompt, shaped for the trainer (trainer.fit, heads.task_loss).

    forward returns logits [B, N-1, V]: row t is the prediction for token t+1, to be scored against
    labels = input_ids[:, 1:] (data/text.py makes them; the one place the shift happens). The
    decoder returns logits for real tokens only — a soft prompt's P virtual rows are sliced off
    inside it, a K/V prefix never has rows — so the prompt carries no loss without any -100 over
    it: what PEFT gets by padding its labels with P times -100, this gets by construction.
    One difference (tests/test_train_lm.py measures it): PEFT's prompt-tuning loss also scores
    the first real token as predicted by the last virtual row; here, as under a K/V prefix, the
    first token of a block is never predicted, so a block of N tokens gives N-1 terms.
    """

    def __init__(self, decoder: CausalLM):
        super().__init__()
        if not isinstance(decoder, CausalLM):
            raise InputTypeError(f"LMTaskModel needs a decoder (a CausalLM), got {type(decoder).__name__}")
        self.decoder = decoder

    def backbone(self) -> CausalLM:
        """The frozen model the prompt is attached to (what a checkpoint fingerprints)."""
        return self.decoder

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, task: str | None = None):
        if task not in (None, LM_TASK):
            raise InputError(f"a causal-LM model has one task, {LM_TASK!r}; got {task!r}")
        if token_type_ids is not None:
            raise InputError("a decoder takes no token_type_ids")
        return self.decoder(input_ids, attention_mask=attention_mask).logits[:, :-1]  # [B, N-1, V]


def load_decoder(model_dir):
    """The decoder a HF-format folder holds, by its config.json; refuses an encoder by name."""
    from ..models import load_pretrained
    model = load_pretrained(model_dir)
    if not isinstance(model, CausalLM):
        raise InputError(f"{model_dir} holds a {model.config.model_type!r} model, not a decoder: generating text "
                         f"and training a prompt on text (generate, train lm) need a GPT-2 or LLaMA-style folder")
    return model


def check_tokenizer(tok: ByteLevelBPE, decoder) -> None:
    V = decoder.config.vocab_size
    if tok.vocab_size > V:
        raise InputError(f"{tok.source} has {tok.vocab_size} tokens but the model's vocabulary holds {V}: "
                         f"the tokenizer is not this model's")


@torch.no_grad()
def perplexity(model: LMTaskModel, loader, device="cpu", show_progress: bool = False) -> dict:
    """exp(mean NLL per predicted token) over every block of `loader`, and that mean NLL."""
    nll, count = 0.0, 0
    for batch in progress(loader, "held-out perplexity", enabled=show_progress):
        batch = batch_to(batch, device)
        logits = model(batch["input_ids"], batch["attention_mask"])  # [B, N-1, V]
        labels = batch["labels"]  # [B, N-1]
        nll += float(F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                                     reduction="sum"))
        count += int((labels != -100).sum())
    mean = nll / max(count, 1)
    return {"perplexity": math.exp(min(mean, 700.0)), "held_out_loss": mean}


def train_lm(method: str, text_file, model_dir, P: int = 16, epochs: int = 3, lr: float | None = None,
             batch_size: int = 8, max_length: int = 128, seed: int = 0, out_dir=None, device: str = "cpu",
             progress: bool = True, method_kwargs: dict | None = None, dropout: bool = True,
             resume: bool = False, overwrite: bool = False, diverge_factor: float = TrainConfig.diverge_factor,
             grad_checkpoint: bool = False, precision: str = "fp32", allow_other_backbone: bool = False):
    """Train prompt `method` on the text in `text_file` over the frozen decoder in `model_dir`.

    Arguments as train_task's (run.py). The checkpoint holds the prompt only (task "lm"), the
    backbone's fingerprint, the text file's name and sha256, and max_length.
    """
    if method not in METHODS:
        raise InputError(f"train lm trains a prompt method: choose one of {list(METHODS)}, not {method!r}")
    info = distributed.current()
    cfg = TrainConfig(epochs=epochs, lr=lr or LM_LR[method], seed=seed, device=device, progress=progress,
                      diverge_factor=diverge_factor, grad_checkpoint=grad_checkpoint, precision=precision)
    args = {"task": LM_TASK, "method": method, "P": P, "method_kwargs": method_kwargs or {}, "epochs": epochs,
            "lr": cfg.lr, "batch_size": batch_size, "max_length": max_length, "seed": seed, "dropout": dropout,
            "diverge_factor": diverge_factor, "grad_checkpoint": grad_checkpoint, "precision": precision,
            "text_file": str(text_file), "model_dir": str(Path(model_dir).resolve()), "world_size": info.world_size}
    out = check_start(out_dir, args, resume, overwrite, info, {"--model-dir": model_dir, "--text-file": text_file})

    def prepare() -> Prepared:
        tok = ByteLevelBPE.from_model_dir(model_dir)
        data = text_blocks(text_file, tok, max_length)
        decoder = load_decoder(model_dir)
        check_tokenizer(tok, decoder)
        limit = decoder.config.max_position_embeddings
        if max_length > limit:
            raise InputError(f"--max-length {max_length} is beyond the model's {limit} positions ({model_dir})")
        decoder.attach(make_method(method, decoder.config, P, **(method_kwargs or {})))
        model = LMTaskModel(decoder)
        freeze_backbone(model, ("decoder.prompt.",))
        model.to(device)
        train_loader = distributed.shard_loader(block_batches(data["train"], batch_size, shuffle=True, seed=seed),
                                                batch_size, info, seed)
        held_loader = block_batches(data["held_out"], batch_size=16)
        backbone = backbone_info(decoder)
        text = {k: data[k] for k in ("file", "sha256", "tokens", "characters")}
        text.update(train_blocks=len(data["train"]), held_out_blocks=len(data["held_out"]))
        untrained = perplexity(model, held_loader, device) if info.is_main else {}  # the initial prompt's

        def save(kept, run):
            return save_checkpoint(model, out, task=LM_TASK, method=method, P=P, method_kwargs=method_kwargs,
                                   extra={"backbone": backbone, "kept": kept, **run, "text": text, "train": {
                                       "epochs": epochs, "lr": cfg.lr, "seed": seed, "batch_size": batch_size,
                                       "max_length": max_length, "dropout": dropout,
                                       "grad_checkpoint": grad_checkpoint, "precision": precision,
                                       "world_size": info.world_size, "model_dir": str(Path(model_dir).resolve())}})

        return Prepared(model=model, backbone=backbone, train_loader=train_loader,
                        # the whole file, not only the training blocks: a resume must score the same held-out tail
                        data=data["sha256"][:16] + "/" + train_loader.dataset.fingerprint(),
                        evaluate=lambda m: perplexity(m, held_loader, device, show_progress=cfg.progress),
                        save=save, metric="perplexity", higher_is_better=False,
                        facts={"task": LM_TASK, "method": method, "P": P, "text": text, "untrained": untrained})

    return run_claimed(out, args, cfg, info, prepare, what=f"train {LM_TASK} {method}", resume=resume,
                       overwrite=overwrite, dropout=dropout, task=LM_TASK, allow_other_backbone=allow_other_backbone)


def load_lm_checkpoint(ckpt_dir, model_dir=None, device="cpu", allow_other_backbone: bool = False):
    """(decoder with the trained prompt attached, eval mode; checkpoint.json) for a `train lm` checkpoint.
    model_dir defaults to the folder the run was trained on; either way its fingerprint is checked
    (allow_other_backbone: as checkpoint.load_checkpoint)."""
    meta, tensors = read_checkpoint(ckpt_dir)  # before the (slow) backbone load: fail fast
    if meta["task"] != LM_TASK:
        raise InputError(f"{ckpt_dir} holds a {meta['task']!r} checkpoint, not a causal-LM prompt (train lm)")
    model_dir = model_dir or meta.get("train", {}).get("model_dir")
    if not model_dir:
        raise InputError(f"{ckpt_dir} does not say which decoder it was trained on: pass --model-dir")
    decoder = load_decoder(model_dir)
    other = check_backbone(meta["backbone"], decoder, source=ckpt_dir, allow_other=allow_other_backbone)
    if other is not None:
        meta["other_backbone"] = other
    decoder.attach(make_method(meta["method"], decoder.config, meta["P"],
                               **{**meta["method_kwargs"], "positions": meta.get("positions", "real")}))
    own = {n[len("decoder."):]: p for n, p in LMTaskModel(decoder).named_parameters()}
    names = {n[len("decoder."):] for n in tensors}
    wanted = {n for n in own if n.startswith("prompt.")}
    if names != wanted or not all(n.startswith("decoder.") for n in tensors):
        raise InputError(f"{ckpt_dir}: checkpoint tensors do not match the prompt: missing {sorted(wanted - names)}, "
                         f"unexpected {sorted(names - wanted)}")
    with torch.no_grad():
        for n, t in tensors.items():
            p = own[n[len("decoder."):]]
            if t.shape != p.shape:
                raise InputError(f"shape mismatch for {n}: checkpoint {list(t.shape)} vs model {list(p.shape)}")
            p.copy_(t)
    return decoder.to(device).eval(), meta
