"""Autoregressive generation with a KV cache (and any attached prompt method).

The first step runs the whole prompt (and the prompt method's virtual tokens or prefix) and
keeps every layer's K/V; each later step feeds one token per row and attends to the cache.
Left padding is handled the HuggingFace way: positions count real tokens only. Right padding is
refused: a new token is appended after the last column, so under right padding a short row would
continue from its pad tokens, not from its last real token.
"""
from __future__ import annotations

import torch

from ..errors import InputError, InputTypeError
from .checks import check_ids, check_mask


def _positions(mask: torch.Tensor, offset: int) -> torch.Tensor:
    """[B, N] padding mask -> positions counting real tokens only (pads get 0; they are masked)."""
    pos = mask.long().cumsum(-1) - 1  # [B, N]
    return pos.clamp(min=0) + offset


def _choose(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None, generator):
    """logits [B, V] -> next token [B]."""
    if not do_sample:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # [B, V]
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def check_left_padded(mask: torch.Tensor) -> torch.Tensor:
    """mask [B, N] bool: every row must be some pads, then only real tokens (at least one)."""
    empty = ~mask.any(dim=1)  # [B]
    if bool(empty.any()):
        row = int(empty.nonzero()[0])
        raise InputError(f"attention_mask row {row} has no real token: there is nothing to continue from")
    right = mask[:, :-1] & ~mask[:, 1:]  # [B, N-1]: a real token followed by a pad
    if bool(right.any()):
        row = int(right.any(dim=1).nonzero()[0])
        raise InputError(f"attention_mask row {row} has padding after a real token ({mask[row].int().tolist()}): "
                         f"generate() appends new tokens after the last column, so pad on the left "
                         f"(padding_side='left') to have every row end with its last real token")
    return mask


@torch.no_grad()
def generate(model, input_ids, max_new_tokens: int, attention_mask=None, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = None, eos_token_id: int | None = None,
             generator: torch.Generator | None = None, use_cache: bool = True) -> torch.Tensor:
    """Return prompt + new tokens, [B, N + max_new_tokens] (fewer if every row hit eos).

    use_cache=False recomputes the full sequence each step: slower, and the reference the cache
    is tested against.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise InputError(f"top_k must be a positive int or None, got {top_k}")
    V = model.config.vocab_size
    if eos_token_id is not None and (isinstance(eos_token_id, bool) or not isinstance(eos_token_id, int)
                                     or not 0 <= eos_token_id < V):
        raise InputError(f"eos_token_id must be a token id in [0, {V}) or None, got {eos_token_id!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputTypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    check_ids(input_ids, V)  # the same checks as forward, before the mask is read
    mask = check_left_padded(check_mask(attention_mask, input_ids)).long()  # [B, N]
    m = model.prompt
    offset = m.position_offset() if m is not None else 0
    ids = input_ids
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)  # [B]

    positions = _positions(mask, offset)  # [B, N]
    # The last new token is returned but never fed back, so the model sees max_new_tokens - 1 more positions.
    last = int(positions.max()) + max_new_tokens - 1
    limit = model.config.max_position_embeddings
    if max_new_tokens > 0 and last >= limit:  # refuse up front rather than failing halfway through
        raise InputError(f"generating {max_new_tokens} tokens would feed the model position {last} beyond the "
                         f"position table (0..{limit - 1})"
                         + (f"; the 'shifted' policy adds a shift of P={offset}" if offset else ""))
    out = model(ids, attention_mask=mask, position_ids=positions, use_cache=use_cache, logits_to_keep=1)
    for step in range(max_new_tokens):
        nxt = _choose(out.logits[:, -1], do_sample, temperature, top_k, generator)  # [B]
        if eos_token_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
            done = done | (nxt == eos_token_id)
        ids = torch.cat([ids, nxt[:, None]], dim=1)  # [B, N+step+1]
        mask = torch.cat([mask, torch.ones_like(nxt[:, None])], dim=1)  # [B, N+step+1]
        if step == max_new_tokens - 1 or (eos_token_id is not None and bool(done.all())):
            break
        if use_cache:
            out = model(nxt[:, None], past=out.cache, use_cache=True)  # one token per row
        else:
            out = model(ids, attention_mask=mask, position_ids=_positions(mask, offset), logits_to_keep=1)
    return ids
