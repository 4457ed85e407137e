"""SGD learning-rate schedule of §4.1: linear warm-up, then step decay (1×/2×, scaled to the epochs)."""

from __future__ import annotations

import torch

# mmdetection's 1× schedule decays at epochs 8 and 11 of 12 (2×: 16 and 22 of 24): the same fractions.
DECAY_FRACTIONS = (8 / 12, 11 / 12)
DECAY_GAMMA = 0.1
REFERENCE_BATCH = 16


def scaled_lr(base_lr: float, total_batch: int) -> float:
    """Linear scaling rule: the paper's 0.02 is for a total batch of 16."""
    return base_lr * total_batch / REFERENCE_BATCH


def milestones(total_epochs: int) -> list[int]:
    """Epochs (0-based, at whose start) the LR drops; always at least one epoch apart."""
    out: list[int] = []
    for frac in DECAY_FRACTIONS:
        m = max(1, round(frac * total_epochs))
        if m < total_epochs and (not out or m > out[-1]):
            out.append(m)
    return out


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_epochs: int, iters_per_epoch: int, warmup_iters: int, warmup_factor: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration LambdaLR: warm-up over min(warmup_iters, one epoch) iterations, then steps."""
    warm = min(warmup_iters, iters_per_epoch)
    steps = [m * iters_per_epoch for m in milestones(total_epochs)]

    def factor(it: int) -> float:
        decay = DECAY_GAMMA ** sum(it >= s for s in steps)
        if it < warm:
            alpha = it / warm
            return decay * (warmup_factor * (1 - alpha) + alpha)
        return decay

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
