# %% [markdown]
# # Lesson 04 — Loading pretrained BERT, and proving it is the same model
#
# Prompt tuning only makes sense on top of a *pretrained* backbone. This project ships one:
# all-MiniLM-L6-v2 (a BERT with L=6, D=384, H=12, d=32), as a HuggingFace-format folder on
# disk. Nothing is downloaded.
#
# Loading is a table of names plus two layout changes, and every key must be accounted for.
# BERT's checkpoint holds `nn.Linear` matrices `[out, in]`; our `Linear` computes x W + b with
# W `[in, out]`, so each matrix is transposed. And our attention computes Q, K and V with one
# product, so BERT's separate query, key and value become the three column blocks of one
# `qkv` matrix `[D, 3D]`. Then we *prove* the
# result is the same function as the reference implementation, component by component,
# when `transformers` is installed (this lesson still runs without it).

# %%
from __future__ import annotations

import json
import os
import re

import torch
import torch.nn.functional as F

from minigpt_ptv2 import BertEncoder, ShapeTrace
from minigpt_ptv2.models import bert, config_from_hf
from minigpt_ptv2.models.hf_files import read_state_dict
from minigpt_ptv2.pretrained import default_model_dir

QUICK = os.environ.get("MINIGPT_PTV2_QUICK", "") not in ("", "0")

# %% [markdown]
# ## 1. What is in the folder
#
# `config.json` becomes our `BertConfig` (same field names); the weights are a
# `model.safetensors` file of named tensors.

# %%
def look_inside(model_dir):
    cfg = config_from_hf(json.loads((model_dir / "config.json").read_text()))
    print(f"folder: {model_dir.name}\nconfig: {cfg.dims()}, V={cfg.vocab_size}, "
          f"eps={cfg.layer_norm_eps}")
    sd = read_state_dict(model_dir)
    print(f"{len(sd)} tensors in the checkpoint, {sum(t.numel() for t in sd.values()):,} numbers")
    return sd, cfg


# %% [markdown]
# ## 2. The table of names
#
# `models/bert.py` lists every tensor of ours and where BERT's checkpoint keeps it (`bert.keys`);
# a checkpoint key it does not name must be ignored on purpose, with a reason (`bert.IGNORED`).
# Anything else is an error, never silently dropped. The right column says where each tensor
# lands: matrices are transposed to `[in, out]`, and query, key and value become the three
# column blocks of `qkv` (D columns each). Saving (`save_pretrained`) reads the same table
# backwards.

# %%
def show_renames(sd: dict, cfg, n: int = 24):
    shown = 0
    for k in bert.keys(cfg):
        if ".layers." in k.ours and not k.ours.startswith("layers.0."):
            continue  # layer 0 stands for all layers
        for j, hf in enumerate(k.hf):
            where = k.ours if len(k.hf) == 1 else f"{k.ours} {'columns' if k.ours.endswith('weight') else 'entries'} {j}D:{j + 1}D"
            print(f"  {hf:<52} -> {where}{', transposed' if k.transpose and hf.endswith('weight') else ''}")
            shown += 1
        if shown >= n:
            break
    named = {h for k in bert.keys(cfg) for h in k.hf}
    for key in sd:
        k = key.removeprefix("bert.")
        if k not in named:
            why = next(reason for pat, reason in bert.IGNORED if re.fullmatch(pat, k))
            print(f"  {key:<52} -> ignored: {why}")


# %% [markdown]
# ## 3. Proving equivalence, component by component
#
# End-to-end agreement can hide two bugs that cancel; agreement after *every* layer cannot.
# `ShapeTrace(keep=...)` hands us our embeddings and each layer's output; the reference gives
# its own with `output_hidden_states=True`. We compare them all at an explicit tolerance.

# %%
def compare_with_transformers(model: BertEncoder, model_dir, batch: dict, atol: float = 1e-5):
    for var, value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(var, value)  # a local folder: no network, no progress bars
    try:
        import transformers
    except ImportError:
        print("transformers is not installed: skipping the comparison (pip install transformers)")
        return None
    ref = transformers.BertModel.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        theirs = ref(**batch, output_hidden_states=True)
        with ShapeTrace(keep=("embeddings.out", ".out")) as tr:
            ours = model(**batch)
    ours_by_stage = [tr.tensors["embeddings.out"]] + [
        tr.tensors[f"layer{i}.out"] for i in range(len(model.layers))]
    real = batch["attention_mask"].bool()  # pad rows are not compared: their values are free
    worst = 0.0
    for i, (a, b) in enumerate(zip(ours_by_stage, theirs.hidden_states)):
        diff = (a - b)[real].abs().max().item()
        worst = max(worst, diff)
        print(f"  {'embeddings' if i == 0 else f'layer {i - 1}':<10}  max |ours - transformers| = {diff:.1e}")
    pool = (ours.pooler_output - theirs.pooler_output).abs().max().item()
    print(f"  {'pooler':<10}  max |ours - transformers| = {pool:.1e}")
    assert worst < atol and pool < atol, f"not equivalent at atol={atol}"
    return worst


# %% [markdown]
# On a CPU with the same PyTorch kernels the two agree to the last bit (0.0e+00). The tolerance
# is still stated: on a GPU, in another dtype or with another attention kernel, the order of
# additions changes and differences of about 1e-6 are normal, not bugs.


# %% [markdown]
# ## 4. Is it really pretrained? A sanity check with sentences
#
# MiniLM was trained so that the *mean* of its token vectors is a sentence embedding. Two
# sentences about a cat on a mat should be closer to each other than to one about markets.
# Random weights would not pass this test; loaded weights do.

# %%
def sentence_similarity(model: BertEncoder, tok):
    texts = ["A cat is sitting on the mat.", "A kitten rests on a rug.",
             "Stock markets fell sharply on Monday."]
    batch = tok.encode(texts)
    with torch.no_grad():
        h = model(**batch).last_hidden_state  # [B, N, D]
    m = batch["attention_mask"].unsqueeze(-1).float()  # [B, N, 1]
    emb = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)  # [B, D]: mean over real tokens
    sim = emb @ emb.T  # [B, B]
    print(f"  cos(cat, kitten) = {sim[0, 1]:.3f}   cos(cat, markets) = {sim[0, 2]:.3f}")
    assert sim[0, 1] > sim[0, 2] + 0.2
    return batch


# %% [markdown]
# ## 5. The shapes, recorded
#
# Six layers of MiniLM on a small batch. Compare with lesson 01: same rows, other numbers
# (D=384, d=32), because only the config changed.

# %%
def trace_example(model_dir=None, B=2, N=8) -> ShapeTrace:
    model = BertEncoder.from_pretrained(model_dir or default_model_dir())
    torch.manual_seed(0)
    ids = torch.randint(1000, model.config.vocab_size, (B, N))  # [B, N]
    with torch.no_grad(), ShapeTrace.for_model(model, B=B, N=N) as tr:
        model(ids)
    return tr


# %%
def main():
    from minigpt_ptv2.data import WordPiece
    model_dir = default_model_dir()
    sd, cfg = look_inside(model_dir)
    show_renames(sd, cfg)
    model = BertEncoder.from_pretrained(model_dir)  # eval mode: dropout off
    tok = WordPiece.from_model_dir(model_dir)
    print("\nsentence embeddings from the loaded weights:")
    batch = sentence_similarity(model, tok)
    print("\nours vs transformers.BertModel, stage by stage:")
    compare_with_transformers(model, model_dir, batch)
    print()
    print(trace_example(model_dir, B=2, N=8).table())


# %% [markdown]
# ## What to remember
#
# - A pretrained folder is `config.json` + named tensors; loading maps names with a short
#   rename table and refuses anything missing, unexpected or mis-shaped.
# - Prove equivalence per component (embeddings, every layer, pooler) at a stated tolerance;
#   compare real tokens only, since padded rows hold arbitrary values.
# - Loaded models start in eval mode: dropout off, so outputs are deterministic.
#
# ## Try this
#
# - Set `layer_norm_eps` to 1e-5 in the config (GPT-2's value) and rerun the comparison.
# - Compare with `atol=1e-7`: which stage fails first, and by how much?
# - Point `MINIGPT_PTV2_MODEL` at another BERT folder you have on disk and rerun.

# %%
if __name__ == "__main__":
    main()
