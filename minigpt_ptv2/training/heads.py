"""Task heads over one frozen encoder: the prompt steers the backbone, a small head reads it out.

    sequence task:  pooler_output (the real [CLS]) [B, D] -> dropout -> Linear -> [B, C]
    token task:     last_hidden_state (N real rows) [B, N, D] -> dropout -> Linear -> [B, N, C]

Several heads can share one backbone (seed 000's list of heads): `TaskModel.heads` is a dict.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEAD_KINDS = ("sequence", "token")


class Head(nn.Module):
    def __init__(self, hidden_size: int, num_labels: int, kind: str, dropout: float = 0.1):
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be one of {HEAD_KINDS}, got {kind!r}")
        self.kind = kind
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, enc_out) -> torch.Tensor:
        h = enc_out.pooler_output if self.kind == "sequence" else enc_out.last_hidden_state  # [B, D] / [B, N, D]
        return self.classifier(self.dropout(h))  # [B, C] / [B, N, C]


class TaskModel(nn.Module):
    """A (frozen) encoder with its attached prompt, plus named task heads."""

    def __init__(self, encoder, heads: dict[str, Head]):
        super().__init__()
        if not heads:
            raise ValueError("TaskModel needs at least one head")
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, task: str | None = None):
        name = task or next(iter(self.heads))
        if name not in self.heads:
            raise ValueError(f"unknown task {name!r}; this model has heads {list(self.heads)}")
        out = self.encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.heads[name](out)



def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; token tasks ignore label -100 (sub-tokens, specials, padding)."""
    if logits.dim() == 3:  # [B, N, C] vs [B, N]
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
    return F.cross_entropy(logits.float(), labels)  # [B, C] vs [B]
