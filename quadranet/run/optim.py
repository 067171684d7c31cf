"""Optimizer parameter groups shared by every task's optimizer."""
from __future__ import annotations

from torch import nn


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list:
    """Optimizer groups of the trainable parameters: weight decay on matrices and kernels only, not on norms and
    biases (as timm does)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
