"""The model's side of the seam: what every architecture answers, and the one forward body.

The core and the prompt methods never guess what a model is (no `hasattr`, no `model_type ==`):
they ask it, through the methods below, which every architecture in models/ implements.

    input_embeddings()                 nn.Embedding [V, D]: where tokens and shallow prompts live
    embed_tokens(ids, positions, ...)  [B, N, D]: token rows before the embedding's last step
    shallow_rows(prompt, positions)    [B, P, D]: what a shallow prompt row adds up to there
    embed_finish(x)                    [B, P+N, D]: the embedding's last step (LayerNorm, dropout...)
    position_style                     "learned" (added to the embeddings) or "rotary" (in attention)
    takes_token_types                  whether forward takes token_type_ids (BERT)
    rotate(t, positions)               rotary models: turn Q or K [B, H, n, d] to their positions
    layers                             the L blocks, each keeping the layer contract (core/layer.py);
                                       a prompt method's kv_prefix is handed them, for a prefix the
                                       frozen layers make themselves (layers[i].project_kv)
    layers[i].kv_from_hidden(h, pos)   (K, V) [1, H_kv, P, d] a layer makes of hidden rows (the bridge)
    fingerprint()                      what identifies the backbone in a checkpoint

`run` then does the same for every architecture: check the inputs, give the real tokens their
positions (0..N-1, or P..P+N-1 under positions="shifted"), put a shallow prompt's rows in front,
ask the method for its deep prompts or its per-layer prefixes (core/prefix.py: a Prefix(K, V)
joined to the keys, a Prefix(K, V, gate) read apart, or None), run the layer loop (stack.py),
and slice the prompt rows off again, so every output has exactly the N real rows.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..errors import InputError, InputTypeError
from .capture import record
from .checks import check_device, check_ids, check_mask, check_position_ids, check_positions
from .fingerprint import fingerprint
from .prefix import split_prefixes
from .prompt_method import PromptMethod
from .prompt_rows import drop_front, in_front, keys_in_front, positions_in_front
from .stack import run_layers


class RunOutput(NamedTuple):
    hidden: torch.Tensor  # [B, N, D]: the real rows only
    attentions: list  # per layer [B, H, Nq, Nk] when asked, else None
    presents: list | None  # per layer Prefix(K, V) [B, H_kv, Nk, d] with use_cache
    key_mask: torch.Tensor  # [B, Nk]
    positions: torch.Tensor  # [B or 1, N]: the real rows' positions
    gated: list | None = None  # per layer Prefix(K, V, gate) or None: the gated prefixes read


class Transformer(nn.Module):
    """Base class of every architecture (BertEncoder, GPT2Decoder, LlamaDecoder)."""

    causal = False  # may a token attend to later tokens? (a decoder: no)
    position_style = "learned"  # "learned": added to the embeddings; "rotary": applied in attention
    takes_token_types = False  # does forward take token_type_ids (BERT's segments A/B)?

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.prompt: PromptMethod | None = None
        self.tokenizer_digest: str | None = None  # of the tokenizer files beside the weights (load_pretrained)

    # --- what every architecture answers ----------------------------------------------------
    def input_embeddings(self) -> nn.Embedding:
        raise NotImplementedError

    def embed_tokens(self, input_ids: torch.Tensor, positions: torch.Tensor, **extra) -> torch.Tensor:
        raise NotImplementedError

    def shallow_rows(self, prompt: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        """A shallow prompt's rows [B, P, D] as they join the token rows (default: as they are)."""
        return prompt

    def embed_finish(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def rotate(self, t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        raise InputError(f"{type(self).__name__} has {self.position_style} positions: there is nothing to rotate")

    def fingerprint(self, recompute: bool = False) -> dict:
        """Dimensions, a digest of every weight and of the tokenizer: what tells two backbones
        apart when a checkpoint is loaded onto one (fingerprint.py; kept while no weight changes)."""
        return fingerprint(self, recompute)

    # --- prompts ------------------------------------------------------------------------------
    def attach(self, method: PromptMethod):
        """Attach a prompt method; the model consults it on every forward. Returns the model."""
        if not isinstance(method, PromptMethod):
            raise InputTypeError(f"attach() takes a PromptMethod, got {type(method).__name__}")
        method.check_compatible(self.config)
        if method.rotate_prefix_keys and self.position_style != "rotary":
            raise InputError(f"{type(method).__name__}(rotate_keys=True) needs a model with rotary positions; "
                             f"{type(self).__name__} has {self.position_style} positions")
        self.prompt = method
        return self

    def detach_prompt(self) -> PromptMethod | None:
        """Remove and return the attached method: the model is the plain backbone again."""
        method, self.prompt = self.prompt, None
        return method

    def prompt_positions(self, P: int, policy: str, device) -> torch.Tensor | None:
        """The positions of P virtual rows [1, P]. Under "shifted" they sit at 0..P-1 (real tokens
        at P..). Under "real", real tokens keep 0..N-1: learned positions give the virtual rows
        none (None), rotary ones place them at -P..-1, just before the text, as "shifted" does up
        to an offset rotary scores cannot see (they depend on distances only)."""
        if policy == "shifted":
            return torch.arange(P, device=device)[None]  # [1, P]
        if self.position_style == "rotary":
            return torch.arange(-P, 0, device=device)[None]  # [1, P]
        return None

    # --- the one forward body -------------------------------------------------------------------
    def run(self, input_ids, attention_mask=None, *, position_ids=None, past=None, need_weights=False,
            use_cache=False, **extra) -> RunOutput:
        """input_ids [B, N]; attention_mask [B, N] of 0/1; position_ids [B or 1, N] (default: 0..,
        shifted by P under positions="shifted", or after the cache); past: a KVCache; `extra`
        goes to `embed_tokens` (BERT's token_type_ids)."""
        cfg, m = self.config, self.prompt
        B, N = check_ids(input_ids, cfg.vocab_size)
        check_device(input_ids, self, "input_ids")
        mask = check_mask(attention_mask, input_ids)  # [B, N] bool
        positions = self._real_positions(input_ids, position_ids, past)  # [B or 1, N]

        fresh = m is not None and past is None  # prompts join the first pass; a cache already holds them
        rows_pos = self.prompt_positions(m.num_virtual, m.positions, input_ids.device) if m is not None else None
        x = self.embed_tokens(input_ids, positions, **extra)  # [B, N, D]
        shallow = m.input_prompt(B) if fresh else None  # [B, P, D] or None
        layer_positions = positions
        if shallow is not None:
            m.check_tensor(shallow, x, "input prompt")
            m.check_finite([shallow], lambda i: "input prompt")
            x = in_front(self.shallow_rows(record("shallow", "prompt", shallow), rows_pos), x)  # [B, P+N, D]
            mask = keys_in_front(mask, m.virtual_keep)  # [B, P+N]
            layer_positions = positions_in_front(rows_pos, positions)  # [B or 1, P+N] or None
        x = record("embeddings", "out", self.embed_finish(x))  # [B, (P+)N, D]

        deep = m.hidden_prompts(B) if fresh else None  # L x [B, P, D] or None
        kv = m.kv_prefix(B, layers=self.layers) if fresh else None  # L x (Prefix or None), or None
        if deep is not None:
            m.check_finite(deep, lambda i: f"hidden prompt of layer {i}")
            for i, h in enumerate(deep):
                m.check_tensor(h, x, f"hidden prompt of layer {i}")
        joined, gated = self._prefixes(m, kv, deep, rows_pos) if kv is not None else (None, None)
        if deep is not None or joined is not None:
            mask = keys_in_front(mask, m.virtual_keep)  # [B, P+N]: a gated prefix adds no key
        if past is not None:  # a cache holds what the first pass read: the joined keys, and the gated apart
            joined, gated = past.layers, past.gated
        key_mask = mask if past is None else torch.cat([past.key_mask, mask], dim=1)  # [B, T+N]
        out = run_layers(self.layers, x, key_mask, deep=deep, prefix=joined, gated=gated, causal=self.causal,
                         positions=layer_positions, deep_positions=rows_pos, need_weights=need_weights,
                         use_cache=use_cache)
        h = out.hidden  # [B, (P+)N, D]
        if shallow is not None:
            h = record("shallow", "slice", drop_front(h, m.num_virtual))  # [B, N, D]: virtual rows dropped first
        return RunOutput(h, out.attentions, out.presents, out.key_mask, positions, gated)

    def _prefixes(self, m, kv, deep, rows_pos):
        """The method's per-layer prefixes, checked, split into joined and gated lists (core/prefix.py),
        keys turned if the method asks, and the method's virtual_keep handed to the gated ones."""
        name = type(m).__name__
        joined, gated = split_prefixes(kv, len(self.layers), m.num_virtual, name)
        if deep is not None and joined is not None:
            raise InputError(f"{name} answers both hidden_prompts and kv_prefix with a joined prefix: the "
                             f"layer loop runs one deep style at a time")
        parts = [(t, f"prefix {n} of layer {i}") for ps in (joined, gated) if ps is not None
                 for i, p in enumerate(ps) if p is not None
                 for n, t in (("K", p.k), ("V", p.v)) + ((("gate", p.gate),) if p.gated else ())]
        m.check_finite([t for t, _ in parts], lambda i: parts[i][1])

        def ready(p):  # keys turned to the prompt rows' positions (once for all layers), if asked
            p = p.replace(k=self.rotate(p.k, rows_pos)) if m.rotate_prefix_keys else p
            if p.gated:  # which of the P entries may be read: the method's virtual_keep
                p = p.replace(keep=m.virtual_keep if p.keep is None else p.keep & m.virtual_keep)
            return p
        return ([ready(p) for p in joined] if joined is not None else None,
                [ready(p) if p is not None else None for p in gated] if gated is not None else None)

    def _real_positions(self, input_ids, position_ids, past) -> torch.Tensor:
        """The real tokens' positions [B or 1, N], checked against the position table."""
        B, N = input_ids.shape
        limit, m = self.config.max_position_embeddings, self.prompt
        if position_ids is not None:
            check_position_ids(position_ids, input_ids, limit)
            return position_ids
        if past is not None:
            pos = past.next_position[:, None] + torch.arange(N, device=input_ids.device)  # [B, N]
            check_positions(int(pos.max()), limit, f"{N} more token(s) after a cache of {past.length}")
            return pos
        shift = m.position_offset() if m is not None else 0  # P under "shifted", else 0
        check_positions(shift + N - 1, limit, f"N={N} real tokens" + (
            f" after a position shift of P={shift} (positions='shifted')" if shift else ""))
        return torch.arange(shift, shift + N, device=input_ids.device)[None]  # [1, N], broadcast over B
