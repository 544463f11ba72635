"""A BERT-style encoder: embeddings, post-LayerNorm layers with erf GELU, and a pooler.

    input_ids [B, N] -> embeddings [B, N, D] -> L x EncoderLayer -> last_hidden_state [B, N, D]
                                                                 -> pooler(real [CLS]) [B, D]

A prompt method attached with `attach` is consulted by the embeddings (shallow prompts) and by
the layer loop in `stack.run_layers` (deep prompts). The backbone itself never changes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention
from .checks import check_device, check_ids, check_mask, check_positions
from .config import EncoderConfig
from .errors import InputError, InputTypeError
from .linear import Linear
from .masks import prepend
from .positionwise import position_wise
from .prompts.base import PromptHost
from .stack import run_layers
from .trace import record


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # [B, N, D]: real tokens only, whatever the method
    pooler_output: torch.Tensor  # [B, D]: from the real [CLS], never a virtual token
    attentions: tuple | None = None  # per layer [B, H, Nq, Nk] when output_attentions=True


class Embeddings(nn.Module):
    """word + position + token type, then LayerNorm and dropout. A shallow prompt [B, P, D] lives
    in word-embedding space and is prepended here, before LayerNorm (as PEFT does)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        D = cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, D)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, D)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, D)
        self.LayerNorm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, position_ids, prompt=None, prompt_position_ids=None):
        x = self.word_embeddings(input_ids)  # [B, N, D]
        x = x + self.token_type_embeddings(token_type_ids)  # [B, N, D]
        x = x + self.position_embeddings(position_ids)  # [B, N, D] + [1, N, D]
        if prompt is not None:  # shallow prompt: virtual tokens get token type 0
            tt0 = self.token_type_embeddings.weight[0]  # [D]
            p = prompt + tt0  # [B, P, D]
            if prompt_position_ids is not None:  # "shifted" policy: prompt at 0..P-1
                p = p + self.position_embeddings(prompt_position_ids)  # [B, P, D] + [1, P, D]
            x = torch.cat([p, x], dim=1)  # [B, P+N, D]
        return self.dropout(self.LayerNorm(x))


class EncoderLayer(nn.Module):
    """Post-LN: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: EncoderConfig, index: int = 0):
        super().__init__()
        D = cfg.hidden_size
        self.attn = MultiHeadAttention(D, cfg.num_attention_heads, cfg.attention_probs_dropout_prob,
                                       scope=f"layer{index}.attn")
        self.attn_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.ffn_in = Linear(D, cfg.intermediate_size)
        self.ffn_out = Linear(cfg.intermediate_size, D)
        self.ffn_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.chunk_rows = cfg.ffn_chunk_rows

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_out(F.gelu(self.ffn_in(x)))  # [rows, D] -> [rows, D_ff] -> [rows, D]; erf GELU

    def forward(self, x, keep=None, prefix=None, need_weights=False, use_cache=False):
        a, probs, present = self.attn(x, keep, prefix, need_weights, use_cache)  # [B, N, D]
        x = self.attn_norm(x + self.dropout(a))  # [B, N, D]
        f = position_wise(self.ffn, x, self.chunk_rows)  # [B, N, D], token by token
        x = self.ffn_norm(x + self.dropout(f))  # [B, N, D]
        return x, probs, present


class Encoder(PromptHost, nn.Module):
    def __init__(self, config: EncoderConfig, prompt=None):
        super().__init__()
        if not isinstance(config, EncoderConfig):
            raise InputTypeError(f"Encoder needs an EncoderConfig, got {type(config).__name__}")
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.pooler = Linear(config.hidden_size, config.hidden_size)
        self.prompt = None
        if prompt is not None:
            self.attach(prompt)

    @classmethod
    def from_pretrained(cls, model_dir, device=None, dtype=None) -> "Encoder":
        from .loading import load_pretrained
        return load_pretrained(model_dir, expect="bert", device=device, dtype=dtype)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_attentions=False):
        """input_ids [B, N] int64/int32; attention_mask [B, N] of 0/1 (or bool), 1 = real token;
        token_type_ids [B, N] in [0, type_vocab_size). Anything else is refused by name (checks.py)."""
        cfg, m = self.config, self.prompt
        B, N = check_ids(input_ids, cfg.vocab_size)
        check_device(input_ids, self, "input_ids")
        mask = check_mask(attention_mask, input_ids)  # [B, N] bool
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        else:
            check_ids(token_type_ids, cfg.type_vocab_size, name="token_type_ids")
            if token_type_ids.shape != input_ids.shape:
                raise InputError(f"token_type_ids shape {list(token_type_ids.shape)} does not match "
                                 f"input_ids shape {list(input_ids.shape)}")
            if token_type_ids.device != input_ids.device:
                raise InputError(f"token_type_ids is on {token_type_ids.device} but input_ids is on "
                                 f"{input_ids.device}")
        offset = m.position_offset() if m is not None else 0
        check_positions(offset + N - 1, cfg.max_position_embeddings,
                        f"N={N} real tokens" + (f" after a position shift of P={offset}" if offset else ""))
        position_ids = torch.arange(offset, offset + N, device=input_ids.device)[None]  # [1, N], broadcast over B

        shallow = m.input_prompt(B) if m is not None else None  # [B, P, D] or None
        prompt_pos = None
        if shallow is not None:
            m.check_tensor(shallow, self.embeddings.word_embeddings.weight, "input prompt")
            m.check_finite([shallow], lambda i: "input prompt")
            record("shallow", "prompt", shallow)
        if shallow is not None and m.positions == "shifted":
            prompt_pos = torch.arange(m.num_virtual, device=input_ids.device)[None]  # [1, P]
        x = self.embeddings(input_ids, token_type_ids, position_ids, shallow, prompt_pos)  # [B, (P+)N, D]
        record("embeddings", "out", x)
        if shallow is not None:
            mask = prepend(mask, m.virtual_keep, m.num_virtual)  # [B, P+N]

        out = run_layers(self.layers, x, mask, m, causal=False, need_weights=output_attentions)
        h = out.hidden  # [B, (P+)N, D]
        if shallow is not None:
            h = record("shallow", "slice", h[:, m.num_virtual:])  # [B, N, D]: drop virtual rows first
        pooled = torch.tanh(self.pooler(h[:, 0]))  # [B, D]: the real [CLS]
        return EncoderOutput(record("final", "last_hidden_state", h), record("final", "pooler", pooled),
                             tuple(out.attentions) if output_attentions else None)
