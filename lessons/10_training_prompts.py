# %% [markdown]
# # Lesson 10 — Training a prompt on a real task
#
# Everything so far ran on random or untouched weights. Now a K/V prefix (P-Tuning v2) learns
# something: SST-2 sentiment, on the frozen pretrained MiniLM (L=6, D=384, H=12).
#
#     sentence -> WordPiece ids [B, N] -> frozen MiniLM + trainable prefix [P, L*2*D]
#              -> pooler (the real [CLS]) [B, D] -> trainable head Linear(D, 2) -> [B, 2]
#
# Only the prefix and the small head learn. We count what that means ("trainable %"), train
# briefly on a small subset, save a checkpoint that is a few hundred KB, and load it back.
# The `train` command (`python -m minigpt_ptv2 train sst2 prefix`) does the
# same with more data; here the pieces are laid out one by one.

# %%
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from minigpt_ptv2 import BertEncoder, ShapeTrace, preset
from minigpt_ptv2.data import sst2_or_sample
from minigpt_ptv2.data import SST2_LABELS, WordPiece
from minigpt_ptv2.prompts import KVPrefix, format_report, parameter_report
from minigpt_ptv2.training import (Head, TaskModel, TrainConfig, build_task_model, evaluate, fit,
                                   get_task, load_checkpoint, save_checkpoint, set_seed)

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")

# %% [markdown]
# ## 1. Data: a small slice of SST-2
#
# SST-2 is read in place from the data folder (`MINIGPT_PTV2_DATA`, or `shared/data` beside
# the checkout). Without it the lesson uses the small sample of real SST-2 sentences shipped in
# the package (minigpt_ptv2/data/sst2_sample/SOURCE.md says where they come from).

# %%
def loaders(tok: WordPiece, train, dev, batch_size: int, seed: int = 0):
    task = get_task("sst2")
    return (task.batches(train, tok, batch_size=batch_size, shuffle=True, seed=seed, max_length=64),
            task.batches(dev, tok, batch_size=64, shuffle=False, max_length=64))


# %% [markdown]
# ## 2. What "trainable %" means
#
# `build_task_model("sst2", "prefix", P)` loads MiniLM, attaches `KVPrefix(P)`, adds a head,
# and switches `requires_grad` off for every backbone weight. What is left:
#
# - the prefix table `[P, L*2*D]`: P keys and P values per layer and head;
# - the head `Linear(D, 2)`: D*2 weights + 2 biases.
#
# "Trainable %" is a ratio, and write-ups use two denominators: the backbone alone (our
# `params` command) or everything in the model including the prompt (PEFT's
# `print_trainable_parameters`). For small P they agree to two digits. What the number does
# *not* say: the frozen backbone still runs forward **and backward** every step, because the
# prefix sits in every layer and its gradient has to flow back through all of them. A prompt
# saves optimizer memory and checkpoint size, not compute.

# %%
def trainable_percent(model: TaskModel, P: int):
    counts = {"prompt": 0, "head": 0, "backbone": 0}
    for name, p in model.named_parameters():
        part = "prompt" if name.startswith("encoder.prompt.") else "head" if name.startswith("heads.") else "backbone"
        assert p.requires_grad == (part != "backbone"), name
        counts[part] += p.numel()
    cfg = model.encoder.config
    L, D = cfg.num_hidden_layers, cfg.hidden_size
    assert counts["prompt"] == P * L * 2 * D and counts["head"] == D * 2 + 2
    trainable = counts["prompt"] + counts["head"]
    total = sum(counts.values())
    print(f"prompt  [P, L*2*D] = [{P}, {L * 2 * D}]     {counts['prompt']:>10,}")
    print(f"head    Linear(D={D}, 2)           {counts['head']:>10,}")
    print(f"backbone (frozen)                   {counts['backbone']:>10,}")
    print(f"trainable / backbone        = {100 * trainable / counts['backbone']:.3f}%")
    print(f"trainable / all parameters  = {100 * trainable / total:.3f}%   (PEFT's convention)")
    print(format_report(parameter_report(cfg, P, ["soft", "deep", "prefix", "prefix-mlp"])))
    return counts


# %% [markdown]
# ## 3. A short run
#
# AdamW on the trainable parameters only, a high learning rate (prompts sit far from where
# the weights live and need big steps), warm-up then linear decay, one epoch. We measure dev
# accuracy before and after. A random head starts near 50%; a short run moves it, but do not
# read much into the exact number: a few hundred sentences and one epoch are a demonstration,
# not a benchmark (see `benchmarks/claim.py` for that).

# %%
def short_run(model: TaskModel, train_loader, dev_loader, epochs=1, lr=3e-2, seed=0):
    task = get_task("sst2")
    before = evaluate(model, dev_loader, task)["accuracy"]
    start = time.perf_counter()
    history = fit(model, train_loader, TrainConfig(epochs=epochs, lr=lr, seed=seed, progress=False), task="sst2",
                  evaluate=lambda m: evaluate(m, dev_loader, task))
    took = time.perf_counter() - start
    steps = epochs * len(train_loader)
    print(f"dev accuracy {before:.3f} before, {history[-1]['accuracy']:.3f} after {steps} steps "
          f"({took:.1f} s, {took / steps:.2f} s/step); train loss {history[-1]['train_loss']:.3f}")
    return before, history


# %% [markdown]
# ## 4. The checkpoint: only what was trained
#
# `save_checkpoint` writes the trainable tensors (prefix table + head) to a safetensors file
# and a small JSON saying which method, P, labels and backbone they belong to. The backbone is
# not saved: loading rebuilds it from the pretrained folder and checks it is the same one.
# Reloaded, the model must give the very same logits.

# %%
def save_and_reload(model: TaskModel, P: int, dev_batch: dict, folder: Path):
    info = save_checkpoint(model, folder, task="sst2", method="prefix", P=P, labels=SST2_LABELS)
    from minigpt_ptv2.pretrained import default_model_dir
    backbone = Path(default_model_dir()) / "model.safetensors"
    files = sorted(p.name for p in folder.iterdir())
    print(f"checkpoint {files}: {info['bytes'] / 1024:.0f} KB "
          f"({info['tensors']} tensors) vs the backbone's weights {backbone.stat().st_size / 2**20:.0f} MB")
    expected = 4 * sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert expected <= info["bytes"] < expected + 8192, "weights (float32) plus a small header and JSON"
    reloaded, meta = load_checkpoint(folder)
    with torch.no_grad():
        model.eval()
        a = model(dev_batch["input_ids"], dev_batch["attention_mask"], task="sst2")  # [B, 2]
        b = reloaded(dev_batch["input_ids"], dev_batch["attention_mask"], task="sst2")  # [B, 2]
    print(f"reloaded ({meta['method']}, P={meta['P']}): max |logits difference| = {(a - b).abs().max():.1e}")
    assert torch.allclose(a, b, atol=1e-6)
    return info


# %% [markdown]
# ## 5. The shapes, recorded
#
# One forward pass of a task model, on the tiny BERT (D=24, H=4, d=6; 2 layers) so the numbers
# stay small: B=3 sentences, N=9 tokens (the last row padded), P=5. The prefix table `[P, L*2*D]` becomes
# `[L, 2, H, P, d]`, each layer reads its `[B, H, P, d]` keys and values, and the head reads
# `final.pooler` `[B, D]`, the real [CLS] (the head itself has no capture point).

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


# %%
def main():
    n_train, n_dev, P, batch = (8, 8, 4, 8) if QUICK else (384, 200, 16, 16)
    set_seed(0)
    train, dev, source = sst2_or_sample(None, n_train, n_dev)
    tok = WordPiece.from_model_dir()
    train_loader, dev_loader = loaders(tok, train, dev, batch)
    print(f"{len(train)} training and {len(dev)} dev sentences ({source}), P={P}")
    model = build_task_model("sst2", "prefix", P)
    print()
    trainable_percent(model, P)
    print()
    short_run(model, train_loader, dev_loader)
    print()
    dev_batch = next(iter(dev_loader))
    with tempfile.TemporaryDirectory() as folder:
        save_and_reload(model, P, dev_batch, Path(folder))
    print()
    tr = trace_example()
    print(tr.select("prefix", "embeddings", "mask", "layer0.", "final").table())


# %% [markdown]
# ## What to remember
#
# - Prompt training = frozen backbone + trainable prompt + small head; `requires_grad` is off
#   for every backbone weight, and the optimizer only ever sees the rest.
# - "Trainable %" is trainable / backbone (or / everything): about 0.3% for a P=16 prefix on
#   MiniLM. It measures storage and optimizer state, not compute: forward and backward still
#   run through the whole frozen network.
# - A checkpoint holds only what was trained, a few hundred KB next to a 90 MB backbone, plus
#   enough metadata to refuse the wrong backbone when loading.
# - Prompts want a large learning rate (1e-2 to 3e-2 here), weights a small one (5e-5).
#
# ## Try this
#
# - Train longer: `python -m minigpt_ptv2 train sst2 prefix --P 16 --epochs 1 --max-train 4000`.
# - Swap `"prefix"` for `"deep"` or `"soft"` in `main` and compare the counts and accuracies.
# - Try lr=1e-3 for the prefix and watch accuracy stall: the learning rate matters more than P here.
# - Open the saved `checkpoint.json`: which fields would catch loading onto another backbone?

# %%
if __name__ == "__main__":
    main()
