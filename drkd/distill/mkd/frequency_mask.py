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
    """Eq. 3: a binary (B, 1, H, W) mask, each frequency dropped with probability ζ = ``ratio``.

    One mask per image, shared by its channels (M ∈ R^{H×W×1}). With a ``generator`` the draw is
    made on the generator's device, so a seeded CPU generator gives the same masks on any device.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {ratio!r}")
    draw_device = generator.device if generator is not None else device
    r = torch.rand(batch, 1, height, width, generator=generator, device=draw_device)
    return (r >= ratio).to(device=device, dtype=torch.float32)


def apply_frequency_mask(feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 2: F⁻¹(M ⊙ F(x)) over the two spatial dims, in float32.

    M is not Hermitian-symmetric, so the inverse transform is complex; its real part is kept,
    which equals masking frequency k by (M_k + M_{-k}) / 2.
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
    """Eq. 4: mean over (C^t, H, W) of (F̂^s − F^t)², averaged over the batch.

    ``student`` must already have the teacher's channels. Pass ``mask`` to fix M (tests); by
    construction the masked-out teacher frequencies leave a loss floor even when student = teacher.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ")
    b, _, h, w = student.shape
    if mask is None:
        mask = random_frequency_mask(b, h, w, ratio, generator=generator, device=student.device)
    return F.mse_loss(apply_frequency_mask(student, mask), teacher.detach().float())
