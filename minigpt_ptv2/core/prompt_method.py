"""The method's side of the seam between a frozen model and a prompt method.

A model consults its attached method at three places (core/transformer.py), and each hook
answers None when the method does not act there:

    input_prompt(B)           -> [B, P, D]           shallow: prepended to the input embeddings
    hidden_prompts(B)         -> L x [B, P, D]       deep, hidden-state: inject, process, slice per layer
    kv_prefix(B, layers=...)  -> L x Prefix or None  deep, K/V: what each layer's attention reads
                                                     besides its tokens (core/prefix.py)

A Prefix holds K and V [B, H_kv, P, d]. Prefix(K, V) is joined to the layer's own keys under one
softmax (P-Tuning v2); Prefix(K, V, gate=g) is read under a softmax of its own and added scaled
by g (LLaMA-Adapter). A joined prefix reaches every layer; a gated one may leave a layer out
(None). `layers` is the model's blocks, for a method whose keys the frozen layers make from its
own rows through the layer contract (layer.project_kv); a method that holds K/V ignores it.

The concrete methods live in prompts/; this base class is all the core knows of them, and all
the rest of the package may ask of any method:

    kind            which hook it answers: "input", "hidden", "kv" (joined prefixes) or "gated"
                    (gated prefixes); MixedPrompts gathers the kinds it knows and refuses others
    to_peft(model)  what the method is in PEFT's terms (interop/peft_layout.py); the default
                    refuses, naming the method: a method says what it is, or nothing exports it

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
from ..errors import InputError, NonFiniteError
from .prefix import Prefix

# Devices on which `check_finite` runs on every forward. On a CPU it costs a few microseconds
# (about 0.01% of a MiniLM forward at B=32, N=128). On a GPU, reading its answer back would
# make the host wait for the device on every forward, so there it runs only when it can find
# something new (see `check_finite`).
CHECK_EVERY_FORWARD = {"cpu"}


class PromptMethod(nn.Module):
    """Base class: holds P, the position policy and an optional mask over the P virtual entries.

    positions="real" (default): real tokens keep positions 0..N-1 whatever P is.
    positions="shifted": the HuggingFace/PEFT convention, real tokens at P..P+N-1 (the
    position table then holds only max_positions - P real tokens).
    """

    kind = "none"  # "input" | "hidden" | "kv" | "gated": which hook it answers (module docstring)
    # Under rotary positions, whether the model turns this method's prefix keys to the prompt
    # rows' positions (True) or uses them as given, as if already rotated (False, PEFT's way).
    rotate_prefix_keys = False

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
        self._finite_state = None  # what `check_finite` last found finite (devices other than the CPU)

    # --- the three hooks -------------------------------------------------------------------
    def input_prompt(self, batch_size: int) -> torch.Tensor | None:
        return None

    def hidden_prompts(self, batch_size: int) -> list[torch.Tensor] | None:
        return None

    def kv_prefix(self, batch_size: int, layers=None) -> list[Prefix | None] | None:
        return None

    def start_from_text(self, model, text_ids: torch.Tensor, rows: slice) -> None:
        """Set this method's values to what the frozen `model` makes of a real text (text_ids
        [1, N], special tokens included; `rows` picks P of its positions) instead of noise:
        prompts/from_tokens.py says why. Methods that cannot start from a text say so."""
        raise InputError(f"{type(self).__name__} starts from random values only; train it with --init random")

    # --- what the method is in PEFT's terms ---------------------------------------------------
    def to_peft(self, model=None) -> dict:
        """This method as PEFT stores it, as plain data for interop/peft_layout.py:
        {"peft_type": "PREFIX_TUNING" | "PROMPT_TUNING", "prompt_embeddings": [P, ...]} or
        {"peft_type": "ADAPTION_PROMPT", "adaption_prompt": [L_a, P, D], "adaption_gate": [L_a],
        "join": ...}. `model` is the model the method runs in (some forms are made with it).

        Each method with a PEFT equivalent says so here, from what its hooks hand the model, and
        refuses what that form cannot hold; this default refuses, naming the method, so a method
        that never said what it is is never written as something else."""
        raise InputError(f"{type(self).__name__} has no PEFT adapter equivalent (it does not say what it is "
                         f"in PEFT's terms: PromptMethod.to_peft)")

    def only_answers(self, hook: str, layers=None) -> None:
        """Refuse, naming the method, if it answers any hook other than `hook` (for a batch of
        one): a form made from one hook would drop what the others hand the model."""
        answers = {"input_prompt": self.input_prompt(1), "hidden_prompts": self.hidden_prompts(1),
                   "kv_prefix": self.kv_prefix(1, layers=layers)}
        extra = [name for name, a in answers.items() if a is not None and name != hook]
        if extra or answers[hook] is None:
            raise InputError(f"{type(self).__name__} answers {', '.join(extra) or 'nothing'} "
                             f"{'besides' if answers[hook] is not None else 'instead of'} {hook}: its PEFT form "
                             f"holds what {hook} gives, and would not compute what the method computes")

    # --- helpers the models use ------------------------------------------------------------
    def position_offset(self) -> int:
        """How far real tokens' positions are shifted under this method."""
        return self.num_virtual if self.positions == "shifted" else 0

    def check_compatible(self, config) -> None:
        """Refuse to run inside a model whose D, L, H, H_kv or d differ from what the prompt was built for."""
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

    def check_finite(self, tensors: list[torch.Tensor], label) -> None:
        """Refuse NaN or infinite values in what this method hands the model.

        One non-finite prompt value turns every output of every row into NaN (attention mixes it
        into all real tokens), silently: it is refused here, once per forward for all layers
        together, naming the method, the tensor (`label(i)` names tensors[i]) and the parameter.

        A prompt broadcast over the batch (`expand`, stride 0) is checked on one row only. On a
        CPU this always runs. Elsewhere the answer costs a device sync, so it runs only when the
        method's parameters changed since the last check that passed (each in-place update, an
        optimizer step, `load_state_dict`, a `copy_`, bumps a tensor's `_version`; an edit
        through `.data` does not and goes unseen until the next update), and not during a
        training step (grad enabled, trainable parameters), where the trainer's finite-loss
        check already reads a value back and catches the NaN the prompt spreads.
        """
        first = tensors[0]
        state = None
        if first.device.type not in CHECK_EVERY_FORWARD:
            params = list(self.parameters())
            if torch.is_grad_enabled() and any(p.requires_grad for p in params):
                return
            state = (first.device, first.dtype, torch.is_autocast_enabled(first.device.type),
                     tuple((p.data_ptr(), p._version) for p in params))
            if state == getattr(self, "_finite_state", None):
                return
        rows = [t[0] if t.dim() > 2 and t.stride(0) == 0 else t for t in tensors]  # one row of a broadcast
        if not bool(torch.stack([torch.isfinite(r).all() for r in rows]).all()):
            raise NonFiniteError(self._describe_nonfinite(rows, label))
        self._finite_state = state

    def _describe_nonfinite(self, rows: list[torch.Tensor], label) -> str:
        i = next(i for i, r in enumerate(rows) if not bool(torch.isfinite(r).all()))
        msg = f"{type(self).__name__} {label(i)} holds {_count_nonfinite(rows[i])}"
        bad = [f"'{n}' holds {_count_nonfinite(p)}" for n, p in self.named_parameters()
               if p.is_floating_point() and not bool(torch.isfinite(p).all())]
        if bad:
            msg += "; its parameter " + ", ".join(bad)
        else:
            msg += "; its parameters are finite, so the values overflowed computing the prompt"
        return msg + ": a run that diverged or a corrupted prompt (retrain with a lower learning rate, or reload it)"

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        rotate = ", rotate_keys=True" if self.rotate_prefix_keys else ""
        return f"kind={self.kind}, P={self.num_virtual}, positions={self.positions!r}{rotate}"


def _count_nonfinite(t: torch.Tensor) -> str:
    n_nan = int(torch.isnan(t).sum())
    n_inf = int(torch.isinf(t).sum())
    parts = [f"{n_nan} NaN"] * bool(n_nan) + [f"{n_inf} infinite"] * bool(n_inf)
    return f"{' and '.join(parts)} values (of {t.numel()})"
