"""One multi-head attention module for every model and every prompt method.

The seam the whole project builds on is `concat_prefix`: per-layer prefix keys and values
`[B, H, P, d]` are concatenated in front of the layer's own K and V. Queries come from the
real tokens only, so the output keeps N rows while each query scores P + N keys. A KV cache
for decoding is the same operation: the keys seen so far are simply a longer prefix.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .errors import InputError
from .linear import Linear
from .trace import record

KV = tuple[torch.Tensor, torch.Tensor]


def concat_prefix(k: torch.Tensor, v: torch.Tensor, prefix: KV | None) -> KV:
    """K/V prefix concatenation (P-Tuning v2, prefix tuning, and the KV cache).

    k, v: [B, H, N, d]; prefix: (K_p, V_p) each [B, H, P, d]  ->  [B, H, P+N, d] each.
    """
    if prefix is None:
        return k, v
    pk, pv = prefix
    B, H, _, d = k.shape
    if pk.shape != pv.shape or pk.dim() != 4 or pk.shape[0] != B or pk.shape[1] != H or pk.shape[3] != d:
        raise InputError(
            f"prefix shape mismatch: prefix K {list(pk.shape)} / V {list(pv.shape)} must be "
            f"[B={B}, H={H}, P, d={d}] to extend keys {list(k.shape)}")
    if pk.dtype != k.dtype and torch.is_autocast_enabled(k.device.type):
        pk, pv = pk.to(k.dtype), pv.to(k.dtype)  # autocast: fp32 prompts meet half-precision keys
    if pk.dtype != k.dtype or pk.device != k.device:
        raise InputError(
            f"prefix is {pk.dtype} on {pk.device} but the layer's keys are {k.dtype} on {k.device}; "
            f"move the prompt with .to(...) rather than relying on silent casts")
    k = torch.cat([pk, k], dim=2)  # [B, H, P+N, d]
    v = torch.cat([pv, v], dim=2)  # [B, H, P+N, d]
    return k, v


def additive_mask(keep: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Boolean keep-mask [B, 1, Nq, Nk] -> additive float mask (0 keep, dtype's min drop).

    The most negative finite number, not -inf: a fully masked row then softmaxes to a uniform
    distribution instead of NaN, in every dtype. Built in the compute dtype so fp16 does not
    overflow it to -inf.
    """
    if keep is None:
        return None
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(
        ~keep, torch.finfo(dtype).min)


class MultiHeadAttention(nn.Module):
    """Project Q/K/V, split heads, (extend K/V with a prefix), score, mask, softmax, weigh, merge.

    Q, K and V come from one matrix product: `qkv.weight` [D, 3D] is W_Q, W_K and W_V side by
    side (as in GPT-2's `c_attn`), so x [B, N, D] is read once and BLAS gets one wide product
    instead of three narrow ones. `qkv.weight[:, D:2D]` is W_K.

    Two paths compute the same function: an explicit one that can return the attention
    probabilities, and PyTorch's fused `scaled_dot_product_attention`, used whenever the
    probabilities are not asked for.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0, scope: str = "attn"):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise InputError(f"num_heads={num_heads} does not divide hidden_size={hidden_size}")
        self.num_heads, self.head_dim = num_heads, hidden_size // num_heads  # H, d
        self.qkv = Linear(hidden_size, 3 * hidden_size)  # x -> [Q | K | V]
        self.output = Linear(hidden_size, hidden_size)
        self.dropout = dropout
        self.scope = scope  # trace name, e.g. "layer3.attn"

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        return rearrange(t, "b n (h d) -> b h n d", h=self.num_heads)  # [B, H, N, d]

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, N, D] -> Q, K, V, each [B, H, N, d], from one product with [W_Q | W_K | W_V]."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # [B, N, 3D] -> 3 x [B, N, D]
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)  # [B, H, N, d] each

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None, prefix: KV | None = None,
                need_weights: bool = False, use_cache: bool = False):
        """x [B, N, D]; keep: boolean [B, 1, N or 1, P+N] (True = may attend) or None for "all";
        prefix: (K, V) each [B, H, P, d] or None.

        Returns (out [B, N, D], probs [B, H, N, P+N] or None, (K, V) [B, H, P+N, d] each or None).
        The K/V, what a KV cache keeps for the next decoding step, are returned only with
        use_cache=True. Otherwise nothing here keeps them (or the [B, N, 3D] projection they are
        views of) alive: without autograd they are freed on return.
        """
        s = self.scope
        q, k, v = self.project(x)  # [B, H, N, d] each
        record(s, "q", q)
        record(s, "k", k)
        record(s, "v", v)
        if prefix is not None:
            record(s, "prefix_k", prefix[0])  # [B, H, P, d]
            record(s, "prefix_v", prefix[1])  # [B, H, P, d]
        k, v = concat_prefix(k, v, prefix)  # [B, H, P+N, d] each
        if prefix is not None:
            record(s, "k_with_prefix", k)
            record(s, "v_with_prefix", v)
        if keep is not None and (keep.shape[-1] != k.shape[2] or keep.shape[-2] not in (1, q.shape[2])):
            raise InputError(f"attention mask shape mismatch: mask {list(keep.shape)} but queries "
                             f"{q.shape[2]} and keys {k.shape[2]} (N={q.shape[2]}, P+N={k.shape[2]})")
        p_drop = self.dropout if self.training else 0.0
        if need_weights:
            ctx, probs = self._explicit(q, k, v, keep, p_drop)
        else:
            mask = additive_mask(keep, q.dtype)  # [B, 1, N, P+N]
            ctx, probs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop), None
        record(s, "context", ctx)  # [B, H, N, d]
        out = self.output(rearrange(ctx, "b h n d -> b n (h d)"))  # [B, N, D]
        # A cache gets K/V with storage of their own, not views that would keep Q's columns alive.
        present = (k.contiguous(), v.contiguous()) if use_cache else None  # [B, H, P+N, d] each
        return record(s, "out", out), probs, present

    def _explicit(self, q, k, v, keep, p_drop):
        """The textbook formula, step by step: softmax(Q K^T / sqrt(d) + mask) V.

        Scores and mask are added in float32 whatever the input dtype: in fp16 a score below
        about -16 plus the mask constant would overflow to -inf, and a fully masked row of -inf
        softmaxes to NaN, which the next layer spreads into real tokens.
        """
        scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(self.head_dim)  # [B, H, N, P+N]
        if keep is not None:
            scores = scores + additive_mask(keep, torch.float32)  # [B, H, N, P+N]
        record(self.scope, "scores", scores)
        probs = torch.softmax(scores, dim=-1).to(q.dtype)  # [B, H, N, P+N]
        record(self.scope, "probs", probs)
        ctx = F.dropout(probs, p_drop, training=p_drop > 0) @ v  # [B, H, N, d]
        return ctx, probs
