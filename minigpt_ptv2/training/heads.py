"""Task heads over one frozen encoder: the prompt steers the backbone, a small head reads it out.

    sequence task:  pooler_output (the real [CLS]) [B, D] -> dropout -> Linear -> [B, C]
    token task:     last_hidden_state (N real rows) [B, N, D] -> dropout -> Linear -> [B, N, C]

Several heads can share one backbone and one prompt (seed 000's list of heads, by name instead
of by index): `TaskModel.heads` is a dict, `add_head` adds one, and `task=` picks one per forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checks import check_labels
from ..errors import InputError, InputTypeError

HEAD_KINDS = ("sequence", "token")


class Head(nn.Module):
    def __init__(self, hidden_size: int, num_labels: int, kind: str, dropout: float = 0.1):
        super().__init__()
        if kind not in HEAD_KINDS:
            raise InputError(f"head kind must be one of {HEAD_KINDS}, got {kind!r}")
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
            raise InputError("TaskModel needs at least one head")
        self.encoder = encoder
        self.heads = nn.ModuleDict()
        for name, head in heads.items():
            self.add_head(name, head)

    def backbone(self):
        """The frozen model the prompt is attached to (what a checkpoint fingerprints)."""
        return self.encoder

    def add_head(self, name: str, head: Head) -> "TaskModel":
        """Another task over the same backbone and prompt, moved to the encoder's device. The new
        head is trainable; the encoder's freezing is left as it is. Returns the model."""
        if not isinstance(head, Head):
            raise InputTypeError(f"head {name!r} must be a Head, got {type(head).__name__}")
        if name in self.heads:
            raise InputError(f"this model already has a head named {name!r}; heads: {list(self.heads)}")
        D = self.encoder.config.hidden_size
        if head.classifier.in_features != D:
            raise InputError(f"head {name!r} reads {head.classifier.in_features} features, "
                             f"the encoder's hidden size D is {D}")
        self.heads[name] = head.to(next(self.encoder.parameters()).device)
        return self

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, task: str | None = None):
        """Logits of one head: [B, C] (sequence) or [B, N, C] (token). The encoder checks the inputs."""
        if task is not None and not isinstance(task, str):
            raise InputTypeError(f"task must be a head name (str) or None, got {type(task).__name__}")
        if task is None and len(self.heads) > 1:
            raise InputError(f"this model has several heads {list(self.heads)}: pass task=<name>")
        name = next(iter(self.heads)) if task is None else task
        if name not in self.heads:
            raise InputError(f"unknown task {name!r}; this model has heads {list(self.heads)}")
        out = self.encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.heads[name](out)


def task_loss(logits: torch.Tensor, labels: torch.Tensor, tokens_per_batch: float | None = None) -> torch.Tensor:
    """Cross-entropy; label -100 is ignored (for token tasks: sub-tokens, specials, padding).

    labels: [B] for logits [B, C], [B, N] for logits [B, N, C]; integer, each in [0, C) or -100
    (checked: an out-of-range label is otherwise an IndexError on CPU, a device assert on CUDA).
    tokens_per_batch (token tasks only): divide the batch's summed loss by this constant, the
    epoch's mean count of labelled tokens per batch, instead of by the batch's own count. Then every
    labelled token weighs the same in every batch. Under length-grouped batches (data/grouping.py)
    this matters: a batch of short sentences holds a third of the tokens of a batch of long ones,
    and its own mean would give each of its tokens three times the weight (held-out CoNLL F1 77.1
    with the per-batch mean, 80.8 with the constant, benchmarks/recipe_results.jsonl)."""
    labels = check_labels(labels, logits.shape[:-1], logits.shape[-1], logits.device)
    if logits.dim() == 3:  # [B, N, C] vs [B, N]
        flat, targets = logits.flatten(0, 1).float(), labels.flatten()  # [B*N, C], [B*N]
        if tokens_per_batch is None:
            return F.cross_entropy(flat, targets, ignore_index=-100)
        if not tokens_per_batch > 0:
            raise InputError(f"tokens_per_batch must be positive, got {tokens_per_batch}")
        return F.cross_entropy(flat, targets, ignore_index=-100, reduction="sum") / tokens_per_batch
    return F.cross_entropy(logits.float(), labels)  # [B, C] vs [B]
