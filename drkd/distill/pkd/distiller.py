"""PKD (Cao et al., "PKD: General Distillation Framework for Object Detectors via Pearson
Correlation Coefficient", NeurIPS 2022) on every FPN level.

Each level of each side is standardised per channel over the batch and positions,
    x̂_c = (x_c − mean(x_c)) / (std(x_c) + 1e-6),   std with Bessel's correction,
and L_pkd = Σ_l mean_{b,c,i,j} (Ŝ_l − T̂_l)² / 2, which is 1 − r averaged over channels (r the
Pearson correlation of student and teacher activations), up to the (n−1)/n of the unbiased std.
This is the authors' implementation (open-mmlab/mmrazor ``PKDLoss``: levels summed, the
student's map resized bilinearly to the teacher's when their sizes differ).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from drkd.distill.base import check_positive
from drkd.distill.per_level import PerLevelDistiller


def standardise(feat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-channel zero mean and unit variance over (B, H, W).

    Args:
        feat: (B, C, H, W); computed in float32.
        eps: added to the std (the authors' 1e-6).

    Returns:
        (B, C, H, W) float32. A channel with a single value (B·H·W == 1) standardises to 0 (its
        unbiased std is undefined; the authors' code would give NaN there).
    """
    x = feat.float().transpose(0, 1).flatten(1)  # (C, B·H·W)
    std = x.std(dim=1, keepdim=True, correction=1 if x.shape[1] > 1 else 0)
    return (
        ((x - x.mean(dim=1, keepdim=True)) / (std + eps))
        .view(feat.shape[1], feat.shape[0], *feat.shape[2:])
        .transpose(0, 1)
    )


class PKDDistiller(PerLevelDistiller):
    """L_pkd over the FPN levels (``loss_pkd``).

    Args:
        teacher_channels, student_channels, num_levels: see :class:`~drkd.distill.base.Distiller`.
        weight: the loss weight of ``loss_pkd`` (> 0). Default 10.0 (RetinaNet's).
        always_adapt: a 1×1 adapter on the student even when C_s == C_t. Default False.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        num_levels: int,
        *,
        weight: float = 10.0,
        always_adapt: bool = False,
    ) -> None:
        check_positive(weight=weight)
        super().__init__(teacher_channels, student_channels, num_levels, "loss_pkd", weight, always_adapt)

    def level_loss(self, level: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape[-2:] != teacher.shape[-2:]:
            student = F.interpolate(student, size=teacher.shape[-2:], mode="bilinear")
        return F.mse_loss(standardise(student), standardise(teacher)) / 2
