"""Dual Relation Knowledge Distillation (paper §3.3, Eq. 9): L = L_det + λ1 L_PR + λ2 L_IR + λ3 L_INS."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch

from .distiller_base import Distiller, check_feature_levels, check_structure
from .feature_distance import DEFAULT_DISTANCE, check_distance
from .instance_distill import InstanceDistillLoss
from .instance_relation import InstanceRelationLoss, check_instance_size, check_levels
from .pixel_relation import PIXEL_RELATION_MODULES, PixelRelationLoss

if TYPE_CHECKING:
    import optuna

ONE_STAGE_LAMBDAS: tuple[float, float, float] = (0.004, 0.004, 0.006)
# §4.5: for two-stage detectors λ1 and λ3 are multiplied by 0.25 and 0.3.
TWO_STAGE_FACTORS: tuple[float, float, float] = (0.25, 1.0, 0.3)


def paper_lambdas(two_stage: bool) -> tuple[float, float, float]:
    """(λ1, λ2, λ3) from the paper's §4.5 for one-stage or two-stage detectors."""
    if not two_stage:
        return ONE_STAGE_LAMBDAS
    return tuple(lam * factor for lam, factor in zip(ONE_STAGE_LAMBDAS, TWO_STAGE_FACTORS))  # type: ignore[return-value]


def search_space(trial: "optuna.trial.Trial", two_stage: bool) -> dict[str, object]:
    """Optuna define-by-run space: switches, then λ only for the terms that are on (log-uniform
    over 1/8×–8× the paper's value for the framework), instance size and filter only where used.

    At least one term is always on: INS is sampled only when PR or IR is on, and forced on otherwise.
    """
    defaults = paper_lambdas(two_stage)
    pr = trial.suggest_categorical("distill.drkd.pr", [True, False])
    ir = trial.suggest_categorical("distill.drkd.ir", [True, False])
    ins = trial.suggest_categorical("distill.drkd.ins", [True, False]) if (pr or ir) else True
    out: dict[str, object] = {} if (pr or ir) else {"distill.drkd.ins": True}
    for on, name, default in zip((pr, ir, ins), ("lambda_pr", "lambda_ir", "lambda_ins"), defaults):
        if on:
            trial.suggest_float(f"distill.drkd.{name}", default / 8, default * 8, log=True)
    if ir or ins:
        trial.suggest_categorical("distill.drkd.instance_size", [1, 3, 5])
    if ir:
        trial.suggest_categorical("distill.drkd.relation_filter", [True, False])
    return out


def _check_weight(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


class DRKDDistiller(Distiller):
    """PR, IR and INS between teacher and student FPN features; builds only the enabled parts.

    Returns the unweighted ``loss_pr``, ``loss_ir``, ``loss_ins`` of the enabled terms;
    ``loss_weights`` holds λ1, λ2, λ3 for them. ``distance`` ("euclidean", the authors' literal
    ||·||_2, or "squared") is shared by all three losses.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        num_levels: int,
        *,
        use_pr: bool = True,
        use_ir: bool = True,
        use_ins: bool = True,
        lambda_pr: float = ONE_STAGE_LAMBDAS[0],
        lambda_ir: float = ONE_STAGE_LAMBDAS[1],
        lambda_ins: float = ONE_STAGE_LAMBDAS[2],
        instance_size: int = 3,
        instance_levels: Sequence[int] = (0, 1),
        relation_filter: bool = True,
        pixel_module: str = "glore",
        teacher_embed_trainable: bool = False,
        distance: str = DEFAULT_DISTANCE,
    ) -> None:
        super().__init__()
        check_structure(teacher_channels, student_channels, num_levels)
        for name, value in (("lambda_pr", lambda_pr), ("lambda_ir", lambda_ir), ("lambda_ins", lambda_ins)):
            _check_weight(name, value)
        if not (use_pr or use_ir or use_ins):
            raise ValueError("at least one of use_pr, use_ir, use_ins must be True, got all False")
        if pixel_module not in PIXEL_RELATION_MODULES:
            raise ValueError(f"pixel_module must be one of {sorted(PIXEL_RELATION_MODULES)}, got {pixel_module!r}")
        check_distance(distance)
        check_instance_size(instance_size)
        levels = check_levels(instance_levels, num_levels)

        self.num_levels = num_levels
        self.pr = self.ir = self.ins = None
        self.loss_weights = {}
        if use_pr:
            self.pr = PixelRelationLoss(
                teacher_channels, student_channels, num_levels, relation_module=pixel_module, distance=distance
            )
            self.loss_weights["loss_pr"] = float(lambda_pr)
        if use_ir:
            self.ir = InstanceRelationLoss(
                teacher_channels,
                student_channels,
                instance_size=instance_size,
                levels=levels,
                relation_filter=relation_filter,
                teacher_embed_trainable=teacher_embed_trainable,
                distance=distance,
            )
            self.loss_weights["loss_ir"] = float(lambda_ir)
        if use_ins:
            self.ins = InstanceDistillLoss(
                teacher_channels, student_channels, instance_size=instance_size, levels=levels, distance=distance
            )
            self.loss_weights["loss_ins"] = float(lambda_ins)

    def forward(
        self,
        teacher_feats: Sequence[torch.Tensor],
        student_feats: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        check_feature_levels(teacher_feats, student_feats, self.num_levels)
        if len(boxes) != student_feats[0].shape[0]:
            raise ValueError(f"got boxes for {len(boxes)} images but a batch of {student_feats[0].shape[0]}")
        losses: dict[str, torch.Tensor] = {}
        if self.pr is not None:
            losses["loss_pr"] = self.pr(teacher_feats, student_feats)
        if self.ir is not None:
            losses["loss_ir"] = self.ir(teacher_feats, student_feats, boxes, image_shape)
        if self.ins is not None:
            losses["loss_ins"] = self.ins(teacher_feats, student_feats, boxes, image_shape)
        return losses
