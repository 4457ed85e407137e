"""MGD (Yang et al., "Masked Generative Distillation", ECCV 2022) on every FPN level.

Per level l, with S_l aligned to the teacher's width by a 1×1 conv where the widths differ:
    M_{n,i,j} = 0 with probability λ, else 1          (one mask per image and position, Eq. 1)
    L_mgd = Σ_l Σ_{n,c,i,j} (G_l(S_l · M) − T_l)² / N  (Eq. 2–3),
G_l = Conv3×3 → ReLU → Conv3×3 at the teacher's width, one block per level, as in the authors'
``FeatureLoss`` (yzd-v/MGD, det/mmdet/distillation/losses/mgd.py). α weights L_mgd.
The mask is redrawn on every call from ``generator`` (default: the global RNG), on the features'
device (the authors draw it on the CPU and copy it).
"""

from __future__ import annotations

import torch
from torch import nn

from drkd.distill.base import check_positive
from drkd.distill.per_level import PerLevelDistiller


def generation_block(channels: int) -> nn.Sequential:
    """G: Conv3×3 → ReLU → Conv3×3, ``channels`` in and out (PyTorch's default initialisation)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, channels, kernel_size=3, padding=1),
    )


def random_mask(feat: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 1, H, W) of 0 (masked, probability ``ratio``) and 1, in ``feat``'s dtype and device."""
    n, _, h, w = feat.shape
    draw = torch.rand((n, 1, h, w), generator=generator, device=feat.device)
    return (draw <= 1 - ratio).to(feat.dtype)


class MGDDistiller(PerLevelDistiller):
    """L_mgd over the FPN levels (``loss_mgd``).

    Args:
        teacher_channels, student_channels, num_levels: see :class:`~drkd.distill.base.Distiller`.
        alpha: α, the loss weight of ``loss_mgd`` (> 0). Default 2e-5 (RetinaNet's).
        mask_ratio: λ in [0, 1). Default 0.65 (RetinaNet's).
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        num_levels: int,
        *,
        alpha: float = 2e-5,
        mask_ratio: float = 0.65,
    ) -> None:
        check_positive(alpha=alpha)
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio!r}")
        super().__init__(teacher_channels, student_channels, num_levels, "loss_mgd", alpha)
        self.mask_ratio = float(mask_ratio)
        self.generation = nn.ModuleList(generation_block(teacher_channels) for _ in range(num_levels))
        self.generator: torch.Generator | None = None  # tests set one to fix the masks

    def level_loss(self, level: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        regenerated = self.generation[level](student * random_mask(student, self.mask_ratio, self.generator))
        return (regenerated.float() - teacher.float()).pow(2).sum() / teacher.shape[0]
