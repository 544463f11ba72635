"""A GPT-2-style decoder: token + position embeddings, pre-LN blocks with tanh GELU, a causal
mask, a final LayerNorm and an LM head tied to the token embedding.

    input_ids [B, N] -> wte + wpe [B, N, D] -> L x DecoderBlock -> ln_f -> logits [B, N, V]

Incremental decoding keeps each layer's keys and values in a `KVCache`. A K/V prefix is the
same thing: generation with P-Tuning v2 simply starts from the prefix as the initial cache.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention
from .checks import check_device, check_ids, check_labels, check_mask, check_position_ids, check_positions
from .config import DecoderConfig
from .errors import InputError, InputTypeError
from .linear import Linear
from .masks import prepend
from .positionwise import position_wise
from .prompts.base import PromptHost
from .stack import run_layers
from .trace import record


@dataclass
class KVCache:
    """Everything a later step needs: per-layer (K, V) [B, H, T, d], which of the T keys are
    real [B, T], and the position the next token of each row takes [B]."""
    layers: list
    key_mask: torch.Tensor  # [B, T]
    next_position: torch.Tensor  # [B]

    @property
    def length(self) -> int:  # T: prefix + tokens so far
        return self.key_mask.shape[1]


@dataclass
class DecoderOutput:
    logits: torch.Tensor  # [B, N, V]: real tokens only
    loss: torch.Tensor | None = None
    attentions: tuple | None = None  # per layer [B, H, Nq, Nk]
    cache: KVCache | None = None


class DecoderBlock(nn.Module):
    """Pre-LN: x = x + Attn(LN1(x)); x = x + FFN(LN2(x))."""

    def __init__(self, cfg: DecoderConfig, index: int = 0):
        super().__init__()
        D = cfg.hidden_size
        self.ln_1 = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.attn = MultiHeadAttention(D, cfg.num_attention_heads, cfg.attention_probs_dropout_prob,
                                       scope=f"layer{index}.attn")
        self.ln_2 = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.ffn_in = Linear(D, cfg.intermediate_size)
        self.ffn_out = Linear(cfg.intermediate_size, D)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.chunk_rows = cfg.ffn_chunk_rows

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_out(F.gelu(self.ffn_in(x), approximate="tanh"))  # [rows, D] -> [rows, D_ff] -> [rows, D]

    def forward(self, x, keep=None, prefix=None, need_weights=False, use_cache=False):
        a, probs, present = self.attn(self.ln_1(x), keep, prefix, need_weights, use_cache)  # [B, N, D]
        x = x + self.dropout(a)  # [B, N, D]
        f = position_wise(self.ffn, self.ln_2(x), self.chunk_rows)  # [B, N, D], token by token
        return x + self.dropout(f), probs, present


class Decoder(PromptHost, nn.Module):
    def __init__(self, config: DecoderConfig, prompt=None):
        super().__init__()
        if not isinstance(config, DecoderConfig):
            raise InputTypeError(f"Decoder needs a DecoderConfig, got {type(config).__name__}")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.drop = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList(DecoderBlock(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.prompt = None
        if prompt is not None:
            self.attach(prompt)

    @classmethod
    def from_pretrained(cls, model_dir, device=None, dtype=None) -> "Decoder":
        from .loading import load_pretrained
        return load_pretrained(model_dir, expect="gpt2", device=device, dtype=dtype)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past: KVCache | None = None,
                use_cache=False, labels=None, output_attentions=False, logits_to_keep: int = 0) -> DecoderOutput:
        """input_ids [B, N] int64/int32; attention_mask [B, N] of 0/1 (or bool); position_ids [B, N]
        or [1, N] in [0, max_position_embeddings) (default: 0.., or after the cache); labels [B, N]
        in [0, V) or -100. Anything else is refused by name (checks.py).

        logits_to_keep=k > 0 returns only the last k rows of logits [B, k, V]: generation reads
        just the last one, and the [D, V] head is the largest matrix product of a step."""
        cfg, m = self.config, self.prompt
        B, N = check_ids(input_ids, cfg.vocab_size)
        check_device(input_ids, self, "input_ids")
        mask = check_mask(attention_mask, input_ids)  # [B, N]
        if past is not None and not isinstance(past, KVCache):
            raise InputTypeError(f"past must be the KVCache of an earlier call (out.cache), got {type(past).__name__}")
        if past is not None and past.key_mask.shape[0] != B:
            raise InputError(f"cache batch {past.key_mask.shape[0]} does not match input_ids batch {B}")
        shift = m.position_offset() if m is not None else 0  # P under "shifted", else 0
        if position_ids is None:
            start = past.next_position if past is not None else torch.full((B,), shift, device=input_ids.device)
            position_ids = start[:, None] + torch.arange(N, device=input_ids.device)  # [B, N]
            check_positions(int(position_ids.max()), cfg.max_position_embeddings, f"N={N} tokens" + (
                f" after a position shift of P={shift} (positions='shifted')" if shift else ""))
        else:
            check_position_ids(position_ids, input_ids, cfg.max_position_embeddings)
        if isinstance(logits_to_keep, bool) or not isinstance(logits_to_keep, int) or logits_to_keep < 0:
            raise InputError(f"logits_to_keep must be an int >= 0 (0 = all), got {logits_to_keep!r}")
        if logits_to_keep and labels is not None:
            raise InputError("labels need the logits of every position; leave logits_to_keep=0")
        if labels is not None:
            labels = check_labels(labels, input_ids.shape, cfg.vocab_size, input_ids.device, like="input_ids")
        x = self.wte(input_ids) + self.wpe(position_ids)  # [B, N, D]

        shallow = m.input_prompt(B) if (m is not None and past is None) else None  # [B, P, D]
        if shallow is not None:
            m.check_tensor(shallow, self.wte.weight, "input prompt")
            m.check_finite([shallow], lambda i: "input prompt")
            record("shallow", "prompt", shallow)
            if m.positions == "shifted":  # the prompt occupies positions 0..P-1
                shallow = shallow + self.wpe.weight[: m.num_virtual]  # [B, P, D]
            x = torch.cat([shallow, x], dim=1)  # [B, P+N, D]
            mask = prepend(mask, m.virtual_keep, m.num_virtual)  # [B, P+N]
        x = record("embeddings", "out", self.drop(x))

        key_mask = mask if past is None else torch.cat([past.key_mask, mask], dim=1)  # [B, T+N]
        out = run_layers(self.layers, x, key_mask, m, causal=True,
                         past=past.layers if past is not None else None, need_weights=output_attentions,
                         use_cache=use_cache)
        h = self.ln_f(out.hidden)  # [B, (P+)N, D]
        if shallow is not None:
            h = record("shallow", "slice", h[:, m.num_virtual:])  # [B, N, D]
        if logits_to_keep:
            h = h[:, -logits_to_keep:]  # [B, k, D]
        logits = record("final", "logits", F.linear(h, self.wte.weight))  # [B, N, V]: tied head

        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=-100)  # predict token t+1 from t
        cache = None
        if use_cache:
            cache = KVCache(out.presents, out.key_mask, position_ids[:, -1].expand(B) + 1)  # [B]
        return DecoderOutput(logits, loss, tuple(out.attentions) if output_attentions else None, cache)

    def generate(self, input_ids, max_new_tokens: int, attention_mask=None, **kw) -> torch.Tensor:
        """Prompt + new tokens [B, N + max_new_tokens], greedy unless do_sample=True (see generate.py)."""
        from .generate import generate
        return generate(self, input_ids, max_new_tokens, attention_mask=attention_mask, **kw)
