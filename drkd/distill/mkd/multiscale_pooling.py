"""MKD's multiscale distillation (Xu et al. 2024, Sec. 3.1, Eq. 1).

L_Multiscale = 1/(HW) · Σ_k ‖pool_k(F^t) − pool_k(F^s)‖²₂
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# The paper does not give the scales or the pooling; we average-pool with window = stride = k.
# k = 1 is left out because it would repeat the plain feature loss L_fea.


def multiscale_pool(feat: torch.Tensor, scales: Sequence[int]) -> list[torch.Tensor]:
    """pool_k(x) of Eq. 1 for each k: average pooling with window and stride k.

    Border windows are averaged over the cells they cover (ceil mode); a window larger than the map
    shrinks to the map's smaller side, so coarse levels still pool.

    Args:
        feat: features (B, C, H, W).
        scales: the window sizes k, positive integers.

    Returns:
        One tensor per scale, (B, C, ⌈H/k'⌉, ⌈W/k'⌉) with k' = min(k, H, W).
    """
    pooled = []
    for k in scales:
        k = min(int(k), feat.shape[-2], feat.shape[-1])
        pooled.append(F.avg_pool2d(feat, kernel_size=k, stride=k, ceil_mode=True))
    return pooled


def multiscale_loss(student: torch.Tensor, teacher: torch.Tensor, scales: Sequence[int]) -> torch.Tensor:
    """L_Multiscale = 1/(HW) · Σ_k ‖pool_k(F^t) − pool_k(F^s)‖²₂ (Eq. 1) per image, averaged over the batch.

    The squared L2 runs over channels and pooled cells, H·W is the size of the input map.
    Computed in float32; the teacher is detached.

    Args:
        student: student features (B, C, H, W), already adapted to the teacher's channels.
        teacher: teacher features (B, C, H, W), the same shape (ValueError otherwise).
        scales: the pool_k window sizes, a non-empty sequence of positive integers (:func:`multiscale_pool`).

    Returns:
        A float32 scalar.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ")
    if not scales or any(int(k) != k or k < 1 for k in scales):
        raise ValueError(f"pool_scales must be positive integers, got {scales!r}")
    b, _, h, w = student.shape
    loss = student.new_zeros(b, dtype=torch.float32)
    for p_s, p_t in zip(multiscale_pool(student.float(), scales), multiscale_pool(teacher.detach().float(), scales)):
        loss = loss + (p_s - p_t).pow(2).flatten(1).sum(dim=1)
    return (loss / (h * w)).mean()
