"""Freezing: only prompt (and task-head) parameters train; the backbone gets no gradient."""
from __future__ import annotations

from torch import nn


def freeze_backbone(model: nn.Module, trainable_prefixes: tuple[str, ...] = ("prompt.",)) -> int:
    """Set requires_grad=False on every parameter whose name does not start with one of
    `trainable_prefixes`; returns how many parameters stay trainable."""
    n = 0
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(trainable_prefixes)
        n += p.numel() if p.requires_grad else 0
    return n


def trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]
