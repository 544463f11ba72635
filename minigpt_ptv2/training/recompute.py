"""Gradient checkpointing: keep each layer's input, not its activations, and recompute them in backward.

Training saves, for every layer, the tensors its backward pass reads: Q, K, V [B, H, P+N, d],
the attention probabilities [B, H, N, P+N], the feed-forward's widest activation [B, N, D_ff],
LayerNorm statistics, dropout masks. Summed over L layers that is most of a training step's
memory, and it grows with B and N. With checkpointing each layer keeps only what it was given
(x [B, N, D], and the prefix (K, V) [B, H_kv, P, d] it reads anyway); in backward it runs its
forward a second time, right before its own backward needs the result, and frees it after.
The price: one more forward pass of every layer per step; the gradients do not change. With a
frozen backbone (every prompt method) backward computes no weight gradients and costs about one
forward, so a step goes from ~2 forwards to ~3: about 1.5x the time (benchmarks/README.md:
at B=32, N=256 on MiniLM, 0.24x the peak memory for 1.6x the time).

    enable_grad_checkpoint(model)    every Layer of the model recomputes in backward
    disable_grad_checkpoint(model)   back to the plain layers
    with grad_checkpoint(model): ... the same, for a block

It works for every prompt method because it wraps the layer contract (core/layer.py), the one
call all of them go through: a shallow or deep prompt arrives inside x, a K/V prefix as the
`prefix` argument, and torch's non-reentrant checkpoint passes gradients back to any tensor
argument (the prefix's parameters train through it). Dropout inside a layer draws the same mask
on the recompute: torch saves the random generators' state before the first run and replays it
(and puts it back after, so the rest of the run draws what it would have drawn without this).

A layer recomputes only when it can help: autograd on and the layer in training mode. A call
asking for attention probabilities (need_weights) or for its K/V (use_cache) is passed through
as it is: those return extra tensors a caller keeps, so nothing would be saved. Captures
(core/capture.py) see the first run only; the recompute is silent, so a trace open around
`loss.backward()` does not list every layer twice.

How it is fitted (as fast/row_blocks.py does): a wrapper in front of the `forward` of each
layer instance; the class, its parameters and its state dict are untouched.
"""
from __future__ import annotations

import contextlib
from types import MethodType

import torch
from torch.utils.checkpoint import checkpoint

from ..core.capture import silenced
from ..core.layer import Layer
from ..errors import InputError


def _recompute_contexts():
    """(context of the first run, context of the recompute): only the recompute is silenced."""
    return contextlib.nullcontext(), silenced()


def _checkpointed_forward(layer, x, **kw):
    """The layer's own (class) forward, under torch's checkpoint when that saves memory. Bound to
    the layer instance, so a copy of the model (deepcopy) brings its own, not the original's."""
    forward = MethodType(type(layer).forward, layer)
    if kw.get("need_weights") or kw.get("use_cache") or not (torch.is_grad_enabled() and layer.training):
        return forward(x, **kw)
    return checkpoint(forward, x, use_reentrant=False, context_fn=_recompute_contexts, **kw)


def enable_grad_checkpoint(model: torch.nn.Module) -> int:
    """Make every Layer of `model` recompute its activations in backward; returns how many."""
    n = 0
    for module in model.modules():
        if isinstance(module, Layer):
            module.forward = MethodType(_checkpointed_forward, module)
            n += 1
    if n == 0:
        raise InputError(f"{type(model).__name__} has no transformer layer (core.layer.Layer) to checkpoint")
    return n


def disable_grad_checkpoint(model: torch.nn.Module) -> None:
    """Back to the plain forward of every layer."""
    for module in model.modules():
        if isinstance(module, Layer) and "forward" in module.__dict__:
            del module.forward


def is_grad_checkpointed(model: torch.nn.Module) -> bool:
    return any(isinstance(m, Layer) and "forward" in m.__dict__ for m in model.modules())


@contextlib.contextmanager
def grad_checkpoint(model: torch.nn.Module):
    """Checkpointing on for the block, off again after (even if it raises)."""
    enable_grad_checkpoint(model)
    try:
        yield model
    finally:
        disable_grad_checkpoint(model)
