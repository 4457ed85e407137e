"""FGD (Yang et al., "Focal and Global Knowledge Distillation for Detectors", CVPR 2022) on every
FPN level.

Per level, with S aligned to the teacher's width by a 1×1 conv where the widths differ, N the batch
size, M^fg / M^bg the scale masks and A^S, A^C the attention (:mod:`drkd.distill.fgd.focal_masks`):
    L_fg     = Σ M^fg · A^S_t · A^C_t · (T − S)² / N                        (Eq. 4, first term)
    L_bg     = Σ M^bg · A^S_t · A^C_t · (T − S)² / N                        (Eq. 4, second term)
    L_at     = (Σ |A^C_t − A^C_s| + Σ |A^S_t − A^S_s|) / N                  (Eq. 7, l1)
    L_global = Σ (R_t(T) − R_s(S))² / N                                     (Eq. 9–10)
each summed over levels (the authors put one ``FeatureLoss`` per level, yzd-v/FGD,
mmdet/distillation/losses/fgd.py). α, β, γ, λ weight them (Eq. 11). R_s and R_t are two GcBlocks
(:class:`~drkd.distill.fgd.global_context.GlobalContext`), both trained, per level.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from drkd.distill.adaptation import ChannelMatch
from drkd.distill.base import Distiller, check_positive
from drkd.distill.fgd.focal_masks import BOX_CELLS, attention, scale_masks
from drkd.distill.fgd.global_context import GlobalContext


class FGDDistiller(Distiller):
    """FGD's four terms over the FPN levels (``loss_fg``, ``loss_bg``, ``loss_at``, ``loss_global``).

    Args:
        teacher_channels, student_channels, num_levels: see :class:`~drkd.distill.base.Distiller`.
        alpha, beta, gamma, lam: weights of the four terms (> 0). Defaults: RetinaNet's 1e-3, 5e-4,
            5e-4, 5e-6.
        temperature: T of the attention (> 0). Default 0.5.
        use_fg, use_bg, use_attention, use_global: switch each term (at least one on). Default on.
        box_cells: ``paper`` (default) or ``authors``, see :func:`~drkd.distill.fgd.focal_masks.scale_masks`.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        num_levels: int,
        *,
        alpha: float = 1e-3,
        beta: float = 5e-4,
        gamma: float = 5e-4,
        lam: float = 5e-6,
        temperature: float = 0.5,
        use_fg: bool = True,
        use_bg: bool = True,
        use_attention: bool = True,
        use_global: bool = True,
        box_cells: str = "paper",
    ) -> None:
        super().__init__(teacher_channels, student_channels, num_levels)
        check_positive(alpha=alpha, beta=beta, gamma=gamma, lam=lam, temperature=temperature)
        if box_cells not in BOX_CELLS:  # at build time, not at the first forward
            raise ValueError(f"box_cells must be one of {BOX_CELLS}, got {box_cells!r}")
        terms = {"loss_fg": (use_fg, alpha), "loss_bg": (use_bg, beta), "loss_at": (use_attention, gamma)}
        terms["loss_global"] = (use_global, lam)
        self.loss_weights = {k: float(w) for k, (on, w) in terms.items() if on}
        if not self.loss_weights:
            raise ValueError("use_fg, use_bg, use_attention and use_global are all off")
        self.temperature = float(temperature)
        self.box_cells = box_cells
        self.align = ChannelMatch(student_channels, teacher_channels, num_levels)
        if use_global:
            self.context_s = nn.ModuleList(GlobalContext(teacher_channels) for _ in range(num_levels))
            self.context_t = nn.ModuleList(GlobalContext(teacher_channels) for _ in range(num_levels))

    def losses(
        self,
        teacher_feats: list[torch.Tensor],
        student_feats: list[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        sums: dict[str, list[torch.Tensor]] = {k: [] for k in self.loss_weights}
        for level, (s, t) in enumerate(zip(self.align(student_feats), teacher_feats)):
            n = t.shape[0]
            s32, t32 = s.float(), t.float()
            spatial_t, channel_t = attention(t32, self.temperature)
            if "loss_fg" in sums or "loss_bg" in sums:
                fg, bg = scale_masks(boxes, t, image_shape, self.box_cells)
                weighted = (t32 - s32).pow(2) * (spatial_t[:, None] * channel_t[:, :, None, None])
                if "loss_fg" in sums:
                    sums["loss_fg"].append((weighted * fg[:, None]).sum() / n)
                if "loss_bg" in sums:
                    sums["loss_bg"].append((weighted * bg[:, None]).sum() / n)
            if "loss_at" in sums:
                spatial_s, channel_s = attention(s32, self.temperature)
                sums["loss_at"].append(((channel_t - channel_s).abs().sum() + (spatial_t - spatial_s).abs().sum()) / n)
            if "loss_global" in sums:
                diff = self.context_t[level](t32) - self.context_s[level](s32)
                sums["loss_global"].append(diff.pow(2).sum() / n)
        return {k: torch.stack(v).sum() for k, v in sums.items()}
