"""MKD's feature alignment distillation (Xu et al. 2024, Sec. 3.3, Eq. 5).

L_FAD = T²/C · Σ_c Σ_i φ(G^T_ci / T) · log(φ(G^T_ci / T) / φ(G^S_ci / T)),
φ = softmax over the H·W positions of each channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_alignment_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 5 per image (KL teacher → student per channel, summed over channels, × T²/C), averaged
    over the batch. ``student`` must already have the teacher's channels."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ")
    b, c = student.shape[:2]
    log_p_s = F.log_softmax(student.float().reshape(b, c, -1) / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher.detach().float().reshape(b, c, -1) / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=(1, 2))  # (B,)
    return (temperature**2 / c) * kl.mean()
