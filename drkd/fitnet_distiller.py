"""FitNets-style feature imitation (Romero et al., ICLR 2015) on every FPN level.

L_fitnet = 1/L · Σ_l mean_{b,c,i,j} (f_l(S_l) − T_l)²  with f_l a 1×1 conv regressor per level.

Default weight 1.0: with mean reduction the loss is a per-element squared error, independent of
map size, channel count, batch size and number of levels, on the order of the FPN features'
variance (≈ 0.1–1), i.e. the scale of the detection losses it is added to. The sweep tunes it over
[0.1, 10].
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from drkd.adaptation import LevelAdapters
from drkd.distiller_base import Distiller, check_feature_levels, check_structure

if TYPE_CHECKING:
    import optuna


def fitnet_defaults(two_stage: bool) -> dict[str, float]:
    """The same weight for both detector types (see the module docstring)."""
    del two_stage
    return {"weight": 1.0}


def search_space(trial: "optuna.trial.Trial", two_stage: bool) -> dict[str, object]:
    """weight log-uniform over [0.1, 10]."""
    del two_stage
    return {"distill.fitnet.weight": trial.suggest_float("distill.fitnet.weight", 0.1, 10.0, log=True)}


class FitNetDistiller(Distiller):
    """Per-level 1×1 adapter + MSE to the teacher, averaged over levels (``loss_fitnet``)."""

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        num_levels: int,
        *,
        two_stage: bool = False,
        weight: float | None = None,
    ) -> None:
        super().__init__()
        weight = fitnet_defaults(two_stage)["weight"] if weight is None else weight
        check_structure(teacher_channels, student_channels, num_levels)
        if not weight > 0:
            raise ValueError(f"weight must be > 0, got {weight!r}")
        self.num_levels = num_levels
        self.adapters = LevelAdapters(student_channels, teacher_channels, num_levels)
        self.loss_weights = {"loss_fitnet": float(weight)}

    def set_identity(self) -> None:
        """Identity regressors (tests; needs equal channel counts)."""
        self.adapters.set_identity()

    def forward(
        self,
        teacher_feats: Sequence[torch.Tensor],
        student_feats: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        del boxes, image_shape
        check_feature_levels(teacher_feats, student_feats, self.num_levels)
        adapted = self.adapters(list(student_feats))
        terms = [F.mse_loss(s.float(), t.detach().float()) for s, t in zip(adapted, teacher_feats)]
        return {"loss_fitnet": torch.stack(terms).mean()}
