"""MKD's frequency domain mask distillation (Xu et al. 2024, Sec. 3.2, Eq. 2–4).

F̂^s = F⁻¹(M ⊙ F(F^s)),  M_ij = 1[R_ij ≥ ζ] with R_ij ~ U(0, 1);  L_FDMD = MSE(F̂^s, F^t).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_frequency_mask(
    batch: int,
    height: int,
    width: int,
    ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Eq. 3: a binary mask M_ij = 1[R_ij ≥ ζ], R_ij ~ U(0, 1): each frequency dropped with probability ζ.

    One mask per image, shared by its channels (M ∈ R^{H×W×1}). With a ``generator`` the draw is
    made on the generator's device, so a seeded CPU generator gives the same masks on any device.

    Args:
        batch, height, width: B, H, W of the features it will mask.
        ratio: ζ, the mask ratio, in [0, 1] (ValueError otherwise).
        generator: optional ``torch.Generator`` to draw R from; ``None``: the global RNG.
        device: where the returned mask lives; ``None``: the generator's device, or the default
            device without a generator.

    Returns:
        (B, 1, H, W) float32 tensor of 0s and 1s on ``device``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {ratio!r}")
    draw_device = generator.device if generator is not None else device
    r = torch.rand(batch, 1, height, width, generator=generator, device=draw_device)
    return (r >= ratio).to(device=device, dtype=torch.float32)


def apply_frequency_mask(feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 2: F̂ = F⁻¹(M ⊙ F(x)), the 2-D FFT over the last two (spatial) dims, in float32.

    M is not Hermitian-symmetric, so the inverse transform is complex; its real part is kept,
    which equals masking frequency k by (M_k + M_{-k}) / 2.

    Args:
        feat: features x, (B, C, H, W) (any leading dims; cast to float32).
        mask: M, broadcastable against ``feat``, e.g. (B, 1, H, W) from :func:`random_frequency_mask`.

    Returns:
        The real, float32 masked features, ``feat``'s shape (broadcast with ``mask``'s).
    """
    spectrum = torch.fft.fft2(feat.float(), dim=(-2, -1))
    return torch.fft.ifft2(spectrum * mask, dim=(-2, -1)).real


def frequency_mask_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    ratio: float,
    *,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_FDMD = 1/(C^t·H·W) Σ_kij (F̂^s_ijk − F^t_ijk)² (Eq. 4), averaged over the batch.

    F̂^s is the student masked in the frequency domain (Eq. 2–3); the teacher is not masked, so the
    masked-out teacher frequencies leave a loss floor even when student = teacher. Computed in
    float32; the teacher is detached.

    Args:
        student: student features (B, C, H, W), already adapted to the teacher's channels.
        teacher: teacher features (B, C, H, W), the same shape (ValueError otherwise).
        ratio: ζ, the mask ratio in [0, 1]; unused when ``mask`` is given.
        generator: optional ``torch.Generator`` for the random mask (reproducible runs).
        mask: a fixed M, e.g. (B, 1, H, W) (tests); ``None``: draw one with :func:`random_frequency_mask`.

    Returns:
        A float32 scalar.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ")
    b, _, h, w = student.shape
    if mask is None:
        mask = random_frequency_mask(b, h, w, ratio, generator=generator, device=student.device)
    return F.mse_loss(apply_frequency_mask(student, mask), teacher.detach().float())
