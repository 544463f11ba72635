"""Autoregressive generation with a KV cache (and any attached prompt method).

The first step runs the whole prompt (and the prompt method's virtual tokens or prefix) and
keeps every layer's K/V; each later step feeds one token per row and attends to the cache.
Left padding is handled the HuggingFace way: positions count real tokens only. Right padding is
refused: a new token is appended after the last column, so under right padding a short row would
continue from its pad tokens, not from its last real token.

End of sequence, as transformers does it: by default the model's own eos ids (its config's,
DecoderConfig: config.json's, or generation_config.json's when there is one), any number of
them. A row stops at the first token that is any of them; a stopped row is filled with the pad
id (the config's; without one, the first eos id) while the others go on, and generation ends
when every row has stopped.
"""
from __future__ import annotations

import math

import torch

from ..errors import InputError, InputTypeError
from .checks import check_ids, check_mask


def _positions(mask: torch.Tensor, offset: int) -> torch.Tensor:
    """[B, N] padding mask -> positions counting real tokens only (pads get 0; they are masked)."""
    pos = mask.long().cumsum(-1) - 1  # [B, N]
    return pos.clamp(min=0) + offset


FROM_CONFIG = "config"  # eos_token_id / pad_token_id default: the model config's


def _choose(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None, generator):
    """logits [B, V] -> next token [B]."""
    if not do_sample:
        return logits.argmax(-1)
    scaled = logits.float() / temperature  # [B, V]
    if bool(torch.isfinite(logits).all()) and not bool(torch.isfinite(scaled).all()):
        biggest = float(logits.float().abs().max())
        raise InputError(f"temperature={temperature:g} is too small: a logit of {biggest:.3g} / {temperature:g} "
                         f"overflows float32; use a temperature of at least {biggest / 3e38:.3g}, or greedy decoding")
    logits = scaled
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


def _token_ids(value, V: int, name: str, many: bool) -> tuple[int, ...]:
    """Ids a caller gave, each checked to be in [0, V): None (none), one id, or with `many` a
    non-empty list of them."""
    def one(v):
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < V
    if value is None:
        return ()
    ids = tuple(value) if many and isinstance(value, (list, tuple)) else (value,)
    if not ids or not all(map(one, ids)):
        kind = f"a token id in [0, {V})" + (", a non-empty list of them" if many else "")
        raise InputError(f"{name} must be {kind}, or None, got {value!r}")
    return ids


def _end_ids(model, eos_token_id, pad_token_id) -> tuple[tuple[int, ...], int | None]:
    """(eos ids, maybe none; the id a stopped row is filled with). The config's eos ids that
    lie outside the vocabulary can never be generated (GPT-2's 50256 in a tiny test vocabulary)
    and are dropped, as transformers' generate would never meet them either."""
    cfg, V = model.config, model.config.vocab_size
    eos = tuple(i for i in cfg.eos_ids if i < V) if eos_token_id == FROM_CONFIG else \
        _token_ids(eos_token_id, V, "eos_token_id", many=True)
    pad = cfg.pad_token_id if pad_token_id == FROM_CONFIG else (
        _token_ids(pad_token_id, V, "pad_token_id", many=False) or (None,))[0]
    pad = pad if pad is not None and pad < V else (eos[0] if eos else None)
    return eos, pad


@torch.no_grad()
def generate(model, input_ids, max_new_tokens: int, attention_mask=None, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = None, eos_token_id=FROM_CONFIG,
             pad_token_id=FROM_CONFIG, generator: torch.Generator | None = None, use_cache: bool = True) -> torch.Tensor:
    """Return prompt + new tokens, [B, N + max_new_tokens] (fewer if every row hit eos).

    eos_token_id: "config" (the model's own, see the module docstring), None (never stop), an id,
    or a list of ids (stop at any). pad_token_id: what fills a stopped row ("config": the model's,
    else the first eos id). temperature: a finite number > 0, small enough not to overflow the
    scaled logits (checked at the first sampled step).
    use_cache=False recomputes the full sequence each step: slower, and the reference the cache
    is tested against.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 \
            or not math.isfinite(temperature):
        raise InputError(f"temperature must be a finite number > 0, got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise InputError(f"top_k must be a positive int or None, got {top_k}")
    V = model.config.vocab_size
    eos, pad = _end_ids(model, eos_token_id, pad_token_id)  # ids; int or None
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputTypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    check_ids(input_ids, V)  # the same checks as forward, before the mask is read
    mask = check_left_padded(check_mask(attention_mask, input_ids)).long()  # [B, N]
    m = model.prompt
    offset = m.position_offset() if m is not None else 0
    ids, eos = input_ids, torch.tensor(eos, dtype=torch.long, device=input_ids.device)  # [E], E may be 0
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)  # [B]

    positions = _positions(mask, offset)  # [B, N]
    limit = model.config.max_position_embeddings
    if int(positions.max()) >= limit:  # the prompt alone does not fit
        longest = int(mask.sum(dim=1).max())
        raise InputError(f"the prompt is {longest} tokens long, beyond the position table's {limit} positions "
                         f"(0..{limit - 1})" + (f" after a shift of P={offset} ('shifted' positions)" if offset else "")
                         + ": shorten the prompt")
    # The last new token is returned but never fed back, so the model sees max_new_tokens - 1 more positions.
    last = int(positions.max()) + max_new_tokens - 1
    if max_new_tokens > 0 and last >= limit:  # refuse up front rather than failing halfway through
        raise InputError(f"generating {max_new_tokens} tokens would feed the model position {last} beyond the "
                         f"position table (0..{limit - 1})"
                         + (f"; the 'shifted' policy adds a shift of P={offset}" if offset else ""))
    out = model(ids, attention_mask=mask, position_ids=positions, use_cache=use_cache, logits_to_keep=1)
    for step in range(max_new_tokens):
        nxt = _choose(out.logits[:, -1], do_sample, temperature, top_k, generator)  # [B]
        if len(eos):
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)  # a stopped row gets pad
            done = done | torch.isin(nxt, eos)  # [B]: stopped at any of the eos ids
        ids = torch.cat([ids, nxt[:, None]], dim=1)  # [B, N+step+1]
        mask = torch.cat([mask, torch.ones_like(nxt[:, None])], dim=1)  # [B, N+step+1]
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if use_cache:
            out = model(nxt[:, None], past=out.cache, use_cache=True)  # one token per row
        else:
            out = model(ids, attention_mask=mask, position_ids=_positions(mask, offset), logits_to_keep=1)
    return ids
