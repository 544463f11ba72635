"""Checks by numbers of the steps the lessons teach, on what a lesson's run recorded (`Seen`).

A trace table proves the shapes. The bugs a learner makes while reading a lesson often keep
every shape and get the numbers wrong: a slice off the wrong end, K and V swapped, a prefix
behind the tokens instead of in front, query heads paired with the wrong K/V head. Each check
here recomputes one step from the tensors around it, written out independently of the package,
and fails with a message that names the step, what it found, what it expected, and the file
and function that do the step:

    layer0.slice keeps rows 0..N-1 of layer0.out, expected P..P+N-1 (core/stack.py: run_layers
    slices with core/prompt_rows.py: drop_front)

Data movement (a slice, a concatenation, a repeat) is compared exactly; a recomputed product to
FP32_KERNELS relative to the values' size (other kernels, another summation order), far below
what these bugs move the numbers by (9e-4 for the smallest, a LayerNorm eps; most by 1e-2 and more). `tests/mutations.py` plants the bugs one
at a time and shows that each is caught, by which check, with what message.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tolerances import FP32_KERNELS, PROB_SUM


def fail(message: str):
    pytest.fail(message, pytrace=False)


def gap(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest difference, relative to the larger of 1 and the largest |want|."""
    return float((got.double() - want.double()).abs().max()) / max(1.0, float(want.abs().max()))


def close(got, want, tol: float = FP32_KERNELS) -> bool:
    return got.shape == want.shape and gap(got, want) <= tol


def rows(a: int, b: int) -> str:
    return f"{a}..{b}" if b > a else f"{a}"


# --- attention by hand (one head at a time, no einops, nothing of the module but its weights) -----

def project(attn, x: torch.Tensor) -> tuple:
    """x [B, n, D] -> Q [B, H, n, d], K and V [B, H_kv, n, d], each head read off its d columns
    of [W_Q | W_K | W_V]: head h of Q is columns h*d..(h+1)*d, K head g starts at (H + g)*d."""
    H, H_kv, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
    y = x @ attn.qkv.weight  # [B, n, (H + 2 H_kv) d]
    if attn.qkv.bias is not None:
        y = y + attn.qkv.bias
    heads = lambda first, count: torch.stack([y[..., (first + h) * d:(first + h + 1) * d]  # noqa: E731
                                              for h in range(count)], dim=1)
    return heads(0, H), heads(H, H_kv), heads(H + H_kv, H_kv)


def attend(q, k, v, keep=None) -> tuple:
    """softmax(q k^T / sqrt(d), masked) v for q [B, H, Nq, d] and k, v [B, H, Nk, d] (K/V heads
    already widened); keep [B, 1, Nq or 1, Nk] bool or None. Returns (probs, context)."""
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [B, H, Nq, Nk]
    if keep is not None:
        s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s, dim=-1)  # [B, H, Nq, Nk]
    return p, p @ v  # [B, H, Nq, d]


def widen(t: torch.Tensor, H: int) -> torch.Tensor:
    """[B, H_kv, n, d] -> [B, H, n, d]: query head h reads K/V head h // (H / H_kv), transformers'
    pairing, written as an index."""
    g = H // t.shape[1]
    return t[:, [h // g for h in range(H)]]


def causal_keep(key_mask: torch.Tensor, P: int) -> torch.Tensor:
    """key_mask [B, P+N] -> keep [B, 1, N, P+N]: query i sees the P prefix (or cached) keys and
    tokens 0..i, and only keys the mask keeps."""
    B, Nk = key_mask.shape
    N = Nk - P
    seen_by = torch.zeros(N, Nk, dtype=torch.bool)
    for i in range(N):
        seen_by[i, :P + i + 1] = True
    return key_mask[:, None, None, :] & seen_by  # [B, 1, N, P+N]


# --- heads and the attention formula (lessons 01-03) ---------------------------------------------

def heads_split(seen, scope: str, batch: int = 2) -> None:
    """Q, K and V heads are the d-column blocks of one product x [W_Q | W_K | W_V], in (h d) order
    (the first call of the attention module `scope`, e.g. "layer0.attn"; `batch` rows of it)."""
    attn, x, _, _ = seen.calls(scope)[0]
    with torch.no_grad():
        want = project(attn, x[:batch])
    d = attn.head_dim
    for kind, w, first in zip("qkv", want, (0, attn.num_heads, attn.num_heads + attn.num_kv_heads)):
        got = seen(f"{scope}.{kind}")[:batch]
        for h in range(w.shape[1]):
            if not close(got[:, h], w[:, h]):
                fail(f"{scope}.{kind} head {h} is not columns {(first + h) * d}..{(first + h + 1) * d - 1} of "
                     f"x [W_Q | W_K | W_V] (gap {gap(got[:, h], w[:, h]):.3g}): heads must be split as (h d), "
                     f"each head d consecutive columns (core/attention.py: MultiHeadAttention.project)")


def heads_merged(seen, scope: str, batch: int = 2) -> None:
    """attn.out = [context of head 0 | head 1 | ...] W_O + b_O: heads merged back in (h d) order."""
    attn, _, _, out = seen.calls(scope)[0]
    ctx = seen(f"{scope}.context")[:batch]  # [b, H, N, d]
    with torch.no_grad():
        want = torch.cat([ctx[:, h] for h in range(ctx.shape[1])], dim=-1) @ attn.output.weight  # [b, N, D]
        if attn.output.bias is not None:
            want = want + attn.output.bias
    got = out.out[:batch]
    if not close(got, want):
        fail(f"{scope}.out is not [context head 0 | head 1 | ...] W_O (gap {gap(got, want):.3g}): heads "
             f"must be merged back in (h d) order (core/attention.py: MultiHeadAttention.forward)")


def scores_scaled(seen, scope: str, keep=None) -> None:
    """attn.scores = q k^T / sqrt(d) where a key is kept (keep [B, 1, Nq or 1, Nk], None: every
    key), and the dtype's most negative value where not."""
    q, k, s = seen(f"{scope}.q"), seen(f"{scope}.k"), seen(f"{scope}.scores")
    d = q.shape[-1]
    raw = q @ k.transpose(-1, -2)  # [B, H, Nq, Nk]
    kept = torch.ones_like(s, dtype=torch.bool) if keep is None else keep.expand_as(s)
    if not close(s[kept], raw[kept] / math.sqrt(d)):
        ratio = float((raw[kept].abs().sum() / s[kept].abs().sum()))
        fail(f"{scope}.scores are not q k^T / sqrt(d) = q k^T / {math.sqrt(d):g}: they are q k^T / {ratio:.3g} "
             f"(core/attention.py: MultiHeadAttention._explicit)")
    if not bool((s[~kept] < torch.finfo(s.dtype).min / 2).all()):
        fail(f"{scope}.scores of masked keys are not the dtype's most negative value "
             f"(core/attention.py: additive_mask)")


def probs_softmax_over_keys(seen, scope: str) -> None:
    """attn.probs = softmax(scores) over the keys (the last axis): every query row sums to 1."""
    s, p = seen(f"{scope}.scores"), seen(f"{scope}.probs")
    sums = p.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=PROB_SUM[p.dtype], rtol=0):
        fail(f"{scope}.probs rows sum to {float(sums.min()):.3g}..{float(sums.max()):.3g} over the keys, expected 1: "
             f"softmax must run over the keys, the last axis (core/attention.py: MultiHeadAttention._explicit)")
    want = torch.softmax(s, dim=-1)
    if not close(p, want):
        fail(f"{scope}.probs are not softmax(scores) over the keys (gap {gap(p, want):.3g}) "
             f"(core/attention.py: MultiHeadAttention._explicit)")


def context_is_probs_times_v(seen, scope: str, value: str = "v") -> None:
    p, v, ctx = seen(f"{scope}.probs"), seen(f"{scope}.{value}"), seen(f"{scope}.context")
    want = p @ v
    if not close(ctx, want):
        fail(f"{scope}.context is not probs @ v (gap {gap(ctx, want):.3g}) "
             f"(core/attention.py: MultiHeadAttention._explicit)")


def fused_equals_formula(seen, scope: str) -> None:
    """The fused path's context = softmax(q k^T / sqrt(d)) v, from the recorded q, k, v."""
    _, want = attend(seen(f"{scope}.q"), seen(f"{scope}.k"), seen(f"{scope}.v"))
    got = seen(f"{scope}.context")
    if not close(got, want):
        fail(f"{scope}.context (fused path) is not softmax(q k^T / sqrt(d)) v (gap {gap(got, want):.3g}) "
             f"(core/attention.py: MultiHeadAttention.forward)")


def pads_get_nothing(seen, key_mask: torch.Tensor, layers: int, P: int = 0) -> None:
    """Every layer: a padding key gets probability exactly 0 from every query, head and row."""
    pad = ~key_mask.bool()  # [B, N]
    if not bool(pad.any()):
        fail("the run has no padding: nothing to check (the lesson's trace pads its last row)")
    for i in range(layers):
        p = seen(f"layer{i}.attn.probs")  # [B, H, Nq, P+N]
        on_pads = p[..., P:][pad[:, None, None, :].expand_as(p[..., P:])]  # every query, head, pad key
        if float(on_pads.abs().max()) != 0.0:
            fail(f"layer{i}.attn.probs give the padding keys up to {float(on_pads.max()):.3g}, expected exactly 0: "
                 f"the keep-mask turns into the dtype's minimum where a key is dropped, 0 where kept "
                 f"(core/attention.py: additive_mask; core/masks.py: build_keep)")


def bert_embeddings(seen, model, ids, positions) -> None:
    """BERT's embeddings: LayerNorm(word + token type 0 + position, eps from the config)."""
    e, eps = model.embeddings, model.config.layer_norm_eps
    with torch.no_grad():
        x = e.word_embeddings.weight[ids] + e.token_type_embeddings.weight[0] + e.position_embeddings.weight[positions]
        want = F.layer_norm(x, x.shape[-1:], e.LayerNorm.weight, e.LayerNorm.bias, eps)  # [B, N, D]
    got = seen("embeddings.out")
    if not close(got, want):
        pos = positions.flatten().tolist()
        fail(f"embeddings.out is not LayerNorm(word + token type 0 + position, eps={eps:g}) at positions "
             f"{pos[0]}..{pos[-1]} (gap {gap(got, want):.3g}): pitfall 8, token-type row 0 is always added, "
             f"and BERT's eps is 1e-12 (models/bert.py: BertEmbeddings.tokens, BertEmbeddings.__init__)")


def bert_prompt_rows(seen, model, P: int) -> None:
    """A shallow prompt's rows in BERT: LayerNorm(prompt + token type 0), no position (policy "real")."""
    e, eps = model.embeddings, model.config.layer_norm_eps
    with torch.no_grad():
        x = seen("shallow.prompt") + e.token_type_embeddings.weight[0]
        want = F.layer_norm(x, x.shape[-1:], e.LayerNorm.weight, e.LayerNorm.bias, eps)  # [B, P, D]
    got = seen("embeddings.out")[:, :P]
    if not close(got, want):
        fail(f"embeddings.out rows 0..{P - 1} are not LayerNorm(shallow.prompt + token type 0): a shallow prompt "
             f"lives in word-embedding space and joins the tokens before the embedding LayerNorm "
             f"(gap {gap(got, want):.3g}) (models/bert.py: BertEncoder.shallow_rows)")


def bert_positions(seen, model, ids, first: int, what: str, call: int = 0) -> None:
    """The real tokens' rows of embeddings.out sit at positions first..first+N-1: which offset they
    were given is read back by trying every one against LayerNorm(word + type 0 + position)."""
    e, eps, N = model.embeddings, model.config.layer_norm_eps, ids.shape[1]
    got = seen("embeddings.out", call)[:, -N:]

    def at(o):
        x = e.word_embeddings.weight[ids] + e.token_type_embeddings.weight[0] + e.position_embeddings.weight[o:o + N]
        return F.layer_norm(x, x.shape[-1:], e.LayerNorm.weight, e.LayerNorm.bias, eps)  # [B, N, D]
    with torch.no_grad():
        if close(got, at(first)):
            return
        found = next((o for o in range(model.config.max_position_embeddings - N + 1) if close(got, at(o))), None)
    fail(f"under {what} the real tokens sit at positions "
         f"{'?' if found is None else rows(found, found + N - 1)}, expected {rows(first, first + N - 1)} "
         f"(core/prompt_method.py: PromptMethod.position_offset; core/transformer.py: Transformer._real_positions)")


# --- hidden-state prompts: inject, process, slice (lessons 06, 07, 15) ---------------------------

def slice_keeps_real_rows(seen, before: str, after: str, P: int, where: str, calls=(0, 0)) -> None:
    """`after` = rows P..P+N-1 of `before`: the prompt rows are thrown away, the real rows kept.
    calls: which recording of `before` and of `after` (a lesson that runs several methods)."""
    out, kept = seen(before, calls[0]), seen(after, calls[1])
    N = kept.shape[1]
    if torch.equal(kept, out[:, P:]):
        return
    found = next((f"rows {rows(a, a + N - 1)}" for a in range(out.shape[1] - N + 1)
                  if torch.equal(kept, out[:, a:a + N])), "rows that are none of its")
    fail(f"{after} keeps {found} of {before}, expected {rows(P, P + N - 1)} (the real rows; "
         f"P={P} prompt rows in front are thrown away) ({where} slices with core/prompt_rows.py: drop_front)")


def inject_in_front(seen, layer: int, before: str, P: int, call: int = 0) -> None:
    """layer{i}.inject = [this layer's prompt rows | the hidden rows it received]."""
    name = f"layer{layer}.inject"
    x, prompt, h = seen(name, call), seen(f"layer{layer}.prompt", call), seen(before, call)
    if torch.equal(x[:, :P], prompt) and torch.equal(x[:, P:], h):
        return
    if torch.equal(x[:, -P:], prompt):
        fail(f"{name} has the prompt rows at {rows(x.shape[1] - P, x.shape[1] - 1)}, after the tokens, expected "
             f"in front at {rows(0, P - 1)} (core/stack.py: run_layers injects with core/prompt_rows.py: in_front)")
    fail(f"{name} is not [layer{layer}.prompt | {before}] (core/stack.py: run_layers injects with "
         f"core/prompt_rows.py: in_front)")


def pooler_reads_cls(seen, model, last: str, row: int) -> None:
    """final.pooler = tanh(W h + b) of the real [CLS]: row `row` of the last layer's output."""
    h = seen(last)[:, row]  # [B, D]
    with torch.no_grad():
        want = torch.tanh(model.pooler(h))
    got = seen("final.pooler")
    if not close(got, want):
        fail(f"final.pooler is not read from the real [CLS] (row {row} of {last}, row 0 after the prompt rows are "
             f"sliced off) (gap {gap(got, want):.3g}) (models/bert.py: BertEncoder.forward pools what "
             f"core/transformer.py: Transformer.run returns)")


# --- K/V prefixes (lessons 08-13, 15) -------------------------------------------------------------

def prefix_table_layout(seen, H_kv: int) -> None:
    """prefix.kv[l, t, h, p] = prefix.table[p, ((l*2 + t)*H_kv + h)*d : +d]: PEFT's (layer, K-or-V,
    head, d) order, each head d consecutive numbers."""
    table, kv = seen("prefix.table"), seen("prefix.kv")
    L, _, _, P, d = kv.shape
    for l in range(L):
        for t in range(2):
            for h in range(H_kv):
                start = ((l * 2 + t) * H_kv + h) * d
                if not torch.equal(kv[l, t, h], table[:, start:start + d]):
                    fail(f"prefix.kv[{l}, {'KV'[t]}, head {h}] is not columns {start}..{start + d - 1} of "
                         f"prefix.table: the table's L*2*D axis reads as (layer, K or V, head, d), each head d "
                         f"consecutive numbers (prompts/prefix.py: KVPrefix.layer_kv)")


def prefix_handed_to_layers(seen, layer: int = 0) -> None:
    """layer{i}.attn.prefix_k / prefix_v = prefix.kv[i, K] / [i, V], the same for every batch row."""
    kv = seen("prefix.kv")
    for t, kind in enumerate("kv"):
        got = seen(f"layer{layer}.attn.prefix_{kind}")
        if not torch.equal(got, kv[layer, t].expand_as(got)):
            fail(f"layer{layer}.attn.prefix_{kind} is not prefix.kv[{layer}, {'KV'[t]}] "
                 f"(prompts/prefix.py: KVPrefix.kv_prefix)")


def prefix_in_front(seen, scope: str, call: int = 0) -> None:
    """k_with_prefix = [prefix_k | k] along the keys, v_with_prefix = [prefix_v | v]."""
    pk, pv = seen(f"{scope}.prefix_k", call), seen(f"{scope}.prefix_v", call)
    P = pk.shape[2]
    where = "(core/attention.py: concat_prefix)"
    for kind, own_p, other_p in (("k", pk, pv), ("v", pv, pk)):
        got, own = seen(f"{scope}.{kind}_with_prefix", call), seen(f"{scope}.{kind}", call)
        if torch.equal(got[:, :, :P], own_p) and torch.equal(got[:, :, P:], own):
            continue
        if torch.equal(got[:, :, :P], other_p):
            fail(f"{scope}.{kind}_with_prefix starts with the prefix's {'values' if kind == 'k' else 'keys'}, "
                 f"expected its {'keys' if kind == 'k' else 'values'}: K and V swapped {where}")
        if torch.equal(got[:, :, -P:], own_p):
            n = got.shape[2]
            fail(f"{scope}.{kind}_with_prefix has the P={P} prefix entries at {rows(n - P, n - 1)}, after the "
                 f"tokens' own, expected in front at {rows(0, P - 1)}: the keep-mask and the causal mask expect "
                 f"the prefix first {where}")
        fail(f"{scope}.{kind}_with_prefix is not [prefix_{kind} | {kind}] {where}")


def prefix_read(seen, scope: str, keep=None, call: int = 0, where: str = "") -> None:
    """The context the queries read: softmax(q [prefix_k | k]^T / sqrt(d), masked) [prefix_v | v],
    built here from the prefix's K and V and the layer's own, with the mask the lesson describes
    (keep [B, 1, N or 1, P+N], or None: every key)."""
    q, k, v = seen(f"{scope}.q", call), seen(f"{scope}.k", call), seen(f"{scope}.v", call)
    pk, pv = seen(f"{scope}.prefix_k", call), seen(f"{scope}.prefix_v", call)
    H = q.shape[1]
    _, want = attend(q, widen(torch.cat([pk, k], 2), H), widen(torch.cat([pv, v], 2), H), keep)
    got = seen(f"{scope}.context", call)
    if not close(got, want):
        fail(f"{scope}.context is not softmax(q [prefix_k | k]^T / sqrt(d)) [prefix_v | v] with the expected mask "
             f"(gap {gap(got, want):.3g}) ({where or 'core/attention.py: MultiHeadAttention.forward'})")


def prefix_attended(seen, scope: str, keep=None) -> None:
    """Explicit path: every query gives each of the P prefix columns of attn.probs some attention,
    exactly what softmax(q [prefix_k | k]^T / sqrt(d), masked) gives it, from the prefix's own keys."""
    probs = seen(f"{scope}.probs")  # [B, H, N, P+N]
    q, k, v = seen(f"{scope}.q"), seen(f"{scope}.k"), seen(f"{scope}.v")
    pk, pv = seen(f"{scope}.prefix_k"), seen(f"{scope}.prefix_v")
    H, P = q.shape[1], pk.shape[2]
    on_prefix = probs[..., :P]
    if not bool((on_prefix > 0).all()):
        fail(f"{scope}.probs give {int((on_prefix == 0).sum())} of {on_prefix.numel()} prefix entries exactly 0, "
             f"expected every prefix column attended: the P virtual entries of the key mask must be kept, "
             f"True = may attend (core/prompt_rows.py: keys_in_front)")
    want, _ = attend(q, widen(torch.cat([pk, k], 2), H), widen(torch.cat([pv, v], 2), H), keep)
    if not close(on_prefix, want[..., :P]):
        fail(f"{scope}.probs on the P prefix columns are not softmax(q [prefix_k | k]^T / sqrt(d)) there "
             f"(gap {gap(on_prefix, want[..., :P]):.3g}) (core/attention.py: concat_prefix, "
             f"MultiHeadAttention._explicit)")


def key_mask_prefix_first(seen, attention_mask: torch.Tensor, P: int, call: int = 0) -> None:
    """mask.keys = [P kept virtual entries | the batch's attention mask]."""
    got = seen("mask.keys", call)
    m = attention_mask.bool()
    want = torch.cat([torch.ones(m.shape[0], P, dtype=torch.bool), m], dim=1)  # [B, P+N]
    if torch.equal(got, want):
        return
    if torch.equal(got, torch.cat([m, torch.ones_like(want[:, :P])], dim=1)):
        fail(f"mask.keys has the P={P} virtual entries after the tokens' entries, expected in front: the "
             f"padding then masks the wrong columns (core/prompt_rows.py: keys_in_front)")
    if not bool(got[:, :P].any()):
        fail(f"mask.keys drops all P={P} virtual entries, expected them kept: True means 'may attend' "
             f"(core/prompt_rows.py: keys_in_front)")
    fail(f"mask.keys is not [P={P} ones | attention_mask] (core/prompt_rows.py: keys_in_front)")


def keep_is(seen, want: torch.Tensor, what: str, where: str, call: int = 0) -> None:
    """mask.keep equals `want` [B, 1, Nq, Nk], built in the test from what the lesson says."""
    got = seen("mask.keep", call)
    if got.shape != want.shape:
        fail(f"mask.keep is {list(got.shape)}, expected {list(want.shape)}: {what} ({where})")
    if torch.equal(got, want):
        return
    b, _, q, k = (got != want).nonzero()[0].tolist()
    verb = "lets" if bool(got[b, 0, q, k]) else "stops"
    fail(f"mask.keep {verb} query {q} of row {b} {'see' if verb == 'lets' else 'seeing'} key {k}, expected {what} "
         f"({where})")


# --- the KV cache (lessons 05, 12, 14) ------------------------------------------------------------

def cache_holds_keys(seen, scope: str, prompt_key: str, cached_call: int) -> None:
    """The cached step's prefix_k / prefix_v are the keys and values of the prompt step, unchanged.
    prompt_key: "k" without a K/V prefix, "k_with_prefix" with one; cached_call: which recording
    of prefix_k is the cached step's (1 when the prompt step had a prefix of its own, else 0)."""
    for kind in "kv":
        made = seen(f"{scope}.{prompt_key.replace('k', kind, 1)}", 0)
        cached = seen(f"{scope}.prefix_{kind}", cached_call)
        if not torch.equal(cached, made):
            fail(f"the cached step's {scope}.prefix_{kind} is not the prompt step's {scope}."
                 f"{prompt_key.replace('k', kind, 1)} (core/attention.py: MultiHeadAttention.forward returns "
                 f"them as `present`)")


def gpt2_positions(model, rows_out: torch.Tensor, content: torch.Tensor) -> list:
    """GPT-2 embeds a row as content + wpe[position] (dropout off): read back each row's position
    (batch row 0), None where no position fits."""
    found = []
    with torch.no_grad():
        for j in range(rows_out.shape[1]):
            hit = [p for p in range(model.config.max_position_embeddings)
                   if close(rows_out[0, j], content[0, j] + model.wpe.weight[p])]
            found.append(hit[0] if len(hit) == 1 else None)
    return found


def cached_position(seen, model, want: int) -> None:
    """The cached step's one token sits at position `want` (the run's second forward pass)."""
    ids = seen.runs[1][1]  # [B, 1]: the token fed to the cached step
    got = gpt2_positions(model, seen("embeddings.out", 1), model.wte.weight[ids])
    if got != [want]:
        fail(f"the cached step's token sits at position {got[0] if got[0] is not None else '?'}, expected {want} "
             f"(core/causal_lm.py: CausalLM.forward sets the cache's next_position; core/transformer.py: "
             f"Transformer._real_positions reads it)")


def cached_step_equals_recomputation(seen) -> None:
    """The cached step's logits = the last row of one forward pass over all N+1 tokens."""
    model, ids, _, _ = seen.runs[0]
    nxt = seen.runs[1][1]
    got = seen("final.logits", 1)[:, -1]  # [B, V]
    with torch.no_grad():
        want = model(torch.cat([ids, nxt], dim=1)).logits[:, -1]  # [B, V]
    if not close(got, want):
        fail(f"the cached step's logits differ from recomputing all N+1 tokens without a cache by "
             f"{gap(got, want):.3g} (core/causal_lm.py: CausalLM.forward builds the cache; core/transformer.py: "
             f"Transformer._real_positions places the new token)")


# --- rotary positions and grouped K/V heads (lesson 15) -------------------------------------------

def rope(t: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE in the rotate-half convention, written out: feature j pairs with j + d/2, and the pair
    turns by position * theta^(-2j/d): (a, b) -> (a cos - b sin, b cos + a sin)."""
    d = t.shape[-1]
    inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # [d/2]
    ang = positions.double()[:, None, :, None] * inv  # [B or 1, 1, n, d/2]
    a, b = t[..., :d // 2].double(), t[..., d // 2:].double()
    return torch.cat([a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()], dim=-1).to(t.dtype)


def rotary_positions(seen, layer: int, want: list, what: str, call: int = 0) -> None:
    """The rows' positions are `want`, and Q and K are RoPE of the projection at those positions."""
    attn, x, kw, _ = seen.calls(f"layer{layer}.attn")[call]
    got_pos = kw["positions"].flatten().tolist() if kw.get("positions") is not None else None
    if got_pos != want:
        fail(f"layer{layer}'s rows sit at positions {got_pos}, expected {what} {want} "
             f"(core/transformer.py: Transformer.prompt_positions, Transformer._real_positions)")
    theta = kw["rotary"].theta
    with torch.no_grad():
        q, k, _ = project(attn, x)
        pos = torch.tensor(want)[None]
        for kind, t in (("q", q), ("k", k)):
            got, expect = seen(f"layer{layer}.attn.{kind}", call), rope(t, pos, theta)
            if not close(got, expect):
                fail(f"layer{layer}.attn.{kind} is not its projection turned by RoPE (pair j = features j and "
                     f"j + d/2, (a, b) -> (a cos - b sin, b cos + a sin)) (gap {gap(got, expect):.3g}) "
                     f"(core/rotary.py: rotate_half, Rotary.forward)")


def kv_heads_paired(seen, scope: str, source: str, call: int = 0) -> None:
    """k_repeated[:, h] = K/V head h // (H / H_kv), transformers' pairing; the same for V."""
    for kind in "kv":
        wide, narrow = seen(f"{scope}.{kind}_repeated", call), seen(f"{scope}.{source.replace('k', kind, 1)}", call)
        H, H_kv = wide.shape[1], narrow.shape[1]
        g = H // H_kv
        for h in range(H):
            if not torch.equal(wide[:, h], narrow[:, h // g]):
                other = next((j for j in range(H_kv) if torch.equal(wide[:, h], narrow[:, j])), None)
                fail(f"{scope}.{kind}_repeated head {h} is K/V head {other}, expected {h // g} = h // (H/H_kv): "
                     f"each K/V head serves {g} neighbouring query heads, as in transformers (repeat_interleave, "
                     f"not repeat) (core/attention.py: repeat_kv)")


# --- the bridge (lesson 09) -----------------------------------------------------------------------

def bridge_matches(seen, P: int) -> None:
    """Run 0 is a deep prompt, run 1 the K/V prefix the bridge made of it: the prefix's keys and
    values are the prompt rows' own (post-LN BERT: h W_K + b_K, h as the layer receives it), the
    real rows' keys are the same in both runs, and so are the outputs."""
    where = "models/bert.py: BertLayer.kv_from_hidden, called by prompts/bridge.py: hidden_to_kv"
    for kind in "kv":
        made, rows_own = seen(f"layer0.attn.prefix_{kind}"), seen(f"layer0.attn.{kind}", 0)[:, :, :P]
        if not close(made, rows_own):
            fail(f"layer0.attn.prefix_{kind} of the bridged prefix is not the deep prompt rows' own "
                 f"layer0.attn.{kind} (rows 0..{P - 1}) (gap {gap(made, rows_own):.3g}) ({where})")
    got, want = seen("layer0.out", 1), seen("layer0.slice", 0)
    if not close(got, want):
        fail(f"layer0.out under the bridged prefix is not layer0.slice under the deep prompt "
             f"(gap {gap(got, want):.3g}) ({where}; the deep side: core/stack.py: run_layers)")


# --- lesson 16: what a prompt on a decoder is trained on -------------------------------------------
def next_token_loss(seen, labels: torch.Tensor, loss: torch.Tensor, what: str, call: int = 0) -> None:
    """The loss is cross-entropy of the recorded logits at 0..N-2 against the labels at 1..N-1
    (position t predicts token t+1), positions labelled -100 (padding) not scored."""
    logits = seen("final.logits", call)  # [B, N, V]
    scored = labels[:, 1:] != -100  # [B, N-1]
    want = F.cross_entropy(logits[:, :-1][scored].double(), labels[:, 1:][scored])
    if not close(loss.detach().reshape(1), want.reshape(1)):
        fail(f"{what}: the loss is {float(loss):.4f}, expected {float(want):.4f} = cross-entropy of logits[:, :-1] "
             f"against labels[:, 1:] (position t predicts token t+1), label -100 not scored "
             f"(core/causal_lm.py: CausalLM.forward)")
