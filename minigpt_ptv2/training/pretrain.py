"""Pretrain a small decoder from scratch on sentences, offline: what `pretrain` runs.

    sentences --train_bpe--> tokenizer --encode--> \\n s1 \\n s2 \\n ... \\n   (one token stream)
      --windows of T tokens, drawn anywhere in the stream--> AdamW, warm-up, cosine decay
      --> a HuggingFace-format folder: config.json, model.safetensors, tokenizer.json (+ pretrain.json)

One sentence per line, and the newline is the end-of-sentence token. Its id is the model's
bos_token_id and eos_token_id, so everything downstream speaks the same format without a
special token: `train lm` reads a file of one sentence per line as exactly this stream, a
generation starts from the newline and `generate` stops at the next one.

A training window starts at any token, as `train lm`'s blocks do (it cuts the stream where the
block length falls): a decoder that only ever saw a newline at position 0 meets a block that
starts mid-sentence as something new, and a prompt trained on such blocks would spend itself on
repairing that. A generation starts
from a newline, which the windows hold at every position too. The held-out perplexity is
measured one sentence at a time: exp(mean NLL) of the sentence's tokens and its closing newline,
given the opening newline, as a generation reads it.

The run is deterministic for a seed on one machine and thread count: the initial weights come
from torch's generator seeded by `seed`, and the windows from a generator of their own.
`decoder_dir()` is the lessons' way in: the defaults' folder, built once and then only looked up.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from .. import outdir
from ..catalog import DECODER_ARCHS, PretrainConfig
from ..data.bpe import ByteLevelBPE, bytes_to_chars
from ..data.bpe_train import train_bpe, write_tokenizer
from ..data.sample import load_sst2_sample
from ..errors import InputError
from ..progress import progress, write
from .trainer import set_seed

NEWLINE = "\n"
HELD_OUT_EVERY = 5  # every 5th dev sentence (174 of 872) is held out; the rest trains


def check_config(cfg: PretrainConfig) -> PretrainConfig:
    """Refuse a setting that cannot train, by name (the CLI's types catch most of them first)."""
    if cfg.arch not in DECODER_ARCHS:
        raise InputError(f"arch must be one of {list(DECODER_ARCHS)}, got {cfg.arch!r}")
    for name in ("layers", "hidden", "heads", "context", "batch_size", "steps"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{name} must be a positive int, got {value!r}")
    if isinstance(cfg.vocab_size, bool) or not isinstance(cfg.vocab_size, int) or cfg.vocab_size < 256:
        raise InputError(f"vocab_size must be an int >= 256 (the 256 byte symbols come first), got {cfg.vocab_size!r}")
    if cfg.context < 2:
        raise InputError(f"context must be at least 2 tokens (one to read, one to predict), got {cfg.context}")
    if cfg.hidden % cfg.heads:
        raise InputError(f"heads={cfg.heads} must divide hidden={cfg.hidden}")
    if cfg.arch == "llama" and (cfg.hidden // cfg.heads) % 2:
        raise InputError(f"a LLaMA-style head needs an even size (RoPE turns features in pairs): "
                         f"hidden/heads = {cfg.hidden // cfg.heads}")
    for name in ("lr", "weight_decay", "dropout"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"{name} must be a finite number, got {value!r}")
    if not cfg.lr > 0 or cfg.weight_decay < 0 or not 0 <= cfg.dropout < 1:
        raise InputError(f"lr must be > 0, weight_decay >= 0 and dropout in [0, 1), got {cfg.lr}, "
                         f"{cfg.weight_decay}, {cfg.dropout}")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise InputError(f"seed must be an int, got {cfg.seed!r}")
    return cfg


def model_config(cfg: PretrainConfig, eol: int):
    """Our config for the architecture; the newline's id is bos and eos (generate stops at it)."""
    D, L, H = cfg.hidden, cfg.layers, cfg.heads
    if cfg.arch == "gpt2":
        from ..models.gpt2 import GPT2Config
        return GPT2Config(vocab_size=cfg.vocab_size, hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                          intermediate_size=4 * D, max_position_embeddings=cfg.context,
                          hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                          bos_token_id=eol, eos_token_id=eol)
    from ..models.llama import LlamaConfig
    return LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                       intermediate_size=(8 * D // 3 + 7) // 8 * 8, max_position_embeddings=cfg.context,
                       tie_word_embeddings=True, attention_dropout=cfg.dropout, bos_token_id=eol, eos_token_id=eol)


def sst2_sentences() -> tuple[list[str], list[str]]:
    """(training sentences, held-out sentences) of the SST-2 sample shipped in the package: all
    3,000 train rows and 698 dev rows train; every 5th dev row (174) is held out. Labels unused."""
    train = [e.text for e in load_sst2_sample("train")]
    dev = [e.text for e in load_sst2_sample("dev")]
    held = dev[HELD_OUT_EVERY - 1::HELD_OUT_EVERY]
    kept = [s for i, s in enumerate(dev) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    return train + kept, held


def stream(tok: ByteLevelBPE, sentences: list[str]) -> list[int]:
    """The ids of \\n s1 \\n s2 ... \\n: every sentence between two newlines."""
    eol = tok.encode(NEWLINE)
    ids = []
    for s in sentences:
        ids += eol + tok.encode(s)
    return ids + eol


def init_weights(model, std: float = 0.02) -> None:
    """GPT-2's initialisation: matrices and embeddings N(0, std), biases 0, norm weights 1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)  # a LayerNorm's or RMSNorm's weight


def schedule(step: int, cfg: PretrainConfig) -> float:
    """The learning rate at `step`: linear warm-up over 5% of the steps, cosine decay to lr / 10."""
    warm = max(1, cfg.steps // 20)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    done = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done)))


def sentence_batch(tok: ByteLevelBPE, sentences: list[str], max_length: int | None = None) -> tuple:
    """Sentences as the decoder reads them (newline, sentence, newline; cut to max_length tokens),
    right-padded: ids [B, N], attention_mask [B, N], labels [B, N] (the ids, -100 on padding: no
    loss there). CausalLM's loss then scores position t against token t+1."""
    eol = tok.encode(NEWLINE)
    rows = [(eol + tok.encode(s) + eol)[:max_length] for s in sentences]
    N = max(len(r) for r in rows)
    ids = torch.tensor([r + eol * (N - len(r)) for r in rows])  # [B, N]
    mask = torch.tensor([[1] * len(r) + [0] * (N - len(r)) for r in rows])  # [B, N]
    return ids, mask, ids.masked_fill(mask == 0, -100)  # labels [B, N]


@torch.no_grad()
def held_out_nll(model, tok: ByteLevelBPE, sentences: list[str], batch_size: int = 64) -> tuple[float, int, list[str]]:
    """(summed NLL, predicted tokens, sentences scored) over the sentences, each read as \\n sentence \\n
    from its newline; a sentence longer than the model's positions is left out (and not counted)."""
    limit = model.config.max_position_embeddings
    scored = [s for s in sentences if len(tok.encode(s)) + 2 <= limit]
    was_training, total, count = model.training, 0.0, 0
    model.eval()
    for i in range(0, len(scored), batch_size):
        ids, mask, labels = sentence_batch(tok, scored[i:i + batch_size])  # [B, N] each
        n = int((labels[:, 1:] != -100).sum())  # tokens predicted (position t predicts t+1)
        total += float(model(ids, attention_mask=mask, labels=labels).loss) * n  # the loss is their mean
        count += n
    model.train(was_training)
    return total, count, scored


def pretrain(cfg: PretrainConfig, out_dir=None, show_progress: bool = True, sentences=None) -> tuple:
    """Train the tokenizer and the decoder; write the folder when out_dir is given.

    sentences: (training, held-out) lists; the SST-2 sample's (sst2_sentences) by default.
    Returns (summary dict, model, tokenizer)."""
    from ..models import build
    check_config(cfg)
    train, held = sentences if sentences is not None else sst2_sentences()
    t0, cpu0 = time.perf_counter(), time.process_time()
    vocab, merges = train_bpe(train, cfg.vocab_size)
    tok = ByteLevelBPE({"model": {"type": "BPE", "vocab": vocab, "merges": [" ".join(m) for m in merges]},
                        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}}, "the trained BPE")
    ids = stream(tok, train)
    eol = tok.encode(NEWLINE)[0]
    if len(ids) < cfg.context:
        raise InputError(f"the text gives {len(ids)} tokens: too few for one window of {cfg.context}")
    set_seed(cfg.seed)
    model = build(model_config(cfg, eol).replace(vocab_size=len(vocab)))
    init_weights(model)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    data = torch.tensor(ids)  # [tokens]
    offsets = torch.arange(cfg.context)  # [T]
    pick = torch.Generator().manual_seed(cfg.seed)
    losses = []
    bar = progress(range(cfg.steps), "pretrain", enabled=show_progress, unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = schedule(step, cfg)
        rows = torch.randint(len(ids) - cfg.context + 1, (cfg.batch_size,), generator=pick)  # [B]: where each starts
        x = data[rows[:, None] + offsets]  # [B, T]
        loss = model(x, labels=x).loss  # predicts x[:, 1:] from x[:, :-1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    model.eval()
    nll, count, scored = held_out_nll(model, tok, held)
    words = sum(len(s.split()) + 1 for s in scored)  # a sentence's words and its end
    summary = {"config": cfg._asdict(), "parameters": sum(p.numel() for p in model.parameters()),
               "vocab_size": len(vocab), "train_sentences": len(train), "train_tokens": len(ids),
               "held_out_sentences": len(scored), "held_out_too_long": len(held) - len(scored), "held_out_loss": nll / count, "held_out_perplexity": math.exp(nll / count),
               "held_out_word_perplexity": math.exp(nll / words),
               "train_loss_last_20": sum(losses[-20:]) / len(losses[-20:]), "seconds": seconds, "cpu_seconds": cpu_seconds,
               "tokens_seen": cfg.steps * cfg.batch_size * cfg.context, "eol_id": eol,
               "threads": torch.get_num_threads()}
    write(f"pretrained {summary['parameters']:,} parameters in {seconds:.1f} s: held-out perplexity "
          f"{summary['held_out_perplexity']:.1f} on {len(held)} sentences", enabled=show_progress)
    if out_dir is not None:
        save(model, vocab, merges, summary, out_dir)
    return summary, model, tok


def save(model, vocab, merges, summary: dict, out_dir) -> Path:
    """The folder: save_pretrained's config.json + model.safetensors, the tokenizer, pretrain.json."""
    from ..models import save_pretrained
    out = save_pretrained(model, out_dir)
    eol = bytes_to_chars()[ord(NEWLINE)]  # "Ċ": put before a text when special tokens are asked for
    write_tokenizer(vocab, merges, out, bos=eol, max_length=model.config.max_position_embeddings)
    (out / "pretrain.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out


DEFAULT_DIR = Path("runs") / "decoder"


def decoder_dir(out_dir=DEFAULT_DIR, cfg: PretrainConfig = PretrainConfig(), show_progress: bool = True) -> Path:
    """The folder of a decoder pretrained with `cfg` (the defaults: what `pretrain` writes), built
    if it is not there yet: what a lesson calls to get a decoder that speaks.

        folder = decoder_dir()                      # runs/decoder: about a minute the first time
        decoder, tok = load_decoder(folder), ByteLevelBPE.from_model_dir(folder)

    Cached, it costs reading pretrain.json (milliseconds). A folder that holds another run (other
    settings) is refused by name, never silently replaced or used; a folder that holds anything
    else is refused as `pretrain` refuses it (outdir.py)."""
    out = Path(out_dir)
    record = out / "pretrain.json"
    if record.is_file():
        try:
            done = json.loads(record.read_text())
        except ValueError:
            done = {}
        if done.get("config") != check_config(cfg)._asdict():
            raise InputError(f"{out} holds a decoder pretrained with other settings ({record}): "
                             f"pass another folder, or delete this one to rebuild it")
        if all((out / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json")):
            return out
    with outdir.writing(out, "out_dir") as stage:
        pretrain(cfg, stage, show_progress=show_progress)
    return out
