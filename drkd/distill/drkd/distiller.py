"""Dual Relation Knowledge Distillation (paper §3.3, Eq. 9): L = L_det + λ1 L_PR + λ2 L_IR + λ3 L_INS."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from drkd.distill.base import Distiller
from drkd.distill.drkd.instance_distill import InstanceDistillLoss
from drkd.distill.drkd.instance_loss import check_instance_size, check_levels
from drkd.distill.drkd.instance_relation import InstanceRelationLoss
from drkd.distill.drkd.params import ONE_STAGE_LAMBDAS, PIXEL_MODULES
from drkd.distill.drkd.pixel_relation import PixelRelationLoss
from drkd.distill.feature_distance import DEFAULT_DISTANCE, check_distance


def _check_weight(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


class DRKDDistiller(Distiller):
    """DRKD's three terms between teacher and student FPN features; builds only the enabled parts.

    L = L_det + λ1·L_PR + λ2·L_IR + λ3·L_INS (Eq. 9), with
      * L_PR = 1/k Σ_i ||φ(t_i) − f(φ(s_i))||  (Eq. 1): a pixel relation module φ (GloRe, Eq. 2–4) per FPN level
        on each side (:class:`~drkd.distill.drkd.pixel_relation.PixelRelationLoss`);
      * L_IR (Eq. 6–7): embedded-Gaussian relations between the GT instances' ROI features, each
        weighted by the relation filter (:class:`~drkd.distill.drkd.instance_relation.InstanceRelationLoss`);
      * L_INS = 1/n Σ ||t_i − f(s_i)|| over the instances' ROI features (Eq. 8,
        :class:`~drkd.distill.drkd.instance_distill.InstanceDistillLoss`).

    Args:
        teacher_channels, student_channels, num_levels: see :class:`~drkd.distill.base.Distiller`.
        use_pr, use_ir, use_ins: build and return the PR, IR, INS term (Table 1). At least one.
        lambda_pr, lambda_ir, lambda_ins: λ1, λ2, λ3 (finite, >= 0). Default: the paper's
            one-stage values 0.004, 0.004, 0.006 (§4.5; :func:`~drkd.distill.drkd.params.paper_lambdas`).
        instance_size: K of the K×K ROI Align of the GT boxes, 1, 3 or 5 (Table 3). Default 3.
        instance_levels: FPN level indices (0 = highest resolution) the instances are pooled from;
            each < ``num_levels``. Default (0, 1).
        relation_filter: weight the instance relations with the learned filter w_ij of Eq. 6 (Table 4).
        pixel_module: φ of L_PR, ``"glore"`` (the paper's) or ``"non_local"`` (Table 2).
        teacher_embed_trainable: train the teacher-side IR modules (default False: trained,
            they collapse ψ_t to one-hot hubs; see bench/ir_collapse.py).
        ir_target, teacher_filter: what L_IR distils (``"relation"``: ψ, or ``"features"``: the
            authors' z) and the teacher side of its filter (``"identity"``, ``"shared"``,
            ``"random"``); see :class:`~drkd.distill.drkd.instance_relation.InstanceRelationLoss`.
        distance: ``"euclidean"`` (the authors' literal ||·||_2, default) or ``"squared"``; shared
            by all three terms.
        reduction: ``"mean"`` (default, batch-size invariant) or ``"authors"`` (the authors' code's
            sums over images and levels, which the paper's λ were tuned against); shared by all three
            terms (:mod:`drkd.distill.drkd.reduction`).
        roi_aligned, roi_sampling_ratio: the ROI Align of IR and INS (default True, 2: drkd's;
            False, 0: the authors' code, torchvision's defaults with adaptive sampling).
        pr_teacher: the teacher-side φ of L_PR, ``"trainable"`` (default) or ``"frozen"``.
        glore_nodes, glore_normalize, glore_zero_init: the GloRe units of L_PR (per-level node
            counts, normalisation by H·W, zero-initialised γ); see
            :class:`~drkd.distill.drkd.pixel_relation.PixelRelationLoss`.

    Returns (from ``forward``): the unweighted ``loss_pr``, ``loss_ir``, ``loss_ins`` of the enabled
    terms, each a scalar; ``loss_weights`` holds λ1, λ2, λ3 for them.
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
        ir_target: str = "relation",
        teacher_filter: str = "identity",
        distance: str = DEFAULT_DISTANCE,
        reduction: str = "mean",
        roi_aligned: bool = True,
        roi_sampling_ratio: int = 2,
        pr_teacher: str = "trainable",
        glore_nodes: Sequence[int] | None = None,
        glore_normalize: bool = True,
        glore_zero_init: bool = True,
    ) -> None:
        super().__init__(teacher_channels, student_channels, num_levels)
        for name, value in (("lambda_pr", lambda_pr), ("lambda_ir", lambda_ir), ("lambda_ins", lambda_ins)):
            _check_weight(name, value)
        if not (use_pr or use_ir or use_ins):
            raise ValueError("at least one of use_pr, use_ir, use_ins must be True, got all False")
        if pixel_module not in PIXEL_MODULES:
            raise ValueError(f"pixel_module must be one of {sorted(PIXEL_MODULES)}, got {pixel_module!r}")
        check_distance(distance)
        check_instance_size(instance_size)
        levels = check_levels(instance_levels, num_levels)

        # what IR and INS share (drkd.distill.drkd.instance_loss.InstanceLoss)
        instance_options = dict(
            instance_size=instance_size,
            levels=levels,
            distance=distance,
            reduction=reduction,
            roi_aligned=roi_aligned,
            roi_sampling_ratio=roi_sampling_ratio,
        )
        self.pr = self.ir = self.ins = None
        if use_pr:
            self.pr = PixelRelationLoss(
                teacher_channels,
                student_channels,
                num_levels,
                relation_module=pixel_module,
                distance=distance,
                reduction=reduction,
                glore_nodes=glore_nodes,
                glore_normalize=glore_normalize,
                glore_zero_init=glore_zero_init,
                teacher_module=pr_teacher,
            )
            self.loss_weights["loss_pr"] = float(lambda_pr)
        if use_ir:
            self.ir = InstanceRelationLoss(
                teacher_channels,
                student_channels,
                relation_filter=relation_filter,
                teacher_embed_trainable=teacher_embed_trainable,
                target=ir_target,
                teacher_filter=teacher_filter,
                **instance_options,
            )
            self.loss_weights["loss_ir"] = float(lambda_ir)
        if use_ins:
            self.ins = InstanceDistillLoss(teacher_channels, student_channels, **instance_options)
            self.loss_weights["loss_ins"] = float(lambda_ins)
        if self.ir is not None and self.ins is not None and not self.ir.same_instances(self.ins):
            raise ValueError("IR and INS must pool the same instances (instance_size, levels, ROI Align) to share them")

    def losses(
        self,
        teacher_feats: list[torch.Tensor],
        student_feats: list[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        if self.pr is not None:
            losses["loss_pr"] = self.pr(teacher_feats, student_feats)
        instance_losses = [
            (name, loss) for name, loss in (("loss_ir", self.ir), ("loss_ins", self.ins)) if loss is not None
        ]
        if instance_losses:
            # IR and INS pool the same boxes on the same levels (one instance_options): ROI-align once
            levels = instance_losses[0][1].level_instances(teacher_feats, student_feats, boxes, image_shape)
            for name, loss in instance_losses:
                losses[name] = loss.from_instances(levels, boxes)
        return losses
