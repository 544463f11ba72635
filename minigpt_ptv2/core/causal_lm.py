"""What every decoder shares on top of the forward body: logits, the LM loss, the KV cache, generate.

    input_ids [B, N] -> run (embeddings, layers) -> final_norm -> logits = h E^T [B, N, V]

An architecture (GPT-2, LLaMA) supplies its embeddings and blocks (transformer.py's interface)
plus two things here: `final_norm` and `lm_head_weight` (the [V, D] matrix logits come from,
tied to the input embeddings or not). Its config is a `DecoderConfig` (core/config.py): the bos,
eos and pad ids generation reads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError, InputTypeError
from .cache import KVCache
from .capture import record
from .checks import check_labels
from .transformer import Transformer


@dataclass
class DecoderOutput:
    logits: torch.Tensor  # [B, N, V]: real tokens only
    loss: torch.Tensor | None = None
    attentions: tuple | None = None  # per layer [B, H, Nq, Nk]
    cache: KVCache | None = None


class CausalLM(Transformer):
    causal = True

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def lm_head_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input_ids, attention_mask=None, position_ids=None, past: KVCache | None = None,
                use_cache=False, labels=None, output_attentions=False, logits_to_keep: int = 0) -> DecoderOutput:
        """input_ids [B, N] int64/int32; attention_mask [B, N] of 0/1 (or bool); position_ids [B, N]
        or [1, N] in [0, max_position_embeddings) (default: 0.., or after the cache); labels [B, N]
        in [0, V) or -100. Anything else is refused by name (checks.py).

        logits_to_keep=k > 0 returns only the last k rows of logits [B, k, V]: generation reads
        just the last one, and the [D, V] head is the largest matrix product of a step."""
        if past is not None and not isinstance(past, KVCache):
            raise InputTypeError(f"past must be the KVCache of an earlier call (out.cache), got {type(past).__name__}")
        if past is not None and torch.is_tensor(input_ids) and input_ids.dim() == 2 \
                and past.key_mask.shape[0] != input_ids.shape[0]:
            raise InputError(f"cache batch {past.key_mask.shape[0]} does not match input_ids batch {input_ids.shape[0]}")
        if isinstance(logits_to_keep, bool) or not isinstance(logits_to_keep, int) or logits_to_keep < 0:
            raise InputError(f"logits_to_keep must be an int >= 0 (0 = all), got {logits_to_keep!r}")
        if logits_to_keep and labels is not None:
            raise InputError("labels need the logits of every position; leave logits_to_keep=0")
        if labels is not None and torch.is_tensor(input_ids):
            labels = check_labels(labels, input_ids.shape, self.config.vocab_size, input_ids.device, like="input_ids")
        out = self.run(input_ids, attention_mask, position_ids=position_ids, past=past,
                       need_weights=output_attentions, use_cache=use_cache)
        h = self.final_norm(out.hidden)  # [B, N, D]
        if logits_to_keep:
            h = h[:, -logits_to_keep:]  # [B, k, D]
        logits = record("final", "logits", F.linear(h, self.lm_head_weight()))  # [B, N, V]

        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=-100)  # predict token t+1 from t
        cache = None
        if use_cache:
            B = out.hidden.shape[0]
            cache = KVCache(out.presents, out.key_mask, out.positions[:, -1].expand(B) + 1, out.gated)  # [B]
        return DecoderOutput(logits, loss, tuple(out.attentions) if output_attentions else None, cache)

    def generate(self, input_ids, max_new_tokens: int, attention_mask=None, **kw) -> torch.Tensor:
        """Prompt + new tokens [B, N + max_new_tokens], greedy unless do_sample=True (see generate.py)."""
        from .generate import generate
        return generate(self, input_ids, max_new_tokens, attention_mask=attention_mask, **kw)
