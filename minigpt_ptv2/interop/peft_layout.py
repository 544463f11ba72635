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

An adaption prompt (LLaMA-Adapter) is stored per adapted layer, the top `adapter_layers`:

    ADAPTION_PROMPT  base_model.model.<layer i's attention>.adaption_prompt [1, P, D]
                     base_model.model.<layer i's attention>.adaption_gate   [1]
                     config: adapter_len (P), adapter_layers, target_modules

exactly our GatedPrefix's rows[j] and gates[j] (j counts the adapted layers from the lowest).
Where layer i's attention lives, and where PEFT adds the gated read, each architecture says
(models/<arch>.py, peft_adaption_prompt): "model.layers.{i}.self_attn" on LLaMA, read through
o_proj; "transformer.h.{i}.attn" on GPT-2, added after c_proj. BERT has none in PEFT.

Export asks each method what it is (PromptMethod.to_peft), from what its hooks hand the model;
a method that does not say, or hands over more than the form holds, is refused by name:
    prefix, prefix-mlp   -> PREFIX_TUNING    the table (the MLP's output): exact
    deep, deep-mlp       -> PREFIX_TUNING    through the bridge (hidden_to_kv): exact for real tokens
    soft                 -> PROMPT_TUNING
    ptuning-mlp/-lstm    -> PROMPT_TUNING    the prompt encoder's output: exact
    gated                -> ADAPTION_PROMPT  rows and gates as they are (GPT-2, LLaMA): exact
    head-only, full      -> refused: there is no prompt to export
Import gives "prefix", "soft" or "gated" (an MLP cannot be recovered from its output).

Positions: PEFT's prompt-learning adapters move real tokens to P..P+N-1 (our positions=
"shifted"); its adaption prompt leaves them at 0..N-1 (our "real"). PEFT_POSITIONS says which.
"""
from __future__ import annotations

import torch

from ..errors import InputError
from ..models import architecture

PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PROMPT_KEY = "prompt_embeddings"
HEAD_PREFIX = "base_model.classifier."  # where PEFT keeps a SEQ_CLS / TOKEN_CLS classifier
ADAPTER_ROOT = "base_model.model."  # what PEFT puts before a module path in an adaption prompt's keys
PREFIX_TYPES = ("PREFIX_TUNING",)
PROMPT_TYPES = ("PROMPT_TUNING", "P_TUNING")  # both save the final [P, D] virtual tokens
ADAPTION_TYPES = ("ADAPTION_PROMPT",)
HEAD_TASK_TYPES = {"sequence": "SEQ_CLS", "token": "TOKEN_CLS"}
# where each kind of adapter puts the real tokens: "shifted" = P..P+N-1, "real" = 0..N-1
PEFT_POSITIONS = {**dict.fromkeys(PREFIX_TYPES + PROMPT_TYPES, "shifted"), **dict.fromkeys(ADAPTION_TYPES, "real")}


def prompt_to_peft(method, model=None) -> dict:
    """The method's PEFT form (PromptMethod.to_peft: {"peft_type": ..., its tensors}), asked in
    eval mode (no dropout on what is written) and without autograd.

    model: the model the method is attached to; deep hidden-state prompts (the bridge) and gated
    prefixes (their layers) need it.
    """
    was_training = method.training
    method.eval()
    try:
        with torch.no_grad():
            return method.to_peft(model)
    finally:
        method.train(was_training)


def adaption_prompt_keys(config, adapter_layers: int) -> tuple[list[str], str, str]:
    """(the tensor names PEFT's files hold for the top `adapter_layers` layers, in layer order,
    prompt then gate for each; PEFT's target_modules; where PEFT joins the read: core/prefix.py)."""
    keys = architecture(config.model_type).peft_adaption_prompt(config)  # or a refusal by name
    first = config.num_hidden_layers - adapter_layers
    names = [f"{ADAPTER_ROOT}{keys.attention.format(i=i)}.adaption_{t}"
             for i in range(first, config.num_hidden_layers) for t in ("prompt", "gate")]
    return names, keys.target_modules, keys.join


def adaption_prompt_tensors(form: dict, config) -> dict:
    """A gated prefix's form -> PEFT's adaption-prompt tensors, under the keys PEFT gives them in
    this architecture's HF model; refused where PEFT would read them otherwise than we do."""
    rows, gates = form["adaption_prompt"], form["adaption_gate"]  # [L_a, P, D], [L_a]
    names, _, join = adaption_prompt_keys(config, gates.shape[0])
    if form["join"] != join:
        raise InputError(f"this gated prefix adds its read at the {form['join']!r}, but PEFT's adaption prompt on "
                         f"{config.model_type} adds it at the {join!r} (core/prefix.py), so it would compute "
                         f"something else: build it with join={join!r}")
    values = [t for j in range(gates.shape[0]) for t in (rows[j][None], gates[j:j + 1])]  # [1, P, D], [1]
    return dict(zip(names, values))


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
                   base_model: str | None = None, adapter_layers: int | None = None) -> dict:
    """The adapter_config.json PEFT needs (it fills in the rest from the base model)."""
    if peft_type in ADAPTION_TYPES:
        _, target, _ = adaption_prompt_keys(config, adapter_layers)
        return {"peft_type": peft_type, "task_type": task_type, "adapter_len": P, "adapter_layers": adapter_layers,
                "target_modules": target, "inference_mode": True, "base_model_name_or_path": base_model}
    cfg = {"peft_type": peft_type, "task_type": task_type, "num_virtual_tokens": P,
           **{k: v for k, (v, _) in peft_dims(peft_type, config).items()}, "num_transformer_submodules": 1,
           "inference_mode": True, "base_model_name_or_path": base_model}
    if peft_type == "PREFIX_TUNING":
        cfg.update(prefix_projection=False, encoder_hidden_size=config.hidden_size)
    if head:
        cfg["modules_to_save"] = ["classifier"]
    return cfg


