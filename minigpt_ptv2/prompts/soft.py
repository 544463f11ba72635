"""Shallow prompt tuning (Lester et al.): P trainable vectors prepended to the input embeddings.

Only the input layer sees them; every deeper layer gets their influence second-hand, through
attention. That is the "whisper at the front desk" the P-Tuning v2 paper improves on.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from ..core.prompt_method import PromptMethod
from .from_tokens import check_rows


class SoftPrompt(PromptMethod):
    kind = "input"

    def __init__(self, config, num_virtual: int, init: torch.Tensor | None = None,
                 init_range: float = 0.5, positions: str = "real"):
        super().__init__(config, num_virtual, positions)
        P, D = num_virtual, config.hidden_size
        if init is None:
            # Built at the requested size [P, D] (seed 003 builds [2, 10] whatever n_tokens is).
            init = torch.empty(P, D).uniform_(-init_range, init_range)
        if tuple(init.shape) != (P, D):
            raise InputError(f"soft prompt init has shape {list(init.shape)}, expected [P={P}, D={D}]")
        self.weight = nn.Parameter(init.detach().clone().float())  # [P, D]

    @classmethod
    def from_vocab(cls, model, num_virtual: int, generator: torch.Generator | None = None, **kw):
        """Initialise from P randomly chosen rows of the model's word-embedding table."""
        table = model.input_embeddings().weight  # [V, D]
        if not isinstance(num_virtual, int) or num_virtual <= 0:
            raise InputError(f"num_virtual (P) must be a positive int, got {num_virtual!r}")
        rows = torch.randint(0, table.shape[0], (num_virtual,), generator=generator)
        return cls(model.config, num_virtual, init=table[rows.to(table.device)].cpu(), **kw)

    @classmethod
    def from_text(cls, model, token_ids: list[int], num_virtual: int | None = None, **kw):
        """Initialise from a text's token embeddings (cycled/truncated to P rows)."""
        token_ids = [int(i) for i in token_ids]  # a list or a 1-D tensor of ids
        if not token_ids:
            raise InputError("from_text needs at least one token id")
        P = len(token_ids) if num_virtual is None else num_virtual
        if not isinstance(P, int) or P <= 0:
            raise InputError(f"num_virtual (P) must be a positive int, got {P!r}")
        table = model.input_embeddings().weight  # [V, D]
        bad = [i for i in token_ids if not 0 <= i < table.shape[0]]
        if bad:
            raise InputError(f"token_ids {bad[:5]} are outside the vocabulary [0, V={table.shape[0]})")
        ids = torch.tensor([token_ids[i % len(token_ids)] for i in range(P)])  # [P]
        return cls(model.config, P, init=table[ids.to(table.device)].cpu(), **kw)

    @torch.no_grad()
    def start_from_text(self, model, text_ids: torch.Tensor, rows: slice) -> None:
        """The P tokens' own word embeddings: the prompt starts as that text (from_tokens.py)."""
        check_rows(self, text_ids, rows)
        table = model.input_embeddings().weight  # [V, D]
        self.weight.copy_(table[text_ids[0, rows].to(table.device)])  # [P, D]

    def input_prompt(self, batch_size: int) -> torch.Tensor:
        return self.weight.unsqueeze(0).expand(batch_size, -1, -1)  # [B, P, D], a view

    def to_peft(self, model=None) -> dict:
        return input_prompt_to_peft(self)


def input_prompt_to_peft(method) -> dict:
    """PROMPT_TUNING: the P virtual-token embeddings [P, D] that input_prompt hands the model
    (SoftPrompt, and P-tuning v1's encoder output: PEFT's P_TUNING adapters hold the same)."""
    method.only_answers("input_prompt")
    return {"peft_type": "PROMPT_TUNING", "prompt_embeddings": method.input_prompt(1)[0]}  # [P, D]


def pad_labels(labels: torch.Tensor, num_virtual: int, ignore_index: int = -100) -> torch.Tensor:
    """[B, N] -> [B, P+N] with `ignore_index` over the prompt: what a causal-LM loss over P+N
    logits needs (PEFT's convention). Not quite what our models compute: they slice the logits
    back to N rows, which also drops the one term per row where the last prompt row predicts the
    first real token. Set `[:, P]` to `ignore_index` as well to get exactly our loss."""
    pad = labels.new_full((labels.shape[0], num_virtual), ignore_index)  # [B, P]
    return torch.cat([pad, labels], dim=1)  # [B, P+N]
