"""MKD's feature alignment distillation (Xu et al. 2024, Sec. 3.3, Eq. 5).

L_FAD = T²/C · Σ_c Σ_i φ(G^T_ci / T) · log(φ(G^T_ci / T) / φ(G^S_ci / T)),
φ = softmax over the H·W positions of each channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_alignment_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_FAD = T²/C · Σ_c KL(φ(G^T_c / T) ‖ φ(G^S_c / T)) (Eq. 5) per image, averaged over the batch.

    φ is the softmax over the H·W positions of one channel; the KL divergence runs teacher -> student
    per channel and is summed over the C channels. Computed in float32; the teacher is detached.

    Args:
        student: student features (B, C, H, W), already adapted to the teacher's channels.
        teacher: teacher features (B, C, H, W), the same shape (ValueError otherwise).
        temperature: T, > 0.

    Returns:
        A float32 scalar.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ")
    b, c = student.shape[:2]
    log_p_s = F.log_softmax(student.float().reshape(b, c, -1) / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher.detach().float().reshape(b, c, -1) / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=(1, 2))  # (B,)
    return (temperature**2 / c) * kl.mean()
