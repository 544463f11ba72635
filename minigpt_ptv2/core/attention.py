"""One multi-head attention module for every model and every prompt method.

The seam the whole project builds on is the prefix (core/prefix.py): keys and values a layer
reads besides its own tokens'. A joined prefix, `[B, H_kv, P, d]` per layer, is concatenated in
front of the layer's own K and V by `concat_prefix`. Queries come from the real tokens only, so
the output keeps N rows while each query scores P + N keys. A KV cache for decoding is the
same operation: the keys seen so far are simply a longer prefix. A gated prefix is read apart,
under a softmax of its own, and added scaled by its gate (`read_gated`).

H_kv is the number of key/value heads: H in BERT and GPT-2, fewer under grouped-query attention
(LLaMA-style), where each K/V head serves a group of H / H_kv query heads. Prefixes and caches
stay at H_kv heads; the groups are widened to H only to score (`repeat_kv`).

The module knows no architecture. What differs between models comes in as arguments: whether
Q/K/V and the output projection have biases (each on its own: Qwen2 has the first, not the
second), and `rotary`, a function applied to Q and K with their rows' positions (rotary position
embeddings) for models that encode positions inside attention.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..errors import InputError
from .capture import record
from .linear import Linear
from .prefix import Prefix, as_prefix


def _fit(prefix: Prefix, k: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The prefix's K and V [B, H_kv, P, d], checked against keys k [B, H_kv, N, d]: shapes,
    and dtype (under autocast a float32 prompt meets half-precision keys here, and only here)."""
    pk, pv = prefix.k, prefix.v
    B, H_kv, _, d = k.shape
    if pk.shape != pv.shape or pk.dim() != 4 or pk.shape[0] != B or pk.shape[1] != H_kv or pk.shape[3] != d:
        raise InputError(
            f"{what} shape mismatch: prefix K {list(pk.shape)} / V {list(pv.shape)} must be "
            f"[B={B}, H_kv={H_kv}, P, d={d}] to extend keys {list(k.shape)}")
    if pk.dtype != k.dtype and torch.is_autocast_enabled(k.device.type):
        pk, pv = pk.to(k.dtype), pv.to(k.dtype)  # autocast: fp32 prompts meet half-precision keys
    if pk.dtype != k.dtype or pk.device != k.device:
        raise InputError(
            f"{what} is {pk.dtype} on {pk.device} but the layer's keys are {k.dtype} on {k.device}; "
            f"move the prompt with .to(...) rather than relying on silent casts")
    return pk, pv


def concat_prefix(k: torch.Tensor, v: torch.Tensor, prefix) -> tuple[torch.Tensor, torch.Tensor]:
    """Joined prefix concatenation (P-Tuning v2, prefix tuning, and the KV cache).

    k, v: [B, H_kv, N, d]; prefix: Prefix(K_p, V_p) (or a (K_p, V_p) pair), each [B, H_kv, P, d]
    ->  [B, H_kv, P+N, d] each.
    """
    prefix = as_prefix(prefix)
    if prefix is None:
        return k, v
    if prefix.gated:
        raise InputError("a gated prefix is read under its own softmax (read_gated), never joined to the keys")
    pk, pv = _fit(prefix, k, "prefix")
    k = torch.cat([pk, k], dim=2)  # [B, H_kv, P+N, d]
    v = torch.cat([pv, v], dim=2)  # [B, H_kv, P+N, d]
    return k, v


def read_gated(q: torch.Tensor, gated: Prefix, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the queries q [B, H, N, d] read from a gated prefix (K_p, V_p [B, H_kv, P, d], gate g):

        w = g * softmax(q K_p^T / sqrt(d))   [B, H, N, P]   a softmax over the P prefix keys alone
        read = w V_p                         [B, H, N, d]

    Returns (read, w). The tokens' own softmax never sees these keys, so nothing is taken from
    them: at g = 0 the read is exactly zero. `like` is the layer's own keys (dtype, device, shape
    check). The same formula on both attention paths: P is small, and no dropout (as in PEFT).
    """
    pk, pv = _fit(gated, like, "gated prefix")
    groups = q.shape[1] // pk.shape[1]  # query heads per K/V head
    pk, pv = repeat_kv(pk, groups), repeat_kv(pv, groups)  # [B, H, P, d] each
    acc = torch.promote_types(q.dtype, torch.float32)
    scores = (q @ pk.transpose(-2, -1)).to(acc) / math.sqrt(q.shape[-1])  # [B, H, N, P]
    keep = None
    if gated.keep is not None:
        keep = gated.keep.to(q.device).bool()  # [P] or [B, P]
        keep = keep[None, None, None, :] if keep.dim() == 1 else keep[:, None, None, :]  # [B or 1, 1, 1, P]
        scores = scores.masked_fill(~keep, torch.finfo(acc).min)
    probs = torch.softmax(scores, dim=-1)  # [B, H, N, P]: sums to 1 over the prefix alone
    if keep is not None:
        probs = probs * keep  # a fully masked prefix softmaxes to uniform: made exactly zero here
    w = (gated.gate.to(acc) * probs).to(q.dtype)  # [B, H, N, P]
    return w @ pv, w  # [B, H, N, d], [B, H, N, P]


def repeat_kv(t: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, H_kv, Nk, d] -> [B, H, Nk, d], H = H_kv * groups: K/V head j serves query heads
    j*groups .. (j+1)*groups - 1 (transformers' `repeat_kv` layout). A no-op when H_kv = H."""
    if groups == 1:
        return t
    return t.repeat_interleave(groups, dim=1)  # [B, H, Nk, d]


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


class AttentionOutput(NamedTuple):
    out: torch.Tensor  # [B, N, D]
    probs: torch.Tensor | None  # [B, H, N, P+N] when need_weights, else None
    present: Prefix | None  # Prefix(K, V) [B, H_kv, P+N, d] each (joined keys only) with use_cache, else None


class MultiHeadAttention(nn.Module):
    """Project Q/K/V, split heads, (rotate Q and K), (extend K/V with a prefix), score, mask,
    softmax, weigh, merge.

    Q, K and V come from one matrix product: `qkv.weight` [D, (H + 2 H_kv) d] is W_Q, W_K and W_V
    side by side (as in GPT-2's `c_attn`), so x [B, N, D] is read once and BLAS gets one wide
    product instead of three narrow ones. With H_kv = H and d = D/H, `qkv.weight[:, D:2D]` is W_K.

    Two paths compute the same function: an explicit one that can return the attention
    probabilities, and PyTorch's fused `scaled_dot_product_attention`, used whenever the
    probabilities are not asked for.
    """

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int | None = None,
                 head_dim: int | None = None, qkv_bias: bool = True, output_bias: bool = True,
                 dropout: float = 0.0, scope: str = "attn"):
        super().__init__()
        H, H_kv = num_heads, num_kv_heads or num_heads
        if head_dim is None:
            if hidden_size % H != 0:
                raise InputError(f"num_heads={H} does not divide hidden_size={hidden_size}")
            head_dim = hidden_size // H
        if H % H_kv != 0:
            raise InputError(f"num_kv_heads={H_kv} must divide num_heads={H}")
        self.num_heads, self.num_kv_heads, self.head_dim = H, H_kv, head_dim  # H, H_kv, d
        self.qkv = Linear(hidden_size, (H + 2 * H_kv) * head_dim, qkv_bias)  # x -> [Q | K | V]
        self.output = Linear(H * head_dim, hidden_size, output_bias)
        self.dropout = dropout
        self.scope = scope  # trace name, e.g. "layer3.attn"

    def project(self, x: torch.Tensor, positions: torch.Tensor | None = None, rotary=None):
        """x [B, N, D] -> Q [B, H, N, d], K and V [B, H_kv, N, d], from one product with
        [W_Q | W_K | W_V]; `rotary(t, positions)` then turns Q and K to their rows' positions."""
        H, H_kv, d = self.num_heads, self.num_kv_heads, self.head_dim
        heads = rearrange(self.qkv(x), "b n (h d) -> b h n d", d=d)  # [B, H + 2 H_kv, N, d]: every head at once
        q, k, v = heads.split([H, H_kv, H_kv], dim=1)  # [B, H, N, d], [B, H_kv, N, d] x 2
        if rotary is not None:
            q, k = rotary(q, positions), rotary(k, positions)  # the same shapes, turned by position
        return q, k, v

    def forward(self, x: torch.Tensor, *, keep: torch.Tensor | None = None, prefix: Prefix | None = None,
                gated: Prefix | None = None, positions: torch.Tensor | None = None, rotary=None,
                need_weights: bool = False, use_cache: bool = False) -> AttentionOutput:
        """x [B, N, D]; keep: boolean [B, 1, N or 1, P+N] (True = may attend) or None for "all";
        prefix: a joined Prefix(K, V) (or a (K, V) pair), each [B, H_kv, P, d], or None;
        gated: a gated Prefix(K, V, gate), read apart and added (core/prefix.py), or None;
        positions [B or 1, N] for `rotary`.

        With need_weights, probs holds the weight each value gets: [B, H, N, P+N] over the joined
        prefix (or cache) and the tokens, a softmax summing to 1; a gated prefix puts its P
        weights g * softmax(..) in front ([B, H, N, P_g+P+N]), so a row then sums to 1 + g.

        The K/V, what a KV cache keeps for the next decoding step, are returned only with
        use_cache=True: the joined keys, never a gated prefix's (a cache keeps those apart).
        Otherwise nothing here keeps them (or the projection they are views of) alive: without
        autograd they are freed on return.
        """
        s = self.scope
        prefix = as_prefix(prefix)
        q, k, v = self.project(x, positions, rotary)  # [B, H, N, d], [B, H_kv, N, d] x 2
        record(s, "q", q)
        record(s, "k", k)
        record(s, "v", v)
        read = None
        if gated is not None:  # LLaMA-Adapter: its own softmax over its P keys, scaled by the gate
            record(s, "gated_k", gated.k)  # [B, H_kv, P, d]
            record(s, "gated_v", gated.v)  # [B, H_kv, P, d]
            read, w = read_gated(q, gated, k)  # [B, H, N, d], [B, H, N, P]
            record(s, "gated_probs", w)  # [B, H, N, P]: g * softmax over the P prefix keys alone
            record(s, "gated_read", read)  # [B, H, N, d]
        if prefix is not None:
            record(s, "prefix_k", prefix.k)  # [B, H_kv, P, d]
            record(s, "prefix_v", prefix.v)  # [B, H_kv, P, d]
        k, v = concat_prefix(k, v, prefix)  # [B, H_kv, P+N, d] each
        if prefix is not None:
            record(s, "k_with_prefix", k)
            record(s, "v_with_prefix", v)
        if keep is not None and (keep.shape[-1] != k.shape[2] or keep.shape[-2] not in (1, q.shape[2])):
            raise InputError(f"attention mask shape mismatch: mask {list(keep.shape)} but {q.shape[2]} query "
                             f"rows and {k.shape[2]} key rows")
        # A cache gets K/V with storage of their own, not views that would keep Q's columns alive.
        present = Prefix(k.contiguous(), v.contiguous()) if use_cache else None  # [B, H_kv, P+N, d] each
        groups = self.num_heads // self.num_kv_heads  # query heads per K/V head (1 unless grouped)
        p_drop = self.dropout if self.training else 0.0
        if need_weights:
            if groups > 1:  # grouped-query attention: each K/V head serves `groups` query heads
                k, v = record(s, "k_repeated", repeat_kv(k, groups)), record(s, "v_repeated", repeat_kv(v, groups))
                # [B, H, P+N, d] each, from [B, H_kv, P+N, d]
            ctx, probs = self._explicit(q, k, v, keep, p_drop)
            if read is not None:
                probs = torch.cat([w, probs], dim=-1)  # [B, H, N, P_g+P+N]: the gated weights in front
        else:  # the fused kernel pairs query heads with their K/V head itself, without copies
            mask = additive_mask(keep, q.dtype)  # [B, 1, N, P+N]
            gqa = {"enable_gqa": True} if groups > 1 else {}  # (torch >= 2.5)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop, **gqa)  # [B, H, N, d]
            probs = None
        if read is not None and gated.join == "context":
            ctx = ctx + read  # [B, H, N, d]: the gated read joins before W_O (the paper, PEFT's LLaMA)
        record(s, "context", ctx)  # [B, H, N, d]
        out = self.output(rearrange(ctx, "b h n d -> b n (h d)"))  # [B, N, D]
        if read is not None and gated.join == "output":
            if read.shape[1] * read.shape[3] != out.shape[-1]:
                raise InputError(f"a gated prefix joined at the output adds H*d = {read.shape[1] * read.shape[3]} "
                                 f"features to an output of D = {out.shape[-1]}: join='output' needs H*d = D")
            out = out + rearrange(read, "b h n d -> b n (h d)")  # [B, N, D]: after W_O, unprojected (PEFT's GPT-2)
        return AttentionOutput(record(s, "out", out), probs, present)

    def _explicit(self, q, k, v, keep, p_drop):
        """The textbook formula, step by step: softmax(Q K^T / sqrt(d) + mask) V.

        Scores and mask are added in at least float32 whatever the input dtype: in fp16 a score
        below about -16 plus the mask constant would overflow to -inf, and a fully masked row of
        -inf softmaxes to NaN, which the next layer spreads into real tokens. (float64 stays float64.)
        """
        acc = torch.promote_types(q.dtype, torch.float32)
        scores = (q @ k.transpose(-2, -1)).to(acc) / math.sqrt(self.head_dim)  # [B, H, N, P+N]
        if keep is not None:
            scores = scores + additive_mask(keep, acc)  # [B, H, N, P+N]
        record(self.scope, "scores", scores)
        probs = torch.softmax(scores, dim=-1).to(q.dtype)  # [B, H, N, P+N]
        record(self.scope, "probs", probs)
        ctx = F.dropout(probs, p_drop, training=p_drop > 0) @ v  # [B, H, N, d]
        return ctx, probs
