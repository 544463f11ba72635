"""BERT: a post-LayerNorm encoder with learned positions, token types, erf GELU and a pooler.

    input_ids [B, N] -> word + position + token type -> LayerNorm -> L x BertLayer
                     -> last_hidden_state [B, N, D], pooler(real [CLS]) [B, D]

This module holds all of BERT: its config, its blocks, its model, and its checkpoint converter
both ways (HF `BertModel` folders in, `save_pretrained` folders out).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.attention import MultiHeadAttention
from ..core.capture import record
from ..core.checks import check_ids
from ..core.config import ModelConfig
from ..core.layer import Layer, LayerOutput
from ..core.linear import Linear
from ..core.transformer import Transformer
from ..errors import InputError, InputTypeError
from .hf_config import build
from .hf_model import HFModel
from .keymap import Key, to_hf, to_ours


@dataclass(frozen=True)
class BertConfig(ModelConfig):
    """BERT-base by default (D=768, L=12, H=12); LayerNorm eps 1e-12, erf GELU."""
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    type_vocab_size: int = 2
    pad_token_id: int = 0

    model_type = "bert"
    field_kinds = {"layer_norm_eps": "positive", "hidden_dropout_prob": "probability",
                   "attention_probs_dropout_prob": "probability", "type_vocab_size": "size", "pad_token_id": "token id"}


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # [B, N, D]: real tokens only, whatever the method
    pooler_output: torch.Tensor  # [B, D]: from the real [CLS], never a virtual token
    attentions: tuple | None = None  # per layer [B, H, Nq, Nk] when output_attentions=True


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        D = cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, D)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, D)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, D)
        self.LayerNorm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def tokens(self, input_ids, token_type_ids, position_ids):
        """word + token type + position: [B, N, D] (a shallow prompt's rows join after this)."""
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # [B, N, D]
        return x + self.position_embeddings(position_ids)  # [B, N, D] + [1 or B, N, D]

    def finish(self, x):
        return self.dropout(self.LayerNorm(x))  # [B, (P+)N, D]

    def forward(self, input_ids, token_type_ids, position_ids):
        """The embedding block on its own, as HF's BertEmbeddings computes it: [B, N, D]."""
        return self.finish(self.tokens(input_ids, token_type_ids, position_ids))


class BertLayer(Layer):
    """Post-LN: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: BertConfig, index: int = 0):
        super().__init__()
        D = cfg.hidden_size
        self.attn = MultiHeadAttention(D, cfg.num_attention_heads, dropout=cfg.attention_probs_dropout_prob,
                                       scope=f"layer{index}.attn")
        self.attn_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.ffn_in = Linear(D, cfg.intermediate_size)
        self.ffn_out = Linear(cfg.intermediate_size, D)
        self.ffn_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Position-wise: [B, N, D] -> [B, N, D_ff] -> [B, N, D], every token on its own; erf GELU."""
        return self.ffn_out(F.gelu(self.ffn_in(x)))

    def forward(self, x, *, keep=None, prefix=None, gated=None, positions=None, need_weights=False, use_cache=False):
        a = self.attn(x, keep=keep, prefix=prefix, gated=gated, need_weights=need_weights, use_cache=use_cache)
        x = self.attn_norm(x + self.dropout(a.out))  # [B, N, D]
        x = self.ffn_norm(x + self.dropout(self.feed_forward(x)))  # [B, N, D]
        return LayerOutput(x, a.probs, a.present)

    def kv_from_hidden(self, h, positions=None):
        _, k, v = self.attn.project(h)  # post-LN: the layer reads h as it is; Q is unused
        return k, v  # [1, H, P, d] each

    def project_kv(self, h):
        return self.kv_from_hidden(h)  # post-LN: the bare projection is what the layer reads anyway


class BertEncoder(HFModel, Transformer):
    config_class = BertConfig  # what it is built from (and what from_pretrained expects)
    hf_architecture = "BertModel"
    takes_token_types = True

    def __init__(self, config: BertConfig, prompt=None):
        if not isinstance(config, self.config_class):
            raise InputTypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got "
                                 f"{type(config).__name__}")
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList(BertLayer(config, i) for i in range(config.num_hidden_layers))
        self.pooler = Linear(config.hidden_size, config.hidden_size)
        if prompt is not None:
            self.attach(prompt)

    # --- the interface (core/transformer.py) -----------------------------------------------
    def input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def embed_tokens(self, input_ids, positions, token_type_ids=None):
        e = self.embeddings
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        else:
            check_ids(token_type_ids, self.config.type_vocab_size, name="token_type_ids")
            if token_type_ids.shape != input_ids.shape:
                raise InputError(f"token_type_ids shape {list(token_type_ids.shape)} does not match "
                                 f"input_ids shape {list(input_ids.shape)}")
            if token_type_ids.device != input_ids.device:
                raise InputError(f"token_type_ids is on {token_type_ids.device} but input_ids is on "
                                 f"{input_ids.device}")
        return e.tokens(input_ids, token_type_ids, positions)  # [B, N, D]

    def shallow_rows(self, prompt, positions):
        """A shallow prompt lives in word-embedding space: it gets token type 0 (and, under
        positions="shifted", positions 0..P-1), then the embedding LayerNorm with the tokens."""
        rows = prompt + self.embeddings.token_type_embeddings.weight[0]  # [B, P, D]
        if positions is not None:
            rows = rows + self.embeddings.position_embeddings(positions)  # [B, P, D] + [1, P, D]
        return rows

    def embed_finish(self, x):
        return self.embeddings.finish(x)

    # --- forward ---------------------------------------------------------------------------
    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_attentions=False) -> EncoderOutput:
        """input_ids [B, N] int64/int32; attention_mask [B, N] of 0/1 (or bool), 1 = real token;
        token_type_ids [B, N] in [0, type_vocab_size). Anything else is refused by name (checks.py)."""
        out = self.run(input_ids, attention_mask, token_type_ids=token_type_ids, need_weights=output_attentions)
        h = out.hidden  # [B, N, D]: real rows only
        pooled = torch.tanh(self.pooler(h[:, 0]))  # [B, D]: the real [CLS]
        return EncoderOutput(record("final", "last_hidden_state", h), record("final", "pooler", pooled),
                             tuple(out.attentions) if output_attentions else None)

    @classmethod
    def peft_adaption_prompt(cls, cfg):
        """PEFT's adaption prompt (LLaMA-Adapter) is written for decoders (llama, mistral, gpt2): it
        knows no BERT module, so a gated prefix on BERT has no PEFT adapter."""
        raise InputError("PEFT's adaption prompt exists for llama, mistral and gpt2 models only, not for BERT: "
                         "a gated prefix on BERT has no PEFT adapter")


# --- checkpoints: HF BertModel <-> ours -------------------------------------------------------------

STRIP = ("bert.",)
# config.json fields checked below (refused unless they say what this encoder computes), and
# those transformers writes for BERT that an encoder without an LM head never reads
CHECKED = ("position_embedding_type", "hidden_act", "is_decoder", "add_cross_attention")
NOT_READ = ("bos_token_id", "eos_token_id", "tie_word_embeddings", "classifier_dropout")
IGNORED = [
    (r"embeddings\.position_ids", "a buffer of 0..511, not a weight"),
    (r"cls\..*", "a pre-training head (MLM/NSP), not part of the encoder"),
]


def keys(cfg: BertConfig) -> list[Key]:
    """Every tensor of ours and where HF's BertModel keeps it (nn.Linear: [out, in], transposed)."""
    D = cfg.hidden_size
    table = [Key(f"embeddings.{n}.weight", (f"embeddings.{n}.weight",))
             for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    table += [Key(f"embeddings.LayerNorm.{w}", (f"embeddings.LayerNorm.{w}",)) for w in ("weight", "bias")]
    for i in range(cfg.num_hidden_layers):
        hf, ours = f"encoder.layer.{i}.", f"layers.{i}."
        for w in ("weight", "bias"):
            table += [
                Key(ours + f"attn.qkv.{w}", tuple(hf + f"attention.self.{n}.{w}" for n in ("query", "key", "value")),
                    transpose=True, sizes=(D, D, D)),
                Key(ours + f"attn.output.{w}", (hf + f"attention.output.dense.{w}",), transpose=True),
                Key(ours + f"attn_norm.{w}", (hf + f"attention.output.LayerNorm.{w}",)),
                Key(ours + f"ffn_in.{w}", (hf + f"intermediate.dense.{w}",), transpose=True),
                Key(ours + f"ffn_out.{w}", (hf + f"output.dense.{w}",), transpose=True),
                Key(ours + f"ffn_norm.{w}", (hf + f"output.LayerNorm.{w}",)),
            ]
    table += [Key(f"pooler.{w}", (f"pooler.dense.{w}",), transpose=True) for w in ("weight", "bias")]
    return table


def legacy_names(sd: dict) -> dict:
    """Very old BERT checkpoints call LayerNorm's weight/bias gamma/beta."""
    rename = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}
    return {next((k[:-len(old)] + new for old, new in rename.items() if k.endswith(old)), k): t for k, t in sd.items()}


def config_from_hf(hf: dict, source="config.json") -> BertConfig:
    """A HuggingFace BERT config.json -> BertConfig; refuse what this encoder would compute differently."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise InputError(f"{source}: only absolute position embeddings are supported, config has "
                         f"position_embedding_type={hf['position_embedding_type']!r}")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise InputError(f"{source}: BERT configs must use hidden_act='gelu' (erf), got {hf['hidden_act']!r}")
    for flag in ("is_decoder", "add_cross_attention"):
        if hf.get(flag):
            raise InputError(f"{source}: BERT configs with {flag}=True are not supported (this encoder is "
                             f"bidirectional, without cross-attention)")
    return build(BertConfig, hf, source, read=CHECKED + NOT_READ)


def config_to_hf(cfg: BertConfig) -> dict:
    return {"model_type": "bert", "architectures": ["BertModel"], "hidden_act": "gelu",
            "position_embedding_type": "absolute", **{k: v for k, v in cfg.to_dict().items() if k != "model_type"}}


def state_from_hf(sd: dict, cfg: BertConfig, source: str = "the weights") -> dict:
    return to_ours(legacy_names(sd), keys(cfg), STRIP, IGNORED, source)


def state_to_hf(state: dict, cfg: BertConfig) -> dict:
    return to_hf(state, keys(cfg))


def legacy_v1_state(tensors: dict, source: str) -> dict:
    """Checkpoints of version 1 stored BERT's matrices as nn.Linear does, [out, in], with query,
    key and value apart: fuse and transpose them into today's layout ([in, out], one qkv)."""
    out = {}
    for name, t in tensors.items():
        for part in (".attn.query.", ".attn.key.", ".attn.value."):
            if part in name:
                break
        else:
            matrix = re.fullmatch(r"(.*\.)?(output|ffn_in|ffn_out|pooler)\.weight", name)
            out[name] = t.t().contiguous() if matrix else t
            continue
        fused = name.replace(part, ".attn.qkv.")
        if fused in out:
            continue
        parts = [tensors.get(name.replace(part, f".attn.{n}.")) for n in ("query", "key", "value")]
        if any(p is None for p in parts) or len({tuple(p.shape) for p in parts}) != 1:
            raise InputError(f"{source}: attention needs query, key and value of one shape to build {fused}")
        out[fused] = torch.cat([p.t() if p.dim() == 2 else p for p in parts], dim=-1).contiguous()
    return out


# What the registry asks of the model class (models/hf_model.py): the functions above, which stay
# functions of the module as well (lesson 04 calls them).
BertEncoder.checkpoint_keys, BertEncoder.state_from_hf = staticmethod(keys), staticmethod(state_from_hf)
BertEncoder.state_to_hf, BertEncoder.config_to_hf = staticmethod(state_to_hf), staticmethod(config_to_hf)
BertEncoder.config_from_hf = staticmethod(config_from_hf)
Config, Model = BertConfig, BertEncoder  # what the registry (models/__init__.py) builds
