"""A distiller whose loss is one term summed over the FPN levels, each level compared on its own
after the student is matched to the teacher's width (PKD, CWD, MGD)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from drkd.distill.adaptation import ChannelMatch
from drkd.distill.base import Distiller


class PerLevelDistiller(Distiller):
    """``{term: Σ_l level_loss(l, f_l(S_l), T_l)}``, f_l a :class:`~drkd.distill.adaptation.ChannelMatch`.

    Subclasses call ``super().__init__(teacher_channels, student_channels, num_levels, term,
    weight, always_adapt)`` and implement :meth:`level_loss`; the GT boxes are not used.

    Args:
        teacher_channels, student_channels, num_levels: see :class:`~drkd.distill.base.Distiller`.
        term: the loss key, ``loss_<method>``.
        weight: its λ (checked > 0 by the subclass).
        always_adapt: build the 1×1 adapters even when C_s == C_t. Default False.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        num_levels: int,
        term: str,
        weight: float,
        always_adapt: bool = False,
    ) -> None:
        super().__init__(teacher_channels, student_channels, num_levels)
        self.term = term
        self.adapt = ChannelMatch(student_channels, teacher_channels, num_levels, always=always_adapt)
        self.loss_weights = {term: float(weight)}

    def level_loss(self, level: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The unweighted loss of one level: student (B, C_t, H, W) after matching, teacher (B, C_t, H, W)."""
        raise NotImplementedError  # pragma: no cover - interface

    def losses(
        self,
        teacher_feats: list[torch.Tensor],
        student_feats: list[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        del boxes, image_shape
        pairs = zip(self.adapt(student_feats), teacher_feats)
        return {self.term: torch.stack([self.level_loss(lv, s, t) for lv, (s, t) in enumerate(pairs)]).sum()}
