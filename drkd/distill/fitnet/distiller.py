"""FitNets-style feature imitation (Romero et al., ICLR 2015) on every FPN level.

L_fitnet = 1/L · Σ_l mean_{b,c,i,j} (f_l(S_l) − T_l)²  with f_l a 1×1 conv regressor per level.

Default weight 1.0 (see :mod:`drkd.distill.fitnet.params`); the sweep tunes it over [0.1, 10].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from drkd.distill.adaptation import LevelAdapters
from drkd.distill.base import Distiller, check_positive
from drkd.distill.fitnet.params import DEFAULT_WEIGHT


class FitNetDistiller(Distiller):
    """Per-level 1×1 adapter f_l + MSE to the teacher, averaged over levels (``loss_fitnet``).

    Args:
        teacher_channels, student_channels, num_levels: see :class:`~drkd.distill.base.Distiller`.
        weight: the loss weight of ``loss_fitnet`` (> 0). Default 1.0.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        num_levels: int,
        *,
        weight: float = DEFAULT_WEIGHT,
    ) -> None:
        super().__init__(teacher_channels, student_channels, num_levels)
        check_positive(weight=weight)
        self.adapters = LevelAdapters(student_channels, teacher_channels, num_levels)
        self.loss_weights = {"loss_fitnet": float(weight)}

    def set_identity(self) -> None:
        """Identity regressors (tests; needs equal channel counts)."""
        self.adapters.set_identity()

    def losses(
        self,
        teacher_feats: list[torch.Tensor],
        student_feats: list[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        del boxes, image_shape
        adapted = self.adapters(student_feats)
        terms = [F.mse_loss(s.float(), t.float()) for s, t in zip(adapted, teacher_feats)]
        return {"loss_fitnet": torch.stack(terms).mean()}
