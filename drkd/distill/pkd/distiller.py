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

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from drkd.distill.adaptation import ChannelMatch
from drkd.distill.base import Distiller


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


class PKDDistiller(Distiller):
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
        super().__init__(teacher_channels, student_channels, num_levels)
        if not weight > 0:
            raise ValueError(f"weight must be > 0, got {weight!r}")
        self.adapt = ChannelMatch(student_channels, teacher_channels, num_levels, always=always_adapt)
        self.loss_weights = {"loss_pkd": float(weight)}

    def losses(
        self,
        teacher_feats: list[torch.Tensor],
        student_feats: list[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        del boxes, image_shape
        terms = []
        for s, t in zip(self.adapt(student_feats), teacher_feats):
            if s.shape[-2:] != t.shape[-2:]:
                s = F.interpolate(s, size=t.shape[-2:], mode="bilinear")
            terms.append(F.mse_loss(standardise(s), standardise(t)) / 2)
        return {"loss_pkd": torch.stack(terms).sum()}
