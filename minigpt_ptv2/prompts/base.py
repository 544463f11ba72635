"""The seam between a frozen model and a prompt method.

A model consults its attached method at three places, and each hook answers None when the
method does not act there:

    input_prompt(B)   -> [B, P, D]           shallow: prepended to the input embeddings
    hidden_prompts(B) -> L x [B, P, D]       deep, hidden-state: inject, process, slice per layer
    kv_prefix(B)      -> L x (K, V) [B,H,P,d] deep, K/V: concatenated onto each layer's K and V

Every method computes its prompts once per forward and broadcasts them over the batch with
`expand` (a view), never `repeat` (B copies, and B times the MLP work if computed per row).

Dtype: a method's parameters keep the dtype it was built in (float32) or explicitly moved to
with `model.to(...)`; autocast never touches them, so they train in float32 under bf16/fp16
autocast. Each hook returns its prompt in that same dtype, even when an inner MLP ran in
autocast's lower precision. The prompt meets the compute dtype in one place only: under
autocast, `attention.concat_prefix` casts a K/V prefix to the keys' dtype. Anywhere else a
mismatch is an error (`check_tensor`), never a silent cast.
"""
from __future__ import annotations

import torch
from torch import nn

from ..catalog import POSITIONS  # ("real", "shifted")
from ..errors import InputError, InputTypeError



class PromptMethod(nn.Module):
    """Base class: holds P, the position policy and an optional mask over the P virtual entries.

    positions="real" (default): real tokens keep positions 0..N-1 whatever P is.
    positions="shifted": the HuggingFace/PEFT convention, real tokens at P..P+N-1 (the
    position table then holds only max_positions - P real tokens).
    """

    kind = "none"  # "input" | "hidden" | "kv": where the method acts, for reports and traces

    def __init__(self, config, num_virtual: int, positions: str = "real"):
        super().__init__()
        if not isinstance(num_virtual, int) or num_virtual <= 0:
            raise InputError(f"num_virtual (P) must be a positive int, got {num_virtual!r}; "
                             f"P = 0 means no prompt: detach the method instead")
        if positions not in POSITIONS:
            raise InputError(f"positions must be one of {POSITIONS}, got {positions!r}")
        self.config = config
        self.num_virtual = num_virtual  # P
        self.positions = positions
        # True = real tokens may attend to virtual entry p. All True unless masked on purpose.
        self.register_buffer("virtual_keep", torch.ones(num_virtual, dtype=torch.bool), persistent=False)

    # --- the three hooks -------------------------------------------------------------------
    def input_prompt(self, batch_size: int) -> torch.Tensor | None:
        return None

    def hidden_prompts(self, batch_size: int) -> list[torch.Tensor] | None:
        return None

    def kv_prefix(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        return None

    # --- helpers the models use ------------------------------------------------------------
    def position_offset(self) -> int:
        """How far real tokens' positions are shifted under this method."""
        return self.num_virtual if self.positions == "shifted" else 0

    def check_compatible(self, config) -> None:
        """Refuse to run inside a model whose D, L or H differ from what the prompt was built for."""
        mine, theirs = self.config.dims(), config.dims()
        diff = {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
        if diff:
            desc = ", ".join(f"{k}: prompt {a} vs model {b}" for k, (a, b) in diff.items())
            raise InputError(f"{type(self).__name__} was built for another config ({desc})")

    def check_tensor(self, t: torch.Tensor, like: torch.Tensor, name: str) -> None:
        """A prompt on the wrong device or dtype is an error, never a silent cast."""
        if t.device != like.device or t.dtype != like.dtype:
            raise InputError(f"{name} is {t.dtype} on {t.device} but the model's activations are "
                             f"{like.dtype} on {like.device}; call model.to(...) after attaching the "
                             f"prompt, or keep the prompt in the model's dtype")

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, P={self.num_virtual}, positions={self.positions!r}"


class PromptHost:
    """Mixed into Encoder and Decoder: a model holds at most one prompt method at a time."""

    def attach(self, method: PromptMethod):
        """Attach a prompt method; the model consults it on every forward. Returns the model."""
        if not isinstance(method, PromptMethod):
            raise InputTypeError(f"attach() takes a PromptMethod, got {type(method).__name__}")
        method.check_compatible(self.config)
        self.prompt = method
        return self

    def input_embeddings(self):
        """The word-embedding table (nn.Embedding [V, D]) the input tokens are looked up in."""
        return self.wte if hasattr(self, "wte") else self.embeddings.word_embeddings

    def detach_prompt(self) -> PromptMethod | None:
        """Remove and return the attached method: the model is the plain backbone again."""
        method, self.prompt = self.prompt, None
        return method
