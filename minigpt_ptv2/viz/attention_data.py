"""Attention on prompt positions, as plain tensors: the numbers behind every attention figure.

No plotting here (see `plots.py`), so the data can be checked by tests and printed by lessons.

With a K/V prefix, each layer's probabilities are [B, H, N, P+N]: N real queries over P prefix
keys followed by N real keys. With hidden-state prompts (deep) or a shallow prompt, the prompt
rows are ordinary rows of the sequence, so the layer returns [B, H, P+N, P+N]; the rows that
matter for the real tokens are the last N. In both cases the first P key columns are the
prompt, and

    prefix mass = sum over those P columns = how much of a real token's attention the prompt gets

which is a number in [0, 1] per (layer, head, token). `prefix_mass` averages it over real
tokens into one [L, H] table. A gated prefix (prompts/gated.py) is read under its own softmax:
its P columns hold g * softmax(..), so its mass is the layer's gate g (0 at the start, and free
to leave [0, 1]), added on top of the tokens' own 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError, InputTypeError
from ..core.prompt_rows import keys_in_front


@dataclass
class AttentionMaps:
    """Every layer's attention probabilities for one batch, with what is needed to read them.

    probs:      [L, B, H, Nq, Nk]  Nq = N (K/V prefix, no prompt) or P+N (deep / shallow prompt)
    query_mask: [B, N]   True for real tokens, False for padding (the N real query rows)
    key_mask:   [B, Nk]  True for keys a query may attend to (kept prompt entries, real tokens)
    P:          prompt / prefix entries at the front of the keys (0 without a prompt)
    kind:       "kv" (prefix), "gated" (gated prefix), "hidden" (deep prompt), "input" (shallow prompt) or "none"
    """
    probs: torch.Tensor
    query_mask: torch.Tensor
    key_mask: torch.Tensor
    P: int
    kind: str

    @property
    def real(self) -> torch.Tensor:
        """The real tokens' query rows only: [L, B, H, N, P+N] whatever the method."""
        N = self.query_mask.shape[1]
        return self.probs[..., -N:, :]  # prompt query rows (deep / shallow) dropped

    def mass(self) -> torch.Tensor:
        """[L, H]: mean attention mass real (non-padding) tokens put on the P prompt keys."""
        return prefix_mass(self.real, self.P, self.query_mask)

    def matrix(self, layer: int, row: int = 0, heads=None) -> torch.Tensor:
        """One sentence's attention in one layer, padding removed: [h, n, P+n] (n real tokens).

        Key columns are [p0 .. p{P-1} | the sentence's real tokens]; query rows its real tokens.
        Padding columns are dropped only when they are padding tokens, not masked prompt entries.
        """
        L, B = self.probs.shape[:2]
        if not -L <= layer < L or not 0 <= row < B:
            raise InputError(f"layer {layer} / row {row} out of range for L={L} layers, B={B} rows")
        q = self.query_mask[row]  # [N]
        keys = torch.cat([torch.ones(self.P, dtype=torch.bool, device=q.device), q])  # [P+N]
        m = self.real[layer, row][:, q][:, :, keys]  # [H, n, P+n]
        return m if heads is None else m[list(heads)]


def _batch_parts(batch):
    if isinstance(batch, torch.Tensor):
        return batch, None, None
    if not isinstance(batch, dict) or "input_ids" not in batch:
        raise InputTypeError("batch must be input_ids [B, N] or a dict with 'input_ids' "
                             f"(and optionally 'attention_mask', 'token_type_ids'), got {type(batch).__name__}")
    return batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids")


@torch.no_grad()
def attention_maps(model, batch) -> AttentionMaps:
    """Run `model` (any architecture, with or without an attached prompt) on `batch` with
    output_attentions=True and collect every layer's probabilities, [L, B, H, Nq, Nk]."""
    ids, mask, token_types = _batch_parts(batch)
    if mask is None:
        mask = torch.ones_like(ids)
    kw = {"attention_mask": mask, "output_attentions": True}
    if token_types is not None and model.takes_token_types:
        kw["token_type_ids"] = token_types
    out = model(ids, **kw)
    probs = torch.stack(list(out.attentions))  # [L, B, H, Nq, Nk]
    m = model.prompt
    P = m.num_virtual if m is not None else 0
    real = mask.bool()  # [B, N]
    key_mask = keys_in_front(real, m.virtual_keep) if P else real  # [B, P+N]
    N = ids.shape[1]
    if probs.shape[-1] != P + N:
        raise InputError(f"attention has {probs.shape[-1]} keys but P+N = {P}+{N}: "
                         f"was the model called with a KV cache?")
    return AttentionMaps(probs.float(), real, key_mask, P, m.kind if m is not None else "none")


def prefix_mass(probs, P: int, query_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean attention mass that real queries put on the first P keys, per layer and head.

    probs:      [L, B, H, N, P+N] (or a list of L tensors [B, H, N, P+N]): real query rows only
    query_mask: [B, N] True for the queries to average over (padding rows left out); None = all
    returns     [L, H], each entry in [0, 1] (a gated prefix's: its gate g)
    """
    if isinstance(probs, (list, tuple)):
        probs = torch.stack(list(probs))  # [L, B, H, N, P+N]
    if probs.dim() != 5:
        raise InputError(f"probs must be [L, B, H, N, P+N], got shape {list(probs.shape)}")
    L, B, H, N, K = probs.shape
    if not 0 <= P <= K - N:
        raise InputError(f"P={P} prefix keys do not fit probs {list(probs.shape)}: "
                         f"keys {K} must be P+N with N={N} query rows")
    on_prefix = probs[..., :P].sum(-1)  # [L, B, H, N]
    if query_mask is None:
        return on_prefix.mean(dim=(1, 3))  # [L, H]
    if query_mask.shape != (B, N):
        raise InputError(f"query_mask shape {list(query_mask.shape)} must be [B={B}, N={N}]")
    w = query_mask.to(on_prefix.dtype)[None, :, None, :]  # [1, B, 1, N]
    count = w.sum(dim=(1, 3))  # [1, 1]
    if float(count.min()) == 0:
        raise InputError("query_mask selects no query at all: nothing to average")
    return (on_prefix * w).sum(dim=(1, 3)) / count  # [L, H]


def token_mass(maps: AttentionMaps, row: int = 0) -> torch.Tensor:
    """[L, n]: for one sentence, the head-averaged prompt mass of each real token per layer."""
    q = maps.query_mask[row]  # [N]
    return maps.real[:, row][..., :maps.P].sum(-1).mean(1)[:, q]  # [L, H, N] -> [L, N] -> [L, n]


def key_labels(P: int, tokens) -> list[str]:
    """Column labels: p0 .. p{P-1} for the prompt, then the tokens."""
    return [f"p{i}" for i in range(P)] + list(tokens)
