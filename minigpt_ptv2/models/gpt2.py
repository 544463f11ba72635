"""GPT-2: a pre-LayerNorm decoder with learned positions, tanh GELU and an LM head tied to the
token embedding.

    input_ids [B, N] -> wte + wpe [B, N, D] -> L x GPT2Block -> ln_f -> logits [B, N, V]

This module holds all of GPT-2: its config, its blocks, its model, and its checkpoint converter
both ways (HF `GPT2LMHeadModel` folders in, `save_pretrained` folders out). Logits, the loss,
the KV cache and generation are shared by every decoder (core/causal_lm.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.attention import MultiHeadAttention
from ..core.causal_lm import CausalLM
from ..core.config import DecoderConfig, check_fields
from ..core.layer import Layer, LayerOutput
from ..core.linear import Linear
from ..errors import InputError, InputTypeError
from .hf_config import build, token_ids
from .hf_model import HFModel
from .keymap import AdaptionPromptKeys, Key


@dataclass(frozen=True)
class GPT2Config(DecoderConfig):
    """GPT-2 small by default (D=768, L=12, H=12, V=50257); LayerNorm eps 1e-5, tanh GELU; bos and
    eos <|endoftext|> (transformers' GPT2Config defaults)."""
    vocab_size: int = 50257
    max_position_embeddings: int = 1024
    intermediate_size: int = 3072  # GPT-2's n_inner (4 * D when null in its config)
    layer_norm_eps: float = 1e-5
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    bos_token_id: int | None = 50256
    eos_token_id: int | tuple[int, ...] | None = 50256

    model_type = "gpt2"
    field_kinds = {"layer_norm_eps": "positive", "hidden_dropout_prob": "probability",
                   "attention_probs_dropout_prob": "probability"}


class GPT2Block(Layer):
    """Pre-LN: x = x + Attn(LN1(x)); x = x + FFN(LN2(x))."""

    def __init__(self, cfg: GPT2Config, index: int = 0):
        super().__init__()
        D = cfg.hidden_size
        self.ln_1 = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.attn = MultiHeadAttention(D, cfg.num_attention_heads, dropout=cfg.attention_probs_dropout_prob,
                                       scope=f"layer{index}.attn")
        self.ln_2 = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.ffn_in = Linear(D, cfg.intermediate_size)
        self.ffn_out = Linear(cfg.intermediate_size, D)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Position-wise: [B, N, D] -> [B, N, D_ff] -> [B, N, D], every token on its own; tanh GELU."""
        return self.ffn_out(F.gelu(self.ffn_in(x), approximate="tanh"))

    def forward(self, x, *, keep=None, prefix=None, gated=None, positions=None, need_weights=False, use_cache=False):
        a = self.attn(self.ln_1(x), keep=keep, prefix=prefix, gated=gated, need_weights=need_weights,
                      use_cache=use_cache)
        x = x + self.dropout(a.out)  # [B, N, D]
        x = x + self.dropout(self.feed_forward(self.ln_2(x)))  # [B, N, D]
        return LayerOutput(x, a.probs, a.present)

    def kv_from_hidden(self, h, positions=None):
        _, k, v = self.attn.project(self.ln_1(h))  # pre-LN: the layer reads LN1(h); Q is unused
        return k, v  # [1, H, P, d] each

    def project_kv(self, h):
        _, k, v = self.attn.project(h)  # c_attn's K and V columns on h as it is: no ln_1
        return k, v  # [1, H, P, d] each


# --- checkpoints: HF GPT2LMHeadModel <-> ours (the model's class methods below) ---------------------

IGNORED = [
    (r"h\.\d+\.attn\.(bias|masked_bias)", "an old causal-mask buffer; the mask is built on the fly"),
    (r"lm_head\.weight", "tied to wte.weight (checked equal)"),
]
# GPT-2 configs name the same things differently; this is the whole translation table.
HF_NAMES = {
    "n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
    "n_positions": "max_position_embeddings", "layer_norm_epsilon": "layer_norm_eps",
    "resid_pdrop": "hidden_dropout_prob", "attn_pdrop": "attention_probs_dropout_prob",
    "n_inner": "intermediate_size",
}
# config.json fields checked in config_from_hf (tie_word_embeddings: in the weights, by state_from_hf),
# and those this decoder reads nowhere, with why
CHECKED = ("activation_function", "scale_attn_by_inverse_layer_idx", "scale_attn_weights", "tie_word_embeddings",
           "embd_pdrop")
NOT_READ = {
    "n_ctx": "an older name of n_positions, which transformers no longer reads",
    "reorder_and_upcast_attn": "scores in float32 before the softmax: how ours always computes them",
    "add_cross_attention": "cross-attention layers, unused without encoder states (their weights would be refused)",
    **dict.fromkeys(("summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels",
                     "summary_first_dropout"), "GPT2DoubleHeadsModel's classification head"),
}


class GPT2Decoder(HFModel, CausalLM):
    config_class = GPT2Config  # what it is built from (and what from_pretrained expects)
    block_class = GPT2Block  # what each of the L layers is
    hf_architecture, hf_prefix, hf_ignored = "GPT2LMHeadModel", "transformer.", IGNORED

    def __init__(self, config: GPT2Config, prompt=None):
        if not isinstance(config, self.config_class):
            raise InputTypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got "
                                 f"{type(config).__name__}")
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.drop = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList(self.block_class(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if prompt is not None:
            self.attach(prompt)

    # --- the interface (core/transformer.py, core/causal_lm.py) -------------------------------
    def input_embeddings(self) -> nn.Embedding:
        return self.wte

    def embed_tokens(self, input_ids, positions):
        return self.wte(input_ids) + self.wpe(positions)  # [B, N, D]

    def shallow_rows(self, prompt, positions):
        """Under positions="shifted" the prompt rows take positions 0..P-1 (as in PEFT); else none."""
        return prompt if positions is None else prompt + self.wpe(positions)  # [B, P, D]

    def embed_finish(self, x):
        return self.drop(x)

    def final_norm(self, h):
        return self.ln_f(h)

    def lm_head_weight(self):
        return self.wte.weight  # [V, D]: tied

    # --- checkpoints: HF GPT2LMHeadModel <-> ours (models/hf_model.py) ---------------------------
    @classmethod
    def checkpoint_keys(cls, cfg: GPT2Config) -> list[Key]:
        """Every tensor of ours and where HF's GPT-2 keeps it: Conv1D is [in, out] like ours, so no
        transposes, and c_attn already is [W_Q | W_K | W_V]."""
        table = [Key(n, (n,)) for n in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")]
        for i in range(cfg.num_hidden_layers):
            for w in ("weight", "bias"):
                table += [Key(f"layers.{i}.{ours}.{w}", (f"h.{i}.{hf}.{w}",)) for ours, hf in (
                    ("ln_1", "ln_1"), ("ln_2", "ln_2"), ("attn.qkv", "attn.c_attn"), ("attn.output", "attn.c_proj"),
                    ("ffn_in", "mlp.c_fc"), ("ffn_out", "mlp.c_proj"))]
        return table

    @classmethod
    def state_from_hf(cls, sd: dict, cfg: GPT2Config, source: str = "the weights") -> dict:
        head, wte = sd.get("lm_head.weight"), sd.get("transformer.wte.weight", sd.get("wte.weight"))
        if head is not None and wte is not None and not torch.equal(head, wte):
            raise InputError(f"{source}: lm_head.weight differs from wte.weight: only tied LM heads are supported")
        return super().state_from_hf(sd, cfg, source)

    @classmethod
    def config_from_hf(cls, hf: dict, source="config.json") -> GPT2Config:
        """A HuggingFace GPT-2 config.json -> GPT2Config; refuse what this decoder would compute differently."""
        kw = {**{HF_NAMES.get(k, k): v for k, v in hf.items()}, **token_ids(hf)}
        spelled = {ours: theirs for theirs, ours in HF_NAMES.items() if theirs in hf}
        if kw.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise InputError(f"{source}: GPT-2 configs must use the tanh GELU ('gelu_new'), got "
                             f"{kw['activation_function']!r}")
        if kw.get("scale_attn_by_inverse_layer_idx") or kw.get("scale_attn_weights") is False:
            raise InputError(f"{source}: GPT-2 configs that change the attention scaling (scale_attn_by_inverse_"
                             "layer_idx=True or scale_attn_weights=False) are not supported: scores use 1/sqrt(d)")
        if "embd_pdrop" in kw and kw["embd_pdrop"] != kw.get("hidden_dropout_prob", GPT2Config.hidden_dropout_prob):
            raise InputError(f"{source}: embd_pdrop={kw['embd_pdrop']!r} differs from resid_pdrop: this GPT-2 drops "
                             f"its embeddings and residuals at one rate (resid_pdrop)")
        if kw.get("intermediate_size") is None:  # n_inner null (or absent) means 4 * D
            D = kw.get("hidden_size", 768)
            check_fields(GPT2Config, {"hidden_size": D}, str(source), spelled)
            kw["intermediate_size"] = 4 * D
        return build(GPT2Config, kw, source, spelled, read=CHECKED + tuple(NOT_READ))

    @classmethod
    def config_to_hf(cls, cfg: GPT2Config) -> dict:
        ours_to_hf = {v: k for k, v in HF_NAMES.items()}
        return {"model_type": "gpt2", "architectures": [cls.hf_architecture], "activation_function": "gelu_new",
                "tie_word_embeddings": True, **{ours_to_hf.get(k, k): v for k, v in cfg.to_dict().items()
                                                if k != "model_type"}}

    @classmethod
    def peft_adaption_prompt(cls, cfg: GPT2Config) -> AdaptionPromptKeys:
        """PEFT's adaption prompt on GPT2LMHeadModel: keys and values from c_attn on the rows as they
        are (bias included, no ln_1), and the gated read added AFTER c_proj, unprojected (PEFT's GPT-2
        wrapper has no o_proj_layer): join="output"."""
        return AdaptionPromptKeys("transformer.h.{i}.attn", "attn", join="output")


Config, Model = GPT2Config, GPT2Decoder  # what the registry (models/__init__.py) builds
