"""CWD (Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction", ICCV 2021) on
every FPN level.

Each channel c of each image n becomes a distribution over the H·W positions,
    p_c(i) = softmax_i(x_{n,c,i} / τ),
and   L_cwd = Σ_l τ² / (N·C) · Σ_{n,c} Σ_i p^T_c(i) · (log p^T_c(i) − log p^S_c(i)),
the KL divergence from teacher to student averaged over channels and images (Eq. 3), summed over
levels as the authors' configs weight each level alike (open-mmlab/mmrazor
``ChannelWiseDivergence``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from drkd.distill.base import check_positive
from drkd.distill.per_level import PerLevelDistiller


def channel_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """τ² · mean over (n, c) of KL(p^T_{n,c} ‖ p^S_{n,c}), each p a softmax over the H·W positions.

    Args:
        student, teacher: (N, C, H, W), equal shapes; computed in float32.
        temperature: τ > 0.

    Returns:
        A scalar; 0 where the two maps agree up to a per-channel constant (softmax's invariance).
    """
    if student.shape != teacher.shape:
        raise ValueError(f"channel_kl needs equal shapes, got {tuple(student.shape)} and {tuple(teacher.shape)}")
    s = student.float().flatten(2) / temperature
    t = teacher.float().flatten(2) / temperature
    log_pt = F.log_softmax(t, dim=2)
    kl = (log_pt.exp() * (log_pt - F.log_softmax(s, dim=2))).sum(dim=2)  # (N, C)
    return kl.mean() * temperature**2


class CWDDistiller(PerLevelDistiller):
    """L_cwd over the FPN levels (``loss_cwd``).

    Args:
        teacher_channels, student_channels, num_levels: see :class:`~drkd.distill.base.Distiller`.
        weight: the loss weight of ``loss_cwd`` (> 0). Default 10.0.
        temperature: τ (> 0). Default 1.0.
        always_adapt: a 1×1 adapter on the student even when C_s == C_t. Default False.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        num_levels: int,
        *,
        weight: float = 10.0,
        temperature: float = 1.0,
        always_adapt: bool = False,
    ) -> None:
        check_positive(weight=weight, temperature=temperature)
        super().__init__(teacher_channels, student_channels, num_levels, "loss_cwd", weight, always_adapt)
        self.temperature = float(temperature)

    def level_loss(self, level: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return channel_kl(student, teacher, self.temperature)
