# %% [markdown]
# # Lesson 10 — Training a prompt on a real task
#
# Everything so far ran on random or untouched weights. Now a K/V prefix (P-Tuning v2) learns
# something: SST-2 sentiment, on the frozen pretrained MiniLM (L=6 layers, hidden size D=384,
# H=12 heads of d=32).
#
#     sentence -> WordPiece ids [B, N] -> frozen MiniLM + trainable prefix [P, L*2*D]
#              -> pooler (the real [CLS]) [B, D] -> trainable head Linear(D, 2) -> [B, 2]
#
# B is the batch (sentences), N the tokens of the longest sentence in it (the others are
# padded), P the prefix length. Only the prefix and the small head learn. We count what that
# means ("trainable %") and what a training step costs, write the training step out by hand and
# train briefly on a few hundred short real sentences, save a checkpoint of a few hundred KB and
# load it back, and compare `train`'s recipe with the old default over three seeds. The `train` command
# (`python -m minigpt_ptv2 train sst2 prefix`) does the same with more data; here the pieces
# are laid out one by one.

# %%
from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from minigpt_ptv2 import BertEncoder, ShapeTrace, preset
from minigpt_ptv2.catalog import RECIPES
from minigpt_ptv2.data import SST2_LABELS, WordPiece, sst2_or_sample
from minigpt_ptv2.models import load_pretrained
from minigpt_ptv2.pretrained import default_model_dir
from minigpt_ptv2.prompts import KVPrefix, format_report, parameter_report
from minigpt_ptv2.training import (Head, TaskModel, TrainConfig, build_task_model, fit, get_task,
                                   load_checkpoint, predict_batches, save_checkpoint, set_seed,
                                   set_trainable, start_text, task_loss)

MAX_LENGTH = 48  # WordPiece tokens per sentence, [CLS] and [SEP] included; longer ones are cut
SHORT = 12  # the training sentences this lesson learns from have at most this many word pieces

# %% [markdown]
# ## 1. Data: a few hundred short sentences of SST-2
#
# Where a data folder exists (`MINIGPT_PTV2_DATA`, or `shared/data` beside the checkout), SST-2
# is read in place there. Without one, the lesson uses the sample of real SST-2 sentences shipped in the
# package (minigpt_ptv2/data/sst2_sample/SOURCE.md says where they come from). The WordPiece
# vocabulary has V = 30,522 entries.
#
# A step's cost grows with the tokens in its batch, and a lesson has seconds, not hours. So it
# learns from SST-2's *short* training sentences, at most `SHORT` = 12 word pieces ([CLS] and
# [SEP] included; the training set is full of short phrases, "a masterpiece", "too long"), and
# scores on the next short training sentences, which it never trains on (**held out**; the dev
# set is for a final verdict, not for choosing settings). Training batches are shuffled;
# scored batches are sorted by length, so each pads to a similar length and scoring is quicker.

# %%
def loaders(tok: WordPiece, train, dev, batch_size: int, seed: int = 0):
    task = get_task("sst2")
    by_length = sorted(dev, key=lambda e: len(e.text))
    return (task.batches(train, tok, batch_size=batch_size, shuffle=True, seed=seed, max_length=MAX_LENGTH),
            task.batches(by_length, tok, batch_size=64, shuffle=False, max_length=MAX_LENGTH))


def short_sentences(tok: WordPiece, examples, max_tokens: int = SHORT) -> list:
    rows = tok.token_rows([e.text for e in examples], max_length=MAX_LENGTH)  # word pieces, specials included
    return [e for e, row in zip(examples, rows) if len(row) <= max_tokens]


def describe_data(train, dev, source: str, tok: WordPiece, train_loader):
    positive = sum(e.label for e in train) / len(train)
    print(f"{len(train)} training and {len(dev)} held-out sentences ({source}); {positive:.0%} of the "
          f"training sentences are positive")
    first = train[0]
    print(f"e.g. {first.text.strip()!r} -> label {first.label} ({SST2_LABELS[first.label]})")
    print(f"     {tok.tokens(tok.encode([first.text])['input_ids'][0])}")
    batch = next(iter(train_loader))
    print(f"one training batch: input_ids {list(batch['input_ids'].shape)} = [B, N], "
          f"labels {list(batch['labels'].shape)} = [B]; vocabulary V = {tok.vocab_size:,}")
    return batch


n_train, n_heldout, P, batch_size = 480, 200, 16, 16
set_seed(0)
everything, _, source = sst2_or_sample(None)
tok = WordPiece.from_model_dir()
short = short_sentences(tok, everything)
train, heldout = short[:n_train], short[n_train:n_train + n_heldout]
train_loader, heldout_loader = loaders(tok, train, heldout, batch_size)
first_batch = describe_data(train, heldout, source, tok, train_loader)


# %% [markdown]
# ## 2. What "trainable %" means
#
# `build_task_model("sst2", "prefix", P)` loads MiniLM, attaches `KVPrefix(P)`, adds a head,
# and switches `requires_grad` off for every backbone weight. What is left:
#
# - the prefix table `[P, L*2*D]`: P keys and P values per layer and head;
# - the head `Linear(D, 2)`: `D*2` weights + 2 biases.
#
# "Trainable %" is a ratio, and write-ups use different numerators and denominators: prompt and
# head over the backbone, or over everything in the model including the prompt (PEFT's
# `print_trainable_parameters`); those two are less than 1% apart while the share is small.
# Our `params` command (the table printed last) counts the prompt alone over the backbone,
# since the head depends on the task: that leaves out the head's 770 numbers, which matters
# for a short prompt. Say which one you quote.

# %%
def trainable_percent(model: TaskModel, P: int) -> dict:
    counts = {"prompt": 0, "head": 0, "backbone": 0}
    for name, p in model.named_parameters():
        part = "prompt" if name.startswith("encoder.prompt.") else "head" if name.startswith("heads.") else "backbone"
        assert p.requires_grad == (part != "backbone"), name
        counts[part] += p.numel()
    cfg = model.encoder.config
    L, D = cfg.num_hidden_layers, cfg.hidden_size
    assert counts["prompt"] == P * L * 2 * D and counts["head"] == D * 2 + 2
    trainable = counts["prompt"] + counts["head"]
    share = {"(prompt + head) / backbone": 100 * trainable / counts["backbone"],
             "(prompt + head) / all, PEFT's": 100 * trainable / sum(counts.values()),
             "prompt / backbone, `params`": 100 * counts["prompt"] / counts["backbone"]}
    print(f"prompt  [P, L*2*D] = [{P}, {L * 2 * D}]     {counts['prompt']:>10,}")
    print(f"head    Linear(D={D}, 2)           {counts['head']:>10,}")
    print(f"backbone (frozen)                   {counts['backbone']:>10,}")
    for name, value in share.items():
        print(f"  {name:<31} = {value:.3f}%")
    a, b, _ = share.values()
    assert b < a < 1.01 * b, "over the backbone or over everything: 1% apart while the shares are small"
    print(format_report(parameter_report(cfg, P, ["soft", "deep", "prefix", "prefix-mlp"])))
    return counts


model = build_task_model("sst2", "prefix", P)
counts = trainable_percent(model, P)


# %% [markdown]
# ## 3. What a training step costs
#
# What "trainable %" does *not* say: the frozen backbone still runs forward **and backward**
# every step, because the prefix sits in every layer and its gradient has to flow back through
# all the layers above it. We count the matrix-multiply FLOPs of one step on the batch above
# with `torch.utils.flop_counter` (on the explicit attention path, so attention's products are
# counted too; two sentences of it are enough, since every count grows with B alike), for three
# choices of what trains (`set_trainable`):
#
# - the head only: backward stops at the head, about 1 forward pass in all;
# - the prefix and head: every layer's backward computes the gradient of its input (as many
#   FLOPs as its forward), but no weight gradient (the weights are frozen): about 2;
# - everything (full fine-tuning): input *and* weight gradients: about 3.
#
# So a prompt saves the weight-gradient products and the optimizer state (AdamW keeps two
# extra numbers for every trainable one), not the backward pass.

# %%
def step_flops(model: TaskModel, batch: dict, trains: str) -> tuple[int, torch.Tensor | None]:
    """FLOPs of forward + backward on `batch` when `trains` trains ("head-only", "full", or the
    prompt method's name: its prompt and the head); also a K/V prefix table's gradient norm per
    layer [L] (None when no K/V prefix trains)."""
    set_trainable(model, trains)
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        out = model.encoder(batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True)
        task_loss(model.heads["sst2"](out), batch["labels"]).backward()
    prompt, L = model.encoder.prompt, model.encoder.config.num_hidden_layers
    grad = prompt.embedding.weight.grad if isinstance(prompt, KVPrefix) else None  # [P, L*2*D] or None
    per_layer = None if grad is None else grad.reshape(grad.shape[0], L, -1).norm(dim=(0, 2))  # [L]
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops(), per_layer


def forward_flops(model: TaskModel, batch: dict) -> int:
    with FlopCounterMode(display=False) as counter:  # (grad on: torch's counter needs it with a prefix)
        model.encoder(batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True)
    return counter.get_total_flops()


def step_cost(model: TaskModel, batch: dict, method: str = "prefix") -> dict:
    """FLOPs of one step, as forward passes, for the head alone, `method` and everything."""
    model.eval()  # no dropout: the same numbers in every count
    forward = forward_flops(model, batch)
    ratios, grads = {}, None
    for trains in ("head-only", method, "full"):
        flops, per_layer = step_flops(model, batch, trains)
        ratios[trains] = flops / forward
        grads = per_layer if trains == method else grads
        print(f"train {trains:<9}: one step = {flops / 1e9:6.2f} GFLOPs = {ratios[trains]:.2f} forward passes")
    set_trainable(model, method)  # back to what the lesson trains
    assert ratios["head-only"] < 1.01 and 1.8 < ratios[method] < 2.1 and abs(ratios["full"] - 3) < 0.01
    if grads is not None:
        print("prefix gradient norm per layer: " + ", ".join(f"L{i} {g:.1e}" for i, g in enumerate(grads)))
        assert bool((grads > 0).all()), "every layer's prefix gets a gradient: backward ran through all of them"
    return ratios


passes = step_cost(model, {k: v[:2] for k, v in first_batch.items()})  # two sentences: the ratios do not depend on B


# %% [markdown]
# ## 4. A training step, written out
#
# Training is a loop of five lines. The optimizer gets only the parameters that require a
# gradient (the prefix table and the head; the backbone's are off), and each step runs the model
# forward on a batch, measures the loss (cross-entropy of the head's two logits against the
# labels; ln 2 = 0.693 is a coin flip), runs backward (through every frozen layer, down to each
# layer's prefix) and takes one AdamW step. A high learning rate: prompts sit far from where the
# weights live and need big steps (section 7 says how big). One pass over the training
# sentences, the loss printed every few steps.
#
# We score on the held-out sentences before and after. An untrained head is at chance: about
# 0.5, whatever share of its answers says "positive" (the held-out sentences are about half
# positive, so even a constant answer scores about 0.5). Thirty steps take it to about 0.77, and
# the loss of a batch, noisy from one batch to the next, falls from about 0.73 over the first
# ten steps to about 0.61 over the last ten (both asserted). Do not read much into the exact
# numbers: short sentences, one epoch and one seed are a demonstration, not a benchmark
# (`python -m minigpt_ptv2 demo` trains on 3,000 sentences for 3 epochs and reaches about 0.81 on
# dev; `benchmarks/claim.py` measures for real).

# %%
def dev_accuracy(model: TaskModel, dev_loader) -> tuple[float, float]:
    """(accuracy, share of sentences predicted positive) on a scoring loader."""
    preds, gold = [], []
    for batch, p in predict_batches(model, dev_loader, task="sst2"):
        preds += p.tolist()
        gold += batch["labels"].tolist()
    return sum(p == g for p, g in zip(preds, gold)) / len(gold), sum(preds) / len(preds)


def train_by_hand(model: TaskModel, train_loader, lr: float = 3e-2, every: int = 10) -> list[float]:
    """The loop `fit` is built on: one epoch, the mean loss of every `every` steps printed."""
    params = [p for p in model.parameters() if p.requires_grad]  # the prefix table and the head
    optimizer = torch.optim.AdamW(params, lr=lr)
    model.train()  # dropout on, as in training
    losses = []
    for batch in train_loader:
        logits = model(batch["input_ids"], batch["attention_mask"], task="sst2")  # [B, 2]
        loss = task_loss(logits, batch["labels"])  # cross-entropy, one number
        optimizer.zero_grad()
        loss.backward()  # gradients for the prefix and head only
        optimizer.step()
        losses.append(loss.item())
        if len(losses) % every == 0:
            print(f"steps {len(losses) - every + 1:>2}-{len(losses):<2}: mean loss {sum(losses[-every:]) / every:.3f}")
    return losses


def short_run(model: TaskModel, train_loader, heldout_loader, expect_gain: float | None = 0.1):
    before, positive = dev_accuracy(model, heldout_loader)
    print(f"before training: held-out accuracy {before:.3f} (the head calls {positive:.0%} of them positive)")
    losses = train_by_hand(model, train_loader)
    after, positive = dev_accuracy(model, heldout_loader)
    print(f"after {len(losses)} steps: held-out accuracy {after:.3f} ({positive:.0%} called positive)")
    if expect_gain is not None:  # None: a run too small to learn
        first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
        assert abs(before - 0.5) < 0.05, f"an untrained head at chance, not {before:.3f}"
        assert after >= before + expect_gain and last < first - 0.05, (before, after, first, last)
    return before, after


accuracy = short_run(model, train_loader, heldout_loader, expect_gain=0.1)


# %% [markdown]
# ### What `fit` adds, and why
#
# `fit` (`minigpt_ptv2/training/trainer.py`) is this loop plus what a real run needs:
#
# - **a schedule**: the learning rate rises over the first steps (warm-up) and falls to 0 by the
#   end (`warmup_decay`), so the first steps, taken while Adam's estimates are still poor, are
#   small, and the last ones settle;
# - **clipping**: one gradient norm over all trainable tensors, scaled down to 1, so one odd
#   batch cannot throw the prompt far;
# - **the divergence watch** (`training/divergence.py`): a loss that is NaN or infinite, or stays
#   far above where the run started, stops the run with a diagnosis before it updates anything;
# - **loss scaling** under fp16 (`training/precision.py`): the loss is multiplied before
#   backward, so small gradients do not round to 0 in float16, and a step whose gradients
#   overflowed is skipped;
# - **checkpoints and resume**: the best epoch's prompt kept by its dev score
#   (`training/keeper.py`), and every epoch the optimizer's, the schedule's and the random
#   generators' state (`training/state.py`), so a stopped run continues where it was, on the
#   same batches; and several processes under `torchrun` (`training/distributed.py`).
#
# From here on the lesson trains with `fit`.


# %% [markdown]
# ## 5. The checkpoint: only what was trained
#
# `save_checkpoint` writes the trainable tensors (prefix table + head) to a safetensors file
# and a small JSON saying which method, P, labels and backbone they belong to. The backbone is
# not saved: loading rebuilds it from the pretrained folder and checks it is the same one. The
# JSON's `backbone` says what "the same" means (`core/fingerprint.py`): its dimensions (D, L, H,
# H_kv, d, the vocabulary size, the dtype); `weights`, one sha256 over every backbone tensor;
# `tensors`, a short sha256 of each tensor by name (about a hundred for MiniLM; the lesson prints
# the first few), so that a refusal can say which weight differs; and `tokenizer`, a sha256 of
# the vocabulary files (the same weights read through another vocabulary see other tokens).
# Reloaded, the model must give the very same logits. The lesson saves into a temporary folder
# and prints the JSON before the folder goes; to keep one, call `save_and_reload` with a folder
# of your own.

# %%
def save_and_reload(model: TaskModel, P: int, dev_batch: dict, folder: Path) -> dict:
    info = save_checkpoint(model, folder, task="sst2", method="prefix", P=P, labels=SST2_LABELS)
    backbone = Path(default_model_dir()) / "model.safetensors"
    files = sorted(p.name for p in folder.iterdir())
    print(f"checkpoint {files}: {info['bytes'] / 1024:.0f} KB "
          f"({info['tensors']} tensors) vs the backbone's weights {backbone.stat().st_size / 2**20:.0f} MB")
    expected = 4 * sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert expected <= info["bytes"] < expected + 8192, "weights (float32) plus a small header and JSON"
    meta = json.loads((folder / "checkpoint.json").read_text())
    tensors = meta["backbone"]["tensors"]
    shown = {**meta, "backbone": {**meta["backbone"], "tensors": {**dict(list(tensors.items())[:3]),
                                                                  "...": f"{len(tensors) - 3} more"}}}
    print("checkpoint.json, its per-tensor digests cut to the first 3:")
    print(json.dumps(shown, indent=2))
    cfg = model.encoder.config
    assert (meta["backbone"]["D"], meta["backbone"]["L"]) == (cfg.hidden_size, cfg.num_hidden_layers)
    reloaded, meta = load_checkpoint(folder)
    with torch.no_grad():
        model.eval()
        a = model(dev_batch["input_ids"], dev_batch["attention_mask"], task="sst2")  # [B, 2]
        b = reloaded(dev_batch["input_ids"], dev_batch["attention_mask"], task="sst2")  # [B, 2]
    print(f"reloaded ({meta['method']}, P={meta['P']}): max |logits difference| = {(a - b).abs().max():.1e}")
    assert torch.allclose(a, b, atol=1e-6)
    return info


with tempfile.TemporaryDirectory() as folder:
    save_and_reload(model, P, next(iter(heldout_loader)), Path(folder))


# %% [markdown]
# ## 6. The shapes, recorded
#
# One forward pass of a task model, on the tiny BERT (D=24, L=2, H=4, d=6, feed-forward width
# D_ff=40, V=120) so the numbers stay small: B=3 sentences, N=9 tokens (the last row padded
# by 3), P=5. The prefix table `[P, L*2*D]` becomes `[L, 2, H, P, d]`, each layer reads its
# `[B, H, P, d]` keys and values, and the head reads `final.pooler` `[B, D]`, the real [CLS]
# (the head itself has no capture point).

# %%
def trace_example(B=3, N=9, P=5, layers=2, pad=3) -> ShapeTrace:
    torch.manual_seed(0)
    cfg = preset("bert-tiny").replace(num_hidden_layers=layers)
    encoder = BertEncoder(cfg, prompt=KVPrefix(cfg, P)).eval()
    model = TaskModel(encoder, {"sst2": Head(cfg.hidden_size, 2, "sequence")}).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)  # [B, N]
    mask[-1, N - pad:] = 0
    with torch.no_grad(), ShapeTrace.for_model(encoder, B=B, N=N) as tr:
        logits = model(ids, mask, task="sst2")  # [B, 2]
    assert logits.shape == (B, 2)
    return tr


print(trace_example().table())


# %% [markdown]
# ## 7. The recipe: what `train` does by default, and what it buys
#
# How a prompt is trained matters as much as where it sits. `train`'s defaults for each method
# (its *recipe*: peak learning rate, warm-up share, and where the prompt starts) live in
# `minigpt_ptv2/catalog.py` (`RECIPES`), and each was chosen by `benchmarks/recipe.py` on
# training sentences held out from training, never on dev (`train --holdout N` does that for
# any setting you want to try). A prompt can start from noise, or from a real text (`--init
# tokens`): the first P word pieces of the training set, as the frozen model reads them, so
# the soft prompt starts as their embeddings, the deep prompt as each layer's input rows and
# the K/V prefix as each layer's keys and values of those rows (`prompts/from_tokens.py`).
#
# Below, the same prefix is trained with the old default (lr 1e-2, from noise) and with the
# recipe (lr 1e-1, from the training set's first word pieces), three seeds each (a seed decides
# the batches' order, the head's start and dropout), on one pass over this lesson's 480 short
# sentences, scored on the held-out ones. One change from section 4: batches of **8**, so the
# pass is 60 steps instead of 30, for the same sentences and about the same time. Why:
#
# - A large learning rate needs many steps. Adam moves each entry by about the learning rate per
#   step whatever the gradient's size, so an unlucky batch at the peak rate is a big step in a
#   bad direction, and only the steps after it can undo it. In 30 steps of 16 (section 4's
#   batches) the recipe collapsed on two seeds of five: the head ended up calling 96-100% of the
#   held-out sentences positive, 0.59-0.60 accuracy, while the other three reached 0.81-0.85.
#   Its mean won, but by less than its own seed spread (0.73 against 0.61, spread 0.27).
# - In 60 steps of 8 none of eight seeds collapsed: the recipe reached 0.76-0.86, the old
#   default 0.59-0.72. Adam moves the old default's entries by at most 1e-2 a step, so it has
#   barely left its start.
#
# The cell asserts what "the recipe helps" has to mean: the recipe's mean is above
# the old default's by more than the larger of the two seed spreads (the spread is max - min over
# the three seeds). `train`'s own budget is larger still (batches of 32 over 250 steps, 4,000
# sentences, 2 epochs); there the two rates end within a point of each other on SST-2 (0.824 and
# 0.827 on held-out training sentences, benchmarks/recipe_results.jsonl, one seed), and the
# recipe's larger rate earned its place on CoNLL-2003, where it gained 11 F1 points (catalog.py
# says how each choice was measured). A recipe belongs to a budget: measure it at yours.
#
# One more default of `train` is about speed, not learning: it draws each batch from sentences
# of similar length (`--batches grouped`, `data/grouping.py`). A batch is padded to its longest
# row, so a randomly drawn batch of short and long sentences is mostly padding; grouped, an epoch
# on SST-2 or CoNLL-2003 is 2.3-2.7 times quicker, and the README's table shows what it
# moves in the scores. This lesson's loaders shuffle plainly: a few hundred sentences are quick
# either way.

# %%
def recipe_effect(tok, train, heldout, P: int, batch_size: int, seeds=(0, 1, 2)) -> dict:
    """Held-out accuracy of a prefix trained with the old default and with the recipe, per seed."""
    recipe = RECIPES["prefix"]
    encoder = load_pretrained(default_model_dir(), expect="bert")  # loaded once, shared by every run
    scores = {}
    for name, (lr, init) in {"old default": (1e-2, "random"), "recipe": (recipe.lr, recipe.init)}.items():
        scores[name] = []
        for seed in seeds:
            train_loader, heldout_loader = loaders(tok, train, heldout, batch_size, seed)
            set_seed(seed)
            start = start_text(train_loader.dataset.input_ids, tok, P) if init == "tokens" else None
            model = build_task_model("sst2", "prefix", P, encoder=encoder, start=start)
            fit(model, train_loader, TrainConfig(epochs=1, lr=lr, warmup_ratio=recipe.warmup,
                                                 seed=seed, progress=False), task="sst2")
            scores[name].append(dev_accuracy(model, heldout_loader)[0])
        runs = scores[name]
        print(f"{name:<11} lr {lr:<5g} init {init:<6}: " + "  ".join(f"{a:.3f}" for a in runs) +
              f"   mean {statistics.mean(runs):.3f}, spread {max(runs) - min(runs):.3f}")
    return scores


def verdict(scores: dict, check: bool = True) -> float:
    """The recipe's margin over the old default (mean minus mean), next to the larger seed spread."""
    old, new = scores["old default"], scores["recipe"]
    spread = max(max(old) - min(old), max(new) - min(new))
    gap = statistics.mean(new) - statistics.mean(old)
    print(f"recipe - old default: margin {gap:+.3f}, larger seed spread {spread:.3f}")
    if check:  # a win is a margin no seed's luck could make
        assert gap > spread, f"the recipe's margin {gap:.3f} is within the seed spread {spread:.3f}: {scores}"
    return gap - spread


scores = recipe_effect(tok, train, heldout, P, batch_size=8)
beyond_spread = verdict(scores)


# %% [markdown]
# ## What to remember
#
# - Prompt training = frozen backbone + trainable prompt + small head; `requires_grad` is off
#   for every backbone weight, and the optimizer only ever sees the rest.
# - "Trainable %" is about 0.33% for a P=16 prefix on MiniLM, whichever convention you use
#   (they differ in the third digit). It measures storage and optimizer state, not compute:
#   a step costs about 2 forward passes (full fine-tuning: 3, a head alone: 1), because the
#   gradient runs back through the whole frozen network to reach every layer's prefix.
# - A checkpoint holds only what was trained, a few hundred KB next to an 87 MB backbone, plus
#   enough metadata (`backbone`: dimensions and sha256 digests of every weight and of the
#   tokenizer) to refuse the wrong backbone and say which tensor differs.
# - A training step is five lines (forward, loss, zero the gradients, backward, step) over the
#   parameters that require a gradient; `fit` adds the schedule, clipping, the divergence watch,
#   fp16 loss scaling and what a checkpoint and a resume need.
# - Prompts want a large learning rate (3e-2 to 1e-1 in `train`'s recipes, chosen on held-out
#   training data, section 7; full fine-tuning typically uses
#   about 5e-5): Adam moves each entry by about the learning rate per step, and a fresh table's
#   entries are of size about 1. A large rate needs enough steps to average out unlucky batches:
#   the recipe's 1e-1 collapsed on two seeds of five in 30 steps of 16, on none in 60 steps of 8.
#
# ## Check your understanding
#
# 1. How many numbers does a P=20 K/V prefix train on BERT-base (L=12, D=768), and how many
#    does its head add for SST-2?
#
#    <details><summary>Answer</summary>
#
#    `P*L*2*D` = `20*12*2*768` = 368,640 for the prefix; the head Linear(768, 2) adds `768*2` + 2 =
#    1,538.
#
#    </details>
#
# 2. Only the prefix and head train, yet a step costs about twice a forward pass. Which products
#    make up the second pass, and which are skipped?
#
#    <details><summary>Answer</summary>
#
#    The gradients with respect to each layer's input (grad_out times W transposed, as many FLOPs
#    as the forward product) are computed in every layer, so the gradient reaches every layer's
#    prefix. The weight gradients (input transposed times grad_out), the third pass of full
#    fine-tuning, are skipped: the weights are frozen.
#
#    </details>
#
# 3. Before training, the head called only about a tenth of the held-out sentences positive,
#    yet scored about 0.5. What would a head that calls *every* sentence negative score here,
#    and what does that say about reading an accuracy?
#
#    <details><summary>Answer</summary>
#
#    The share of negative sentences among those scored (the held-out sentences are about half
#    positive; count them with `sum(e.label for e in heldout)`). So about 0.5 is what no knowledge
#    at all scores; an accuracy means something only next to that baseline (on an unbalanced set
#    the baseline is the larger class's share, not 0.5).
#
#    </details>
#
# 4. You load a checkpoint trained on MiniLM onto a BERT-base folder. Which field of
#    checkpoint.json stops it, and what would happen without it?
#
#    <details><summary>Answer</summary>
#
#    `backbone` (D 384 vs 768, L 6 vs 12, and the weights' digests): loading refuses with a message
#    naming each difference. Without it the prefix table [P, `6*2*384`] would
#    not even fit the [P, `12*2*768`] one; worse, on a backbone of the same shape but other weights it
#    would load silently and steer a network it was never trained for.
#
#    </details>
#
# ## Try this
#
# Each has an answer in `lessons/solutions/10_solutions.py` (the function named in brackets), run by
# the test suite.
#
# 1. Keep a checkpoint: run sections 1-4, then `save_and_reload(model, P, next(iter(heldout_loader)),
#    Path("runs/lesson_10"))`, and open `runs/lesson_10/checkpoint.json`. Which fields name the
#    backbone? Change its `D` to 768 and call `load_checkpoint("runs/lesson_10")`: read
#    the error. [`try_1`]
# 2. Build `build_task_model("sst2", "deep", 16)` and `"soft"` instead of `"prefix"`, and count
#    what each trains (`p.numel()` of the parameters with `requires_grad`, prompt and head
#    apart): how many numbers does each prompt train? [`try_2`]
# 3. Why a large learning rate? Train a fresh prefix for 5 steps with `fit` at lr=3e-2 and at
#    lr=1e-3, and measure how far the prefix table moved (mean |change| per entry) next to the
#    size of its entries. [`try_3`]
# 4. Run `step_cost` on a deep prompt (`build_task_model("sst2", "deep", 16)`, method "deep"),
#    on the same batch as the prefix: how many forward passes is its step, and how do its
#    GFLOPs compare with the prefix's? [`try_4`]
