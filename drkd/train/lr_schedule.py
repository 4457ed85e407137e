"""SGD learning-rate schedule of §4.1: linear warm-up, then step decay (1×/2×, scaled to the epochs)."""

from __future__ import annotations

import torch

# mmdetection's 1× schedule decays at epochs 8 and 11 of 12 (2×: 16 and 22 of 24): the same fractions.
DECAY_FRACTIONS = (8 / 12, 11 / 12)
DECAY_GAMMA = 0.1
REFERENCE_BATCH = 16


def scaled_lr(base_lr: float, total_batch: int) -> float:
    """Linear scaling rule: the paper's 0.02 is for a total batch of 16; returns ``base_lr · total_batch / 16``.

    Args:
        base_lr: the learning rate at a total batch of 16 (``train.lr``).
        total_batch: images per optimiser step over all workers (batch size × world size).
    """
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
    """Per-iteration LambdaLR: warm-up over min(warmup_iters, one epoch) iterations, then steps.

    The factor on the optimiser's lr at iteration i is 0.1^d, d the number of decay milestones passed
    (the epochs :func:`milestones` gives, about 8/12 and 11/12 of the run), times, for i < w =
    min(warmup_iters, iters_per_epoch), the linear ramp ``warmup_factor · (1 − i/w) + i/w``. Call
    ``scheduler.step()`` once per iteration.

    Args:
        optimizer: the optimiser whose learning rates are scaled.
        total_epochs: epochs of the run (places the decays).
        iters_per_epoch: optimiser steps per epoch.
        warmup_iters: warm-up length in iterations, capped at one epoch; 0: no warm-up.
        warmup_factor: the lr factor at iteration 0 of the warm-up, e.g. 0.001.

    Returns:
        The ``LambdaLR``.
    """
    warm = min(warmup_iters, iters_per_epoch)
    steps = [m * iters_per_epoch for m in milestones(total_epochs)]

    def factor(it: int) -> float:
        decay = DECAY_GAMMA ** sum(it >= s for s in steps)
        if it < warm:
            alpha = it / warm
            return decay * (warmup_factor * (1 - alpha) + alpha)
        return decay

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
