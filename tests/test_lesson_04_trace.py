"""Lesson 04, traced: the shipped pretrained MiniLM (L=6, D=384, H=12, d=32, D_ff=1536,
V=30,522) on B=2, N=8.

The same rows as lesson 01's BERT-base, with MiniLM's numbers: loading a checkpoint changes
values, never shapes. Every layer reads and writes [B, N, D]; inside, queries, keys and values
are [B, H, N, d] (the fused path: no scores or probs rows). No two letters share a size, and the
first attention call is recomputed head by head from the loaded weights, so heads split as
(d h) instead of (h d) fail too, though every shape stays right. Skipped when the pretrained
folder is not installed.

Then the lesson's step, loading, by its numbers: every stage of the run is recomputed from the
checkpoint file itself (`model.safetensors`, HF's names and [out, in] matrices, eps from
`config.json`), written out here without our key table: the embeddings, each layer's Q, K and
V heads, its attention output and its output. A matrix loaded without its transpose, or Q and
K fused in the wrong order, keeps every shape (D x D is square) and fails here, naming the stage.
Run: `pytest tests/test_lesson_04_trace.py`.
"""
import json

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from trace_checks import close, fail, gap
from trace_helpers import trace_lesson

EXPECTED = """
name                     shape           letters
embeddings.out           [2, 8, 384]     [B, N, D]
mask.keys                [2, 8]          [B, N]
layer0.attn.q            [2, 12, 8, 32]  [B, H, N, d]
layer0.attn.k            [2, 12, 8, 32]  [B, H, N, d]
layer0.attn.v            [2, 12, 8, 32]  [B, H, N, d]
layer0.attn.context      [2, 12, 8, 32]  [B, H, N, d]
layer0.attn.out          [2, 8, 384]     [B, N, D]
layer0.out               [2, 8, 384]     [B, N, D]
layer1.attn.q            [2, 12, 8, 32]  [B, H, N, d]
layer1.attn.k            [2, 12, 8, 32]  [B, H, N, d]
layer1.attn.v            [2, 12, 8, 32]  [B, H, N, d]
layer1.attn.context      [2, 12, 8, 32]  [B, H, N, d]
layer1.attn.out          [2, 8, 384]     [B, N, D]
layer1.out               [2, 8, 384]     [B, N, D]
layer2.attn.q            [2, 12, 8, 32]  [B, H, N, d]
layer2.attn.k            [2, 12, 8, 32]  [B, H, N, d]
layer2.attn.v            [2, 12, 8, 32]  [B, H, N, d]
layer2.attn.context      [2, 12, 8, 32]  [B, H, N, d]
layer2.attn.out          [2, 8, 384]     [B, N, D]
layer2.out               [2, 8, 384]     [B, N, D]
layer3.attn.q            [2, 12, 8, 32]  [B, H, N, d]
layer3.attn.k            [2, 12, 8, 32]  [B, H, N, d]
layer3.attn.v            [2, 12, 8, 32]  [B, H, N, d]
layer3.attn.context      [2, 12, 8, 32]  [B, H, N, d]
layer3.attn.out          [2, 8, 384]     [B, N, D]
layer3.out               [2, 8, 384]     [B, N, D]
layer4.attn.q            [2, 12, 8, 32]  [B, H, N, d]
layer4.attn.k            [2, 12, 8, 32]  [B, H, N, d]
layer4.attn.v            [2, 12, 8, 32]  [B, H, N, d]
layer4.attn.context      [2, 12, 8, 32]  [B, H, N, d]
layer4.attn.out          [2, 8, 384]     [B, N, D]
layer4.out               [2, 8, 384]     [B, N, D]
layer5.attn.q            [2, 12, 8, 32]  [B, H, N, d]
layer5.attn.k            [2, 12, 8, 32]  [B, H, N, d]
layer5.attn.v            [2, 12, 8, 32]  [B, H, N, d]
layer5.attn.context      [2, 12, 8, 32]  [B, H, N, d]
layer5.attn.out          [2, 8, 384]     [B, N, D]
layer5.out               [2, 8, 384]     [B, N, D]
final.last_hidden_state  [2, 8, 384]     [B, N, D]
final.pooler             [2, 384]        [B, D]
"""


def test_lesson_04_pretrained_minilm_trace(minilm_dir):
    trace, seen = trace_lesson("04", EXPECTED, model_dir=minilm_dir, B=2, N=8)
    assert len(set(trace.dims.values())) == len(trace.dims), f"two letters share a size: {trace.dims}"
    every_stage_is_the_checkpoints(seen, minilm_dir)
    seen.probe.check()  # last: the first attention call, recomputed head by head


def every_stage_is_the_checkpoints(seen, folder) -> None:
    """Each recorded stage = the same stage computed from the checkpoint's own tensors."""
    config = json.loads((folder / "config.json").read_text())
    sd, eps, H = load_file(str(folder / "model.safetensors")), config["layer_norm_eps"], config["num_attention_heads"]
    w = sd.__getitem__
    linear = lambda x, name: x @ w(name + ".weight").T + w(name + ".bias")  # noqa: E731  HF: [out, in]
    norm = lambda x, name: F.layer_norm(x, x.shape[-1:], w(name + ".weight"), w(name + ".bias"), eps)  # noqa: E731
    where = "(models/bert.py: keys, the checkpoint table: HF name, transpose, Q | K | V fused in that order)"
    ids = seen.runs[0][1]  # [B, N]
    N = ids.shape[1]
    with torch.no_grad():
        e = w("embeddings.word_embeddings.weight")[ids] + w("embeddings.position_embeddings.weight")[:N] \
            + w("embeddings.token_type_embeddings.weight")[0]  # [B, N, D]
        want = norm(e, "embeddings.LayerNorm")
        if not close(seen("embeddings.out"), want):
            fail(f"embeddings.out is not LayerNorm(word + position + token type 0, eps={eps:g}) of the checkpoint's "
                 f"tables (gap {gap(seen('embeddings.out'), want):.3g}) (models/bert.py: BertEmbeddings.__init__ "
                 f"builds its LayerNorm with the config's eps; keys, the checkpoint table)")
        for i in range(config["num_hidden_layers"]):
            x, hf = seen("embeddings.out" if i == 0 else f"layer{i - 1}.out"), f"encoder.layer.{i}."
            for kind, name in (("q", "query"), ("k", "key"), ("v", "value")):
                got = seen(f"layer{i}.attn.{kind}")  # [B, H, N, d]
                want = linear(x, hf + f"attention.self.{name}").unflatten(-1, (H, -1)).transpose(1, 2)
                if not close(got, want):
                    fail(f"layer{i}.attn.{kind} is not x {hf}attention.self.{name}.weight^T + bias, split into "
                         f"heads (gap {gap(got, want):.3g}) {where}")
            ctx = seen(f"layer{i}.attn.context")  # [B, H, N, d]
            attn = linear(ctx.transpose(1, 2).flatten(2), hf + "attention.output.dense")  # [B, N, D]
            if not close(seen(f"layer{i}.attn.out"), attn):
                fail(f"layer{i}.attn.out is not context {hf}attention.output.dense.weight^T + bias "
                     f"(gap {gap(seen(f'layer{i}.attn.out'), attn):.3g}) {where}")
            h = norm(x + attn, hf + "attention.output.LayerNorm")
            ffn = linear(F.gelu(linear(h, hf + "intermediate.dense")), hf + "output.dense")  # erf GELU
            h = norm(h + ffn, hf + "output.LayerNorm")
            if not close(seen(f"layer{i}.out"), h):
                fail(f"layer{i}.out is not the checkpoint's post-LN layer (erf GELU, eps={eps:g}) "
                     f"(gap {gap(seen(f'layer{i}.out'), h):.3g}) {where}")
