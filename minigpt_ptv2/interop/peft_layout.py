"""What PEFT's adapter files hold, and each of our prompt methods in that form.

PEFT 0.21 stores a prompt-learning adapter as one tensor, "prompt_embeddings":

    PREFIX_TUNING  [P, L*2*D]  the K/V table, each row [K_0 | V_0 | K_1 | V_1 | ...] (head-major),
                               exactly our KVPrefix.embedding.weight; with an MLP, its output.
                               Under grouped K/V heads [P, L*2*H_kv*d]: PEFT then records
                               token_dim = H_kv*d and num_attention_heads = H_kv (peft_dims)
    PROMPT_TUNING  [P, D]      virtual-token embeddings prepended before the embedding block,
                               exactly our SoftPrompt.weight (P_TUNING adapters hold the same thing)

and, for the SEQ_CLS / TOKEN_CLS task types, the classifier trained next to the prompt:

    base_model.classifier.weight [C, D], base_model.classifier.bias [C]   (our head's Linear)

Export writes each method's inference form (what it computes once training is over):
    prefix, prefix-mlp   -> PREFIX_TUNING   the table (the MLP's output): exact
    deep, deep-mlp       -> PREFIX_TUNING   through the bridge (hidden_to_kv): exact for real tokens
    soft                 -> PROMPT_TUNING
    ptuning-mlp/-lstm    -> PROMPT_TUNING   the prompt encoder's output: exact
    head-only, full      -> refused: there is no prompt to export
Import always gives "prefix" or "soft" (an MLP cannot be recovered from its output).
"""
from __future__ import annotations

import torch

from ..errors import InputError
from ..prompts import DeepPrompt, KVPrefix, PTuningV1, SoftPrompt, hidden_to_kv

PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PROMPT_KEY = "prompt_embeddings"
HEAD_PREFIX = "base_model.classifier."  # where PEFT keeps a SEQ_CLS / TOKEN_CLS classifier
PREFIX_TYPES = ("PREFIX_TUNING",)
PROMPT_TYPES = ("PROMPT_TUNING", "P_TUNING")  # both save the final [P, D] virtual tokens
HEAD_TASK_TYPES = {"sequence": "SEQ_CLS", "token": "TOKEN_CLS"}


def prompt_to_peft(method, model=None) -> tuple[str, torch.Tensor]:
    """(peft_type, prompt_embeddings) for a prompt method, in its inference form.

    model: the model the method is attached to; only deep hidden-state prompts need it (the
    bridge turns them into K/V with that model's W_K, W_V).
    """
    with torch.no_grad():
        if isinstance(method, KVPrefix):
            return "PREFIX_TUNING", method.flat().detach()  # [P, L*2*D]
        if isinstance(method, DeepPrompt):
            if model is None:
                raise InputError("exporting a deep hidden-state prompt needs the model it runs in "
                                 "(its keys and values come from the model's W_K and W_V)")
            was_training = model.training
            model.eval()
            table = hidden_to_kv(model, method).flat().detach()  # [P, L*2*D]
            model.train(was_training)
            return "PREFIX_TUNING", table
        if isinstance(method, PTuningV1):
            return "PROMPT_TUNING", method.to_soft_prompt().weight.detach()  # [P, D]
        if isinstance(method, SoftPrompt):
            return "PROMPT_TUNING", method.weight.detach()  # [P, D]
    raise InputError(f"{type(method).__name__} has no PEFT adapter equivalent")


def peft_dims(peft_type: str, config) -> dict:
    """The sizes PEFT records for a model: {field: (value, our letter)}. A prefix lives in K/V
    space, so for prefix tuning PEFT counts key/value heads (H_kv, H_kv*d wide; D and H when
    there is no grouping); a prompt lives in the hidden states (D, H)."""
    if peft_type in PREFIX_TYPES:
        H_kv, d = config.num_key_value_heads, config.head_dim
        grouped = H_kv != config.num_attention_heads or H_kv * d != config.hidden_size
        return {"num_layers": (config.num_hidden_layers, "L"),
                "token_dim": (H_kv * d, "H_kv*d" if grouped else "D"),
                "num_attention_heads": (H_kv, "H_kv" if grouped else "H")}
    return {"num_layers": (config.num_hidden_layers, "L"), "token_dim": (config.hidden_size, "D"),
            "num_attention_heads": (config.num_attention_heads, "H")}


def adapter_config(peft_type: str, task_type: str, config, P: int, head: bool = False,
                   base_model: str | None = None) -> dict:
    """The adapter_config.json PEFT needs (it fills in the rest from the base model)."""
    cfg = {"peft_type": peft_type, "task_type": task_type, "num_virtual_tokens": P,
           **{k: v for k, (v, _) in peft_dims(peft_type, config).items()}, "num_transformer_submodules": 1,
           "inference_mode": True, "base_model_name_or_path": base_model}
    if peft_type == "PREFIX_TUNING":
        cfg.update(prefix_projection=False, encoder_hidden_size=config.hidden_size)
    if head:
        cfg["modules_to_save"] = ["classifier"]
    return cfg


