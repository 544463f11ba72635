"""LLaMA-style decoder: pre-RMSNorm blocks, rotary positions, SwiGLU, grouped K/V heads, no biases.

    input_ids [B, N] -> tok_embeddings [B, N, D] -> L x LlamaBlock -> norm -> logits [B, N, V]

What changes from GPT-2, each a line below:
- no position table: every block turns its queries and keys by their positions (RoPE,
  core/rotary.py), so a score depends only on the distance between two tokens;
- RMSNorm instead of LayerNorm: x / rms(x) * w, no mean subtracted, no bias;
- SwiGLU feed-forward: down(silu(gate(x)) * up(x)), three matrices instead of two;
- grouped-query attention: H query heads share H_kv < H key/value heads (groups of H / H_kv),
  so a KV cache, and a K/V prefix, is [B, H_kv, P, d], H / H_kv times smaller than [B, H, P, d];
- no biases anywhere (attention_bias / mlp_bias in config.json can turn them on);
- an LM head of its own, or tied to the embeddings (tie_word_embeddings).

This module holds all of it: config, blocks, model and the checkpoint converter both ways
(HF `LlamaForCausalLM` folders in, `save_pretrained` folders out).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.attention import MultiHeadAttention
from ..core.causal_lm import CausalLM
from ..core.config import DecoderConfig
from ..core.layer import Layer, LayerOutput
from ..core.linear import Linear
from ..core.rotary import Rotary
from ..errors import InputError, InputTypeError
from .hf_config import build, token_ids
from .hf_model import HFModel
from .keymap import AdaptionPromptKeys, Key, to_hf, to_ours
from .rope import FIELDS as ROPE_FIELDS
from .rope import rope_from_hf


@dataclass(frozen=True)
class LlamaConfig(DecoderConfig):
    """transformers' LlamaConfig defaults (a LLaMA-2-7B shape: D=4096, L=32, H=32, D_ff=11008), so a
    config.json that leaves a field out means here what it means there.

    head_dim None means D/H, num_key_value_heads None means H (no grouping), as in config.json."""
    vocab_size: int = 32000
    hidden_size: int = 4096
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # H_kv
    head_dim: int | None = None  # d: a field of its own here, not always D/H
    intermediate_size: int = 11008
    max_position_embeddings: int = 2048  # the context the model was trained for (RoPE has no table)
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # None: plain RoPE; else core/rotary.py's check_scaling says
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    attention_dropout: float = 0.0
    bos_token_id: int | None = 1
    eos_token_id: int | tuple[int, ...] | None = 2

    model_type = "llama"
    free_head_dim = True
    fixed_biases = None  # a class attribute (not a field): (Q/K/V, output, feed-forward) when fixed; see biases()
    field_kinds = {"num_key_value_heads": "size or null", "head_dim": "size or null", "rms_norm_eps": "positive",
                   "rope_theta": "positive", "rope_scaling": "object or null", "tie_word_embeddings": "flag",
                   "attention_bias": "flag", "mlp_bias": "flag", "attention_dropout": "probability"}

    def __post_init__(self):
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        super().__post_init__()
        if self.head_dim % 2:
            raise InputError(f"head_dim={self.head_dim} must be even: rotary positions turn its features in pairs")
        if self.fixed_biases and (self.attention_bias or self.mlp_bias):
            raise InputError(f"{self.model_type} has no attention_bias or mlp_bias: its biases are fixed "
                             f"(Q/K/V, output, feed-forward: {self.fixed_biases})")

    def biases(self) -> tuple[bool, bool, bool]:
        """Which projections carry a bias: (Q/K/V, attention output, feed-forward). LLaMA: attention_bias
        for the first two, mlp_bias for the third; a variant whose biases are fixed says them in
        `fixed_biases` (and then has neither field, as in transformers)."""
        return self.fixed_biases or (self.attention_bias, self.attention_bias, self.mlp_bias)

    def layer_window(self, i: int) -> int | None:
        """Layer i's sliding window W (core/masks.py), or None: it sees every earlier column. LLaMA
        has none; a variant with one (Mistral, Qwen2) overrides this."""
        return None


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis [.., D]: LayerNorm without the mean
    and the bias. Computed in at least float32, then cast back (as transformers does)."""

    def __init__(self, D: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(D))  # [D]
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.promote_types(x.dtype, torch.float32))  # [.., D]
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)  # [.., D]
        return self.weight * h.to(x.dtype)  # [.., D]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class LlamaBlock(Layer):
    """Pre-RMSNorm: x = x + Attn(RMSNorm(x)) with RoPE on Q and K; x = x + SwiGLU(RMSNorm(x)).

    Reads from its config: hidden_size, intermediate_size, num_attention_heads, num_key_value_heads,
    head_dim, rms_norm_eps, attention_dropout, biases() (attention_bias, mlp_bias), layer_window(index)
    and, unless the model hands it its Rotary, rope_theta and rope_scaling."""

    def __init__(self, cfg: LlamaConfig, index: int = 0, rotary: Rotary | None = None):
        super().__init__()
        D, D_ff = cfg.hidden_size, cfg.intermediate_size
        qkv_bias, output_bias, ffn_bias = cfg.biases()
        self.attn_norm = RMSNorm(D, cfg.rms_norm_eps)
        self.attn = MultiHeadAttention(D, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
                                       qkv_bias=qkv_bias, output_bias=output_bias, dropout=cfg.attention_dropout,
                                       scope=f"layer{index}.attn")
        self.rotary = rotary or Rotary(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)  # the model's blocks share one
        self.ffn_norm = RMSNorm(D, cfg.rms_norm_eps)
        self.ffn_in = Linear(D, 2 * D_ff, ffn_bias)  # x -> [gate | up], one product
        self.ffn_out = Linear(D_ff, D, ffn_bias)  # down
        self.sliding_window = cfg.layer_window(index)  # W or None: the layer loop masks by it (core/layer.py)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """SwiGLU, position-wise: [B, N, D] -> gate, up [B, N, D_ff] -> down(silu(gate) * up) [B, N, D]."""
        gate, up = self.ffn_in(x).chunk(2, dim=-1)  # [B, N, D_ff] each
        return self.ffn_out(F.silu(gate) * up)  # [B, N, D]

    def forward(self, x, *, keep=None, prefix=None, gated=None, positions=None, need_weights=False, use_cache=False):
        a = self.attn(self.attn_norm(x), keep=keep, prefix=prefix, gated=gated, positions=positions,
                      rotary=self.rotary, need_weights=need_weights, use_cache=use_cache)
        x = x + a.out  # [B, N, D]
        x = x + self.feed_forward(self.ffn_norm(x))  # [B, N, D]
        return LayerOutput(x, a.probs, a.present)

    def kv_from_hidden(self, h, positions=None):
        """The keys and values this block makes of hidden rows h [1, P, D] at `positions` [1, P]:
        RMSNorm, W_K / W_V, then RoPE on the keys (a hidden-state prompt row is turned like any row)."""
        _, k, v = self.attn.project(self.attn_norm(h), positions, self.rotary)  # Q is unused
        return k, v  # [1, H_kv, P, d] each

    def project_kv(self, h):
        _, k, v = self.attn.project(h)  # W_K h, W_V h as they are: no RMSNorm, no RoPE
        return k, v  # [1, H_kv, P, d] each


# --- checkpoints: HF LlamaForCausalLM <-> ours (the model's class methods below) -------------------

IGNORED = [
    (r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq|rotary_emb\.inv_freq",
     "RoPE frequencies, recomputed from rope_theta (older checkpoints saved them)"),
    (r"lm_head\.weight", "tied to embed_tokens.weight (checked equal)"),
]
# config.json fields that would make this decoder compute something else: refused by name
UNSUPPORTED = {
    "hidden_act": ("silu", "SwiGLU with SiLU"),
    "pretraining_tp": (1, "the plain (not tensor-parallel-sliced) projections"),
}


class LlamaDecoder(HFModel, CausalLM):
    config_class = LlamaConfig  # what it is built from (and what from_pretrained expects)
    block_class = LlamaBlock  # what each of the L layers is: a variant with another block names it here
    hf_architecture, hf_prefix, hf_ignored = "LlamaForCausalLM", "model.", IGNORED
    position_style = "rotary"

    def __init__(self, config: LlamaConfig, prompt=None):
        if not isinstance(config, self.config_class):
            raise InputTypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got "
                                 f"{type(config).__name__}")
        super().__init__(config)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)  # HF: embed_tokens
        self.rotary = Rotary(config.head_dim, config.rope_theta, config.rope_scaling)  # no weights: RoPE is a formula
        self.layers = nn.ModuleList(self.block_class(config, i, self.rotary) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # An LM head of its own [V, D], or none: tied models read logits off the embeddings.
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size,
                                                                        bias=False)
        if prompt is not None:
            self.attach(prompt)

    # --- the interface (core/transformer.py, core/causal_lm.py) -------------------------------
    def input_embeddings(self) -> nn.Embedding:
        return self.tok_embeddings

    def embed_tokens(self, input_ids, positions):
        return self.tok_embeddings(input_ids)  # [B, N, D]: no position vector, RoPE acts in attention

    def rotate(self, t, positions):
        return self.rotary(t, positions)  # [B, H_kv, P, d]: a K/V prefix's keys turned to their positions

    def final_norm(self, h):
        return self.norm(h)

    def lm_head_weight(self):
        return self.tok_embeddings.weight if self.lm_head is None else self.lm_head.weight  # [V, D]

    # --- checkpoints: HF LlamaForCausalLM <-> ours (models/hf_model.py) --------------------------
    @classmethod
    def checkpoint_keys(cls, cfg: LlamaConfig) -> list[Key]:
        """Every tensor of ours and where HF's LlamaForCausalLM keeps it (nn.Linear [out, in]:
        transposed; q/k/v fused into qkv, gate/up into ffn_in), biases where cfg.biases() has them."""
        H, H_kv, d, D_ff = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size
        qkv_bias, output_bias, ffn_bias = cfg.biases()
        table = [Key("tok_embeddings.weight", ("embed_tokens.weight",)), Key("norm.weight", ("norm.weight",))]
        if not cfg.tie_word_embeddings:
            table.append(Key("lm_head.weight", ("lm_head.weight",)))  # [V, D] in both (a torch nn.Linear)
        for i in range(cfg.num_hidden_layers):
            hf, ours = f"layers.{i}.", f"layers.{i}."
            table += [Key(ours + "attn_norm.weight", (hf + "input_layernorm.weight",)),
                      Key(ours + "ffn_norm.weight", (hf + "post_attention_layernorm.weight",))]
            table += [Key(ours + f"attn.qkv.{w}", tuple(hf + f"self_attn.{n}_proj.{w}" for n in "qkv"),
                          transpose=True, sizes=(H * d, H_kv * d, H_kv * d)) for w in _with_bias(qkv_bias)]
            table += [Key(ours + f"attn.output.{w}", (hf + f"self_attn.o_proj.{w}",), transpose=True)
                      for w in _with_bias(output_bias)]
            for w in _with_bias(ffn_bias):
                table += [Key(ours + f"ffn_in.{w}", (hf + f"mlp.gate_proj.{w}", hf + f"mlp.up_proj.{w}"),
                              transpose=True, sizes=(D_ff, D_ff)),
                          Key(ours + f"ffn_out.{w}", (hf + f"mlp.down_proj.{w}",), transpose=True)]
        return table

    @classmethod
    def state_from_hf(cls, sd: dict, cfg: LlamaConfig, source: str = "the weights") -> dict:
        if cfg.tie_word_embeddings:
            head, emb = sd.get("lm_head.weight"), sd.get("model.embed_tokens.weight", sd.get("embed_tokens.weight"))
            if head is not None and emb is not None and not torch.equal(head, emb):
                raise InputError(f"{source}: tie_word_embeddings is true but lm_head.weight differs from "
                                 f"embed_tokens.weight")
            ignored = IGNORED
        else:
            ignored = IGNORED[:1]  # an untied head is a weight of its own: it must be there
        return to_ours(sd, cls.checkpoint_keys(cfg), (cls.hf_prefix,), ignored, source)

    @classmethod
    def state_to_hf(cls, state: dict, cfg: LlamaConfig) -> dict:
        table = cls.checkpoint_keys(cfg)
        out = to_hf(state, [k for k in table if k.ours != "lm_head.weight"], prefix=cls.hf_prefix)
        if not cfg.tie_word_embeddings:
            out["lm_head.weight"] = state["lm_head.weight"].contiguous()
        return out

    @classmethod
    def config_from_hf(cls, hf: dict, source="config.json") -> LlamaConfig:
        """A HuggingFace config.json -> our config (cls.config_class); refuse what this decoder would
        compute differently."""
        for field, (want, what) in UNSUPPORTED.items():
            if hf.get(field, want) != want:
                raise InputError(f"{source}: {field}={hf[field]!r} is not supported: this decoder implements "
                                 f"{what} ({field}={want!r})")
        theta, scaling = rope_from_hf(hf, source)  # every spelling transformers reads, or refused (rope.py)
        return build(cls.config_class, {**hf, **token_ids(hf), "rope_theta": theta, "rope_scaling": scaling}, source,
                     read=(*UNSUPPORTED, *ROPE_FIELDS))

    @classmethod
    def config_to_hf(cls, cfg: LlamaConfig) -> dict:
        dropped = ("model_type", "rope_theta", "rope_scaling", *(("attention_bias", "mlp_bias") if cfg.fixed_biases else ()))
        fields = {k: v for k, v in cfg.to_dict().items() if k not in dropped}
        rope = {"rope_type": "default", **(cfg.rope_scaling or {}), "rope_theta": cfg.rope_theta}
        return {"model_type": cfg.model_type, "architectures": [cls.hf_architecture], "hidden_act": "silu",
                "rope_parameters": rope, **fields}

    @classmethod
    def peft_adaption_prompt(cls, cfg: LlamaConfig) -> AdaptionPromptKeys:
        """PEFT's adaption prompt on LlamaForCausalLM (and MistralForCausalLM, read the same way):
        k_proj and v_proj on the rows as they are (no RMSNorm, no RoPE), and the gated read through
        o_proj, as the paper does: join="context". Refused where PEFT computes something else: with an
        output bias it applies o_proj, bias and all, to its read, so b_O is added twice (even at gate 0);
        with head_dim * H != D its K/V heads come out wrong (it takes H_kv as H divided by D / (H_kv d))."""
        H, d, D = cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size
        if cfg.biases()[1]:
            raise InputError(f"PEFT's adaption prompt on {cfg.model_type} passes its read through o_proj with o_proj's "
                             f"bias, so with attention_bias=true it adds that bias a second time: not the same model")
        if H * d != D:
            raise InputError(f"PEFT's adaption prompt on {cfg.model_type} assumes H*d = D, here {H}*{d} != {D}")
        return AdaptionPromptKeys("model.layers.{i}.self_attn", "self_attn", join="context")


def _with_bias(bias: bool) -> tuple[str, ...]:
    return ("weight", "bias") if bias else ("weight",)


Model = LlamaDecoder  # what the registry (models/__init__.py) builds
