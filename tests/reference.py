"""Test-only reference harness: transformers + PEFT, and the facts our comparisons rely on.

The package never imports transformers or peft; the tests do, through this module. Every fact
below was established against transformers 5.23 and peft 0.21.2 and is pinned by
tests/test_reference_harness.py. Notation: B batch, N real tokens, P prompt/prefix length,
D hidden, L layers, H heads, d = D/H.

K/V layout of a PEFT prefix table (prefix tuning, prefix_projection=False)
    The trainable table is `prompt_encoder[name].embedding.weight`, shape [P, L*2*D]. PEFT does
    view(B, P, 2L, H, d) -> permute(2, 0, 3, 1, 4) -> [2L, B, H, P, d] -> split(2), giving L
    tensors [2, B, H, P, d]; index 0 is K, index 1 is V. So each row is laid out as
        [K_0 | V_0 | K_1 | V_1 | ... | K_{L-1} | V_{L-1}]   (each block D = H*d wide, head-major)
        table[p, (2*l + s)*D + h*d + j] = (K if s == 0 else V)[l][h, p, j]
    i.e. table.view(P, L, 2, H, d)[p, l, s, h, j]. Layers are NOT split into "all K, then all V".

a. Prefix tuning on BertModel (task_type FEATURE_EXTRACTION -> PeftModelForFeatureExtraction)
    - Works in transformers 5.23: BertModel.forward takes `past_key_values: Cache` even when
      is_decoder=False (use_cache is forced off, but every BertSelfAttention still calls
      cache.update(k, v), i.e. cat(prefix, new) along the sequence axis). The cache must be a
      `DynamicCache` (PEFT builds `DynamicCache([(K_l, V_l) for l in range(L)])`, each [B, H, P, d]);
      a legacy tuple of tuples fails ('tuple' object has no attribute 'get_seq_length'). The
      cache is mutated by the forward (its length becomes P+N), so build a fresh one per call.
    - Real tokens get positions P..P+N-1 (BertEmbeddings uses past_key_values_length = P). A
      `position_ids` passed to PEFT is shifted by +P as well, so PEFT cannot give 0..N-1; plain
      BertModel with the same cache and position_ids=arange(N) can (run_hf_bert_prefix).
      Consequence: N <= 512 - P, else a RuntimeError from the token-type buffer expand.
    - token_type_ids are dropped by PEFT (UserWarning "Token type ids are not supported ...");
      every real token gets token-type row 0.
    - attention_mask: PEFT prepends torch.ones(B, P) (float) to the given [B, N] mask -> [B, P+N];
      the prefix is never masked. With attention_mask=None nothing is built (all attend).
    - Output last_hidden_state is [B, N, D] (real rows only); pooler_output pools row 0 = [CLS].
b. Prompt tuning on BertModel (FEATURE_EXTRACTION)
    - inputs_embeds = cat(prompt [P, D] expanded to B, word_embeddings(input_ids)) is handed to
      BertModel as inputs_embeds, so the prompt rows go through the embedding block like words:
      LN(row + token_type_emb[0] + pos_emb[i]) with positions 0..P-1 for virtual and P..P+N-1 for
      real tokens. token_type_ids dropped (all 0); position_ids dropped with a warning.
    - Mask: ones(B, P) prepended. last_hidden_state is [B, P+N, D]: rows [:, :P] are the virtual
      tokens, real rows are [:, P:]; pooler_output pools row 0, a virtual token (not [CLS]).
c. GPT2LMHeadModel (task_type CAUSAL_LM -> PeftModelForCausalLM)
    - Prefix: positions P..P+N-1 in forward (GPT-2 uses arange(N) + cache length; left padding is
      not taken into account by a plain forward). Logits [B, N, V]. generate() works: it returns
      [B, N + new] (prompt + new tokens, no virtual tokens); the first step uses positions
      P + (cumsum(mask) - 1) (so left padding is handled), later steps continue from there, and
      greedy generate equals a full-recompute greedy loop over the PEFT forward.
    - Prompt: logits [B, P+N, V] (rows [:, :P] belong to the virtual tokens); positions 0..P+N-1
      over [prompt, input] (position_ids are dropped, so left padding shifts real positions and
      left-padded prompt-tuning generation is NOT pad-invariant). generate() works and returns
      [B, N + new] (the virtual tokens are not in the output).
    - HF generate stops at the model's eos unless eos_token_id=None is passed explicitly (a
      GenerationConfig with eos_token_id=None does not help: the model's eos is merged back in).
      Rows that finished early are filled with pad_token_id.
d. Saved adapters: save_pretrained(dir) writes adapter_config.json, adapter_model.safetensors
    (and a README.md). The safetensors file has ONE tensor, key "prompt_embeddings":
      prefix tuning  [P, L*2*D] float32, the K/V table above (with prefix_projection=True it is the
                     MLP *output*, same shape, and loads into an inference-mode embedding)
      prompt tuning  [P, D] float32, the virtual-token embeddings
    Minimal adapter_config.json that PeftModel.from_pretrained(base, dir) loads offline:
      {"peft_type": "PREFIX_TUNING" | "PROMPT_TUNING", "task_type": "FEATURE_EXTRACTION" |
       "CAUSAL_LM", "num_virtual_tokens": P}
    num_layers, token_dim, num_attention_heads are filled in from the base config;
    base_model_name_or_path may be absent or null (the base is passed in); inference_mode
    defaults to true; safetensors metadata is optional. Without "task_type" the load succeeds
    but yields a bare PeftModel whose forward silently ignores the prompt. Missing "peft_type"
    -> KeyError; missing num_virtual_tokens -> TypeError; wrong key -> KeyError 'prompt_embeddings';
    wrong shape -> size mismatch RuntimeError.
e. GPT-2 prefix cache: a DynamicCache with L layers, K and V each [B, H, P, d]; the forward
    returns it grown to P+N. The [B, P] ones mask is prepended in forward and at every generate step.
f. LlamaForCausalLM with grouped K/V heads (H_kv < H), CAUSAL_LM
    - Prefix tuning: PEFT sets num_attention_heads = H_kv and token_dim = H_kv*d from the base
      config, so prompt_embeddings is [P, L*2*H_kv*d], laid out as in a. with H_kv heads; the
      DynamicCache holds K and V [B, H_kv, P, d] per layer.
    - The prefix keys are used as given: LlamaAttention turns only the new keys by RoPE before
      cache.update, so a prefix key is never rotated (it scores like a key at position 0). Real
      tokens sit at P..P+N-1 (arange + the cache length P) in forward; generate() counts from
      the attention mask, so a left-padded row generates what it generates alone.
    - Prompt tuning: logits [B, P+N, V]; in forward every row numbers [prompt, input] 0..P+N-1.
      In generate(), a left-padded row does NOT generate what it generates alone (its padding
      changes the distance between its real tokens and the virtual ones).
g. Adaption prompt (LLaMA-Adapter; AdaptionPromptConfig(adapter_len=P, adapter_layers=L_a),
   CAUSAL_LM) on LlamaForCausalLM and GPT2LMHeadModel (peft/tuners/adaption_prompt/):
    - Only the TOP L_a attention modules are wrapped; each holds adaption_prompt [1, P, D]
      (drawn from N(0, 1)) and adaption_gate [1] (zeros).
    - Keys and values are the attention's raw projection of adaption_prompt: k_proj / v_proj on
      LLaMA, c_attn's K and V columns on GPT-2, biases included; no input norm (no RMSNorm, no
      ln_1) and no RoPE on those keys. The queries are the layer's own, rotated on LLaMA.
    - scores = q K_p^T / sqrt(d) over the P keys alone (no mask), softmax in float32, then
      multiplied by the gate: the gate scales the probabilities, which then weigh V_p.
    - LLaMA: that read [B, N, H*d] goes through o_proj (bias included, when attention_bias is
      set: then b_O is added twice, and a fresh adapter is not the frozen model) and is added to
      the attention's output. GPT-2 (o_proj_layer None): it is added AFTER c_proj, unprojected.
    - Real tokens keep their positions: forward numbers them 0..N-1 (arange, pads included, as
      without an adapter); generate() counts real tokens from the attention mask.
    - save_pretrained writes adaption_prompt / adaption_gate of each adapted layer under
      "base_model.model.<module path>.", e.g. base_model.model.model.layers.2.self_attn.adaption_gate
      (LLaMA) or base_model.model.transformer.h.2.attn.adaption_prompt (GPT-2); adapter_config.json
      holds peft_type ADAPTION_PROMPT, adapter_len, adapter_layers, target_modules.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from peft import (AdaptionPromptConfig, PeftModel, PrefixTuningConfig, PromptTuningConfig,  # noqa: E402
                  PromptTuningInit, TaskType, get_peft_model)
from transformers import (BertModel, DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig,  # noqa: E402
                          LlamaForCausalLM)

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

TINY_GPT2 = dict(vocab_size=130, n_embd=24, n_layer=3, n_head=4, n_positions=64)
# minigpt_ptv2's llama-tiny preset: H=4 query heads share H_kv=2 key/value heads, d=10, untied head.
TINY_LLAMA = dict(vocab_size=140, hidden_size=40, intermediate_size=72, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)


@contextlib.contextmanager
def _quiet():
    """Silence PEFT's 'token type / position ids ignored' and transformers' deprecation chatter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------- base models

@functools.lru_cache(maxsize=2)
def _load_bert(model_dir: str) -> BertModel:
    with _quiet():
        return BertModel.from_pretrained(model_dir).eval()


def hf_bert(model_dir=None) -> BertModel:
    """A fresh transformers BertModel from a HF folder (default: the shipped MiniLM), eval mode.
    Loaded once per folder, then copied, so wrapping it with PEFT never touches another test's model."""
    if model_dir is None:
        from minigpt_ptv2.pretrained import default_model_dir
        model_dir = default_model_dir()
    return copy.deepcopy(_load_bert(str(model_dir)))


def hf_gpt2_tiny(tmpdir, seed: int = 0, **overrides) -> tuple[GPT2LMHeadModel, Path]:
    """Random tiny GPT2LMHeadModel (TINY_GPT2 config, `overrides` on top), saved to tmpdir and
    reloaded from there. initializer_range=0.3 gives less repetitive greedy text than 0.02."""
    torch.manual_seed(seed)
    path = Path(tmpdir)
    GPT2LMHeadModel(GPT2Config(**{**TINY_GPT2, **overrides})).save_pretrained(path)
    return hf_gpt2(path), path


def hf_gpt2(model_dir) -> GPT2LMHeadModel:
    """transformers GPT2LMHeadModel from a save_pretrained folder, eval mode."""
    with _quiet():
        return GPT2LMHeadModel.from_pretrained(str(model_dir)).eval()


def hf_llama_tiny(tmpdir, seed: int = 0, **overrides) -> tuple[LlamaForCausalLM, Path]:
    """Random tiny LlamaForCausalLM (TINY_LLAMA, `overrides` on top), saved to tmpdir and reloaded."""
    torch.manual_seed(seed)
    path = Path(tmpdir)
    LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **overrides})).save_pretrained(path)
    return hf_llama(path), path


def hf_llama(model_dir) -> LlamaForCausalLM:
    """transformers LlamaForCausalLM from a save_pretrained folder, eval mode, eager attention
    (so output_attentions returns the probabilities)."""
    with _quiet():
        return LlamaForCausalLM.from_pretrained(str(model_dir), attn_implementation="eager").eval()


def _task_type(base) -> TaskType:
    return TaskType.CAUSAL_LM if base.can_generate() else TaskType.FEATURE_EXTRACTION


# ---------------------------------------------------------------- PEFT models with given values

def _set_table(peft_model, values: torch.Tensor):
    weight = peft_model.prompt_encoder["default"].embedding.weight  # [P, L*2*D] or [P, D]
    if tuple(values.shape) != tuple(weight.shape):
        raise ValueError(f"shape mismatch: given {list(values.shape)}, PEFT expects {list(weight.shape)}")
    with torch.no_grad():
        weight.copy_(values)
    return peft_model.eval()


def peft_prefix_model(base, P: int, prompt_embeddings: torch.Tensor):
    """PEFT prefix tuning (prefix_projection=False) holding exactly prompt_embeddings [P, L*2*D].
    `base` is wrapped in place: pass a fresh model."""
    cfg = PrefixTuningConfig(task_type=_task_type(base), num_virtual_tokens=P, prefix_projection=False)
    with _quiet():
        return _set_table(get_peft_model(base, cfg), prompt_embeddings)


def peft_prompt_model(base, P: int, prompt: torch.Tensor):
    """PEFT prompt tuning (random init, then overwritten) with virtual-token embeddings prompt [P, D]."""
    cfg = PromptTuningConfig(task_type=_task_type(base), num_virtual_tokens=P,
                             prompt_tuning_init=PromptTuningInit.RANDOM)
    with _quiet():
        return _set_table(get_peft_model(base, cfg), prompt)


def peft_adaption_model(base, P: int, rows: torch.Tensor, gates: torch.Tensor):
    """PEFT's adaption prompt on the top rows.shape[0] layers of `base`, holding exactly rows
    [L_a, P, D] (adaption_prompt, lowest adapted layer first) and gates [L_a] (adaption_gate).
    `base` is wrapped in place: pass a fresh model."""
    cfg = AdaptionPromptConfig(adapter_len=P, adapter_layers=rows.shape[0], task_type=TaskType.CAUSAL_LM)
    with _quiet():
        pm = get_peft_model(base, cfg)
    prompts = [p for n, p in pm.named_parameters() if n.endswith("adaption_prompt")]  # layer order
    gate_params = [p for n, p in pm.named_parameters() if n.endswith("adaption_gate")]
    if len(prompts) != rows.shape[0] or tuple(prompts[0].shape) != (1, *rows.shape[1:]):
        raise ValueError(f"shape mismatch: given {list(rows.shape)}, PEFT holds {len(prompts)} x "
                         f"{list(prompts[0].shape)}")
    with torch.no_grad():
        for j, (p, g) in enumerate(zip(prompts, gate_params)):
            p.copy_(rows[j][None])
            g.copy_(gates[j:j + 1])
    return pm.eval()


def load_peft_adapter(base, adapter_dir):
    """PeftModel.from_pretrained(base, adapter_dir), offline, eval mode."""
    with _quiet():
        return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def is_prompt_tuning(peft_model) -> bool:
    return peft_model.active_peft_config.peft_type == "PROMPT_TUNING"


# ---------------------------------------------------------------- the K/V layout

def peft_kv_layout(prompt_embeddings: torch.Tensor, L: int, H: int, d: int):
    """[P, L*2*D] -> L pairs (K, V), each [H, P, d]: exactly PEFT's get_prompt interleaving."""
    P = prompt_embeddings.shape[0]
    t = prompt_embeddings.view(P, L, 2, H, d).permute(1, 2, 3, 0, 4)  # [L, 2, H, P, d]
    return [(t[l, 0], t[l, 1]) for l in range(L)]


def kv_to_peft_layout(kv) -> torch.Tensor:
    """Inverse of peft_kv_layout: L pairs (K, V) each [H, P, d] -> [P, L*2*D]."""
    t = torch.stack([torch.stack([k, v]) for k, v in kv])  # [L, 2, H, P, d]
    L, _, H, P, d = t.shape
    return t.permute(3, 0, 1, 2, 4).reshape(P, L * 2 * H * d)  # [P, L*2*D]


def prefix_cache(kv, B: int) -> DynamicCache:
    """A fresh DynamicCache holding the prefix for a batch of B (K, V each [B, H, P, d])."""
    return DynamicCache([(k.expand(B, -1, -1, -1).clone(), v.expand(B, -1, -1, -1).clone()) for k, v in kv])


def run_hf_bert_prefix(model: BertModel, input_ids, kv, attention_mask=None, token_type_ids=None,
                       position_ids=None) -> torch.Tensor:
    """Plain transformers BertModel with a K/V prefix as past_key_values -> [B, N, D].
    position_ids=None gives PEFT's P..P+N-1; pass arange(N) for the 'real tokens keep 0..N-1' policy."""
    B, N = input_ids.shape
    P = kv[0][0].shape[-2]
    mask = torch.ones(B, N, dtype=torch.long) if attention_mask is None else attention_mask
    mask = torch.cat([torch.ones(B, P, dtype=mask.dtype), mask], dim=1)  # [B, P+N]
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type_ids,
                     position_ids=position_ids, past_key_values=prefix_cache(kv, B)).last_hidden_state


# ---------------------------------------------------------------- PEFT forwards used by comparisons

def run_peft_bert(peft_model, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
    """last_hidden_state of the real tokens, [B, N, D]. Prefix tuning returns N rows; prompt tuning
    returns P+N and the first P (virtual) rows are sliced off. token_type_ids are ignored by PEFT."""
    with torch.no_grad(), _quiet():
        h = peft_model(input_ids=input_ids, attention_mask=attention_mask,
                       token_type_ids=token_type_ids).last_hidden_state
    return h[:, -input_ids.shape[1]:] if is_prompt_tuning(peft_model) else h


def run_peft_lm_logits(peft_model, input_ids, attention_mask=None) -> torch.Tensor:
    """Logits of the real tokens, [B, N, V] (prompt tuning's P virtual rows sliced off)."""
    with torch.no_grad(), _quiet():
        logits = peft_model(input_ids=input_ids, attention_mask=attention_mask).logits
    return logits[:, -input_ids.shape[1]:] if is_prompt_tuning(peft_model) else logits


def peft_generate(peft_model, input_ids, attention_mask=None, max_new_tokens: int = 10,
                  eos_token_id: int | None = None) -> torch.Tensor:
    """Greedy PEFT generate -> [B, N + new] (prompt + new tokens), like minigpt_ptv2.generate:
    eos_token_id=None never stops early; otherwise finished rows are filled with eos."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    pad = 0 if eos_token_id is None else eos_token_id
    with torch.no_grad(), _quiet():
        return peft_model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                   max_new_tokens=max_new_tokens, do_sample=False,
                                   eos_token_id=eos_token_id, pad_token_id=pad)
