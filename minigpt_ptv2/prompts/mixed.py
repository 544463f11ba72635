"""Several trained prompts over one frozen backbone, a different one for each row of a batch.

Prompt tuning's promise is one frozen model serving many tasks. Every row of a batch can use
its own prompt because a prompt only ever reaches the real tokens through attention keys, and
keys can be masked per row. `MixedPrompts` holds M trained methods of one kind (M members, each
with its own P_m) and, once told which member each row uses (`use_rows`), answers the model's
hooks with one tensor for the whole batch:

    member m's prompt   [1, P_m, ...]   left-padded to P = max P_m     -> [M, P, ...]
    gathered per row    rows [B] of member indices                      -> [B, P, ...]
    virtual_keep        [B, P]: True on the last P_m entries of a row of member m

The padding goes in front (right-aligned prompts) so that under rotary positions each member's
entries sit at -P_m..-1, just before the text, exactly where they sit when it runs alone. A padded
entry is a key no real token may attend to: its softmax weight is exactly 0, so each row's output
is the member's own output, computed in another order (tests/test_mixed.py: within 1e-5).

What mixes and what does not:
- K/V prefixes, deep hidden-state prompts, shallow prompts, P-tuning v1: any P per member, as long
  as all members are of one kind (a row cannot be "K/V" and "hidden" in one layer loop).
- Only what the gather carries: a member's input rows, hidden rows, or joined Prefix(K, V). A
  member of another kind (a gated prefix: its gate, its own softmax, its layers without a prefix)
  is refused when the mix is built, by its declared `kind`; a member that hands over more than its
  kind says (a gated Prefix from a "kv" member, or a second hook answered) is refused when it
  does, naming it: dropping what the gather cannot carry would change that member's outputs
  silently.
- positions="shifted" moves the real tokens to P..P+N-1: one shift for the whole batch, so the
  members must then share one P (refused otherwise).
- The members must agree on rotate_keys: the model turns all prefix keys of a batch or none.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.prefix import Prefix
from ..core.prompt_method import PromptMethod
from ..errors import InputError, InputTypeError

# The kinds of prompt MixedPrompts gathers row by row, and the hook each answers.
GATHERED = {"input": "input_prompt", "hidden": "hidden_prompts", "kv": "kv_prefix"}


class MixedPrompts(PromptMethod):
    """M trained prompt methods of one kind, chosen per row by `use_rows(rows)`."""

    def __init__(self, config, members: dict[str, PromptMethod]):
        if not members:
            raise InputError("MixedPrompts needs at least one member method")
        for name, m in members.items():
            if not isinstance(m, PromptMethod) or isinstance(m, MixedPrompts):
                raise InputTypeError(f"member {name!r} must be a prompt method, got {type(m).__name__}")
            if m.kind not in GATHERED:
                raise InputError(f"member {name!r} ({type(m).__name__}) is a {m.kind!r} prompt: MixedPrompts "
                                 f"gathers {', '.join(repr(k) for k in GATHERED)} prompts only (a gated prefix's "
                                 f"gate and own softmax are not gathered row by row)")
        first = next(iter(members.values()))
        _check_agree(members)
        super().__init__(config, max(m.num_virtual for m in members.values()), first.positions)
        self.kind = first.kind
        self.rotate_prefix_keys = first.rotate_prefix_keys
        self.members = nn.ModuleDict(members)
        for m in members.values():
            m.check_compatible(config)
        self.rows = None  # [B] member index per row, set by use_rows

    @property
    def names(self) -> list[str]:
        return list(self.members)

    def use_rows(self, names: list[str]) -> "MixedPrompts":
        """Which member each row of the next batches uses, by name: a list of B names."""
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise InputTypeError("use_rows takes a list of member names, one per row")
        unknown = sorted({n for n in names if n not in self.members})
        if unknown:
            raise InputError(f"unknown member(s) {unknown}; this MixedPrompts holds {self.names}")
        if not names:
            raise InputError("use_rows needs at least one row")
        index = {n: i for i, n in enumerate(self.members)}
        keep = self.member_keep()  # [M, P]
        self.rows = torch.tensor([index[n] for n in names], device=keep.device)  # [B]
        self.virtual_keep = keep[self.rows]  # [B, P]: read by the model with the hooks
        return self

    def member_keep(self) -> torch.Tensor:
        """Each member's own keep-mask [P_m], right-aligned in P entries: [M, P]. Read from the
        members at every use_rows, so a mask a member changes later is the one used."""
        P = self.num_virtual
        return torch.stack([F.pad(m.virtual_keep.bool(), (P - m.num_virtual, 0), value=False)
                            for m in self.members.values()])  # [M, P]

    def _gather(self, per_member: list[torch.Tensor], batch_size: int, p_axis: int = 1) -> torch.Tensor:
        """Each member's [1, P_m, D] (or [1, H_kv, P_m, d] with p_axis=2) -> left-padded to P ->
        [M, P, D] -> the batch's rows [B, P, D] (or [B, H_kv, P, d])."""
        if self.rows is None:
            raise InputError("MixedPrompts: call use_rows([...]) with one member name per row first")
        if self.rows.shape[0] != batch_size:
            raise InputError(f"use_rows was given {self.rows.shape[0]} rows but the batch has B={batch_size}")
        P = self.num_virtual
        first = per_member[0]
        for name, t in zip(self.members, per_member):
            if t.dtype != first.dtype or t.device != first.device:  # never a silent cast (prompt_method.py)
                raise InputError(f"member {name!r} hands over {t.dtype} on {t.device}, member {self.names[0]!r} "
                                 f"{first.dtype} on {first.device}: move all members with model.to(...)")
        padded = []
        for t in per_member:
            widths = [0, 0] * (t.dim() - 1 - p_axis) + [P - t.shape[p_axis], 0]  # F.pad counts from the last dim
            padded.append(F.pad(t, widths))  # zeros in front: masked entries, never read
        return torch.cat(padded)[self.rows.to(per_member[0].device)]  # [B, P, ...]

    def _answers(self, layers=None) -> list:
        """Each member's prompt for one row, from the hook of its kind. A member answering any
        other hook is refused by name: the gather would drop that part of it."""
        out = []
        for name, m in self.members.items():
            answers = {"input": m.input_prompt(1), "hidden": m.hidden_prompts(1), "kv": m.kv_prefix(1, layers=layers)}
            extra = [GATHERED[k] for k, a in answers.items() if a is not None and k != self.kind]
            if extra:
                raise InputError(f"member {name!r} ({type(m).__name__}, kind {m.kind!r}) also answers "
                                 f"{', '.join(extra)}: MixedPrompts gathers the {GATHERED[self.kind]} of a "
                                 f"{self.kind!r} member only, so the rest would be lost")
            out.append(answers[self.kind])
        return out

    # --- the three hooks, each member asked for one row and gathered per row ------------------
    def input_prompt(self, batch_size: int) -> torch.Tensor | None:
        if self.kind != "input":
            return None
        return self._gather(self._answers(), batch_size)  # [B, P, D]

    def hidden_prompts(self, batch_size: int) -> list[torch.Tensor] | None:
        if self.kind != "hidden":
            return None
        per = self._answers()  # M x L x [1, P_m, D]
        return [self._gather([p[i] for p in per], batch_size) for i in range(len(per[0]))]  # L x [B, P, D]

    def kv_prefix(self, batch_size: int, layers=None) -> list[Prefix] | None:
        if self.kind != "kv":
            return None
        per = self._answers(layers)  # M x L x Prefix(K, V) [1, H_kv, P_m, d]
        for (name, m), prefixes in zip(self.members.items(), per):
            plain = [p is not None and type(p) is Prefix and p.plain for p in prefixes]
            if not all(plain):
                i = plain.index(False)
                raise InputError(f"member {name!r} ({type(m).__name__}) hands layer {i} "
                                 f"{'no prefix' if prefixes[i] is None else 'a prefix with more than K and V'}: MixedPrompts "
                                 f"gathers a joined Prefix(K, V) for every layer only, so the member would "
                                 f"not compute what it computes alone")
        return [Prefix(self._gather([p[i].k for p in per], batch_size, p_axis=2),  # [B, H_kv, P, d]
                       self._gather([p[i].v for p in per], batch_size, p_axis=2)) for i in range(len(per[0]))]

    def extra_repr(self) -> str:
        sizes = ", ".join(f"{n}: P={m.num_virtual}" for n, m in self.members.items())
        return f"kind={self.kind}, members=({sizes}), positions={self.positions!r}"


def _check_agree(members: dict[str, PromptMethod]) -> None:
    """Refuse members that cannot share one layer loop, naming the two that differ and how."""
    items = list(members.items())
    name0, m0 = items[0]
    for name, m in items[1:]:
        if m.kind != m0.kind:
            raise InputError(f"members {name0!r} ({type(m0).__name__}, acts on '{m0.kind}') and {name!r} "
                             f"({type(m).__name__}, acts on '{m.kind}') are different kinds of prompt: "
                             f"one batch can mix prompts of one kind only")
        if m.positions != m0.positions:
            raise InputError(f"members {name0!r} and {name!r} use positions {m0.positions!r} and {m.positions!r}: "
                             f"one batch has one position policy")
        if m.rotate_prefix_keys != m0.rotate_prefix_keys:
            raise InputError(f"members {name0!r} and {name!r} differ in rotate_keys: the model turns a "
                             f"batch's prefix keys all or none")
        if m0.positions == "shifted" and m.num_virtual != m0.num_virtual:
            raise InputError(f"members {name0!r} (P={m0.num_virtual}) and {name!r} (P={m.num_virtual}) use "
                             f"positions='shifted', which moves the real tokens of every row by P: they "
                             f"must share one P (or be trained with positions='real')")
