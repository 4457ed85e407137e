"""What DRKD's two instance losses (IR, INS) share: which instances they see and how they reduce."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from drkd.distill.drkd.params import INSTANCE_SIZES
from drkd.distill.drkd.reduction import check_reduction
from drkd.distill.feature_distance import DEFAULT_DISTANCE, check_distance
from drkd.distill.instance_features import extract_instances


def check_instance_size(instance_size: int) -> int:
    """Return K if the paper evaluates it (1, 3 or 5), else raise ValueError naming it."""
    if isinstance(instance_size, bool) or instance_size not in INSTANCE_SIZES:
        raise ValueError(f"instance_size must be one of {INSTANCE_SIZES}, got {instance_size!r}")
    return int(instance_size)


def check_levels(levels: Sequence[int], num_levels: int | None = None) -> tuple[int, ...]:
    """Validate the FPN level indices instances are taken from; returns them as a tuple."""
    levels = tuple(levels)
    if (
        not levels
        or len(set(levels)) != len(levels)
        or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in levels)
    ):
        raise ValueError(f"instance_levels must be distinct non-negative ints, got {levels!r}")
    if num_levels is not None and max(levels) >= num_levels:
        raise ValueError(f"instance_levels {levels!r} out of range for {num_levels} levels")
    return levels


class InstanceLoss(nn.Module):
    """Base of the losses on GT instances' ROI features (Eq. 5): K, levels, distance, reduction, ROI Align.

    Args:
        instance_size: K of the K×K ROI Align, 1, 3 or 5 (Table 3); default 3.
        levels: FPN level indices the instances are pooled from (0 = highest resolution); default (0, 1).
        distance: ``"euclidean"`` (default) or ``"squared"``
            (:func:`~drkd.distill.feature_distance.feature_distance`).
        reduction: ``"mean"`` (default) or ``"authors"`` (:mod:`drkd.distill.drkd.reduction`).
        roi_aligned, roi_sampling_ratio: ``aligned`` and ``sampling_ratio`` of the ROI Align
            (:func:`~drkd.distill.instance_features.extract_instances`); default True, 2.
    """

    def __init__(
        self,
        *,
        instance_size: int = 3,
        levels: Sequence[int] = (0, 1),
        distance: str = DEFAULT_DISTANCE,
        reduction: str = "mean",
        roi_aligned: bool = True,
        roi_sampling_ratio: int = 2,
    ) -> None:
        super().__init__()
        self.instance_size = check_instance_size(instance_size)
        self.levels = check_levels(levels)
        self.distance = check_distance(distance)
        self.reduction = check_reduction(reduction)
        self.roi = {"aligned": roi_aligned, "sampling_ratio": roi_sampling_ratio}

    def instances(
        self, feat: torch.Tensor, boxes: Sequence[torch.Tensor], image_shape: tuple[int, int]
    ) -> torch.Tensor:
        """The K×K ROI features of every image's boxes on one level, (ΣN_i, C, K, K), image 0 first."""
        return extract_instances(feat, boxes, image_shape, self.instance_size, **self.roi)

    def level_instances(
        self,
        teacher_feats: Sequence[torch.Tensor],
        student_feats: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per configured level, the (teacher, student) ROI features of the GT boxes, each (ΣN_i, C, K, K);
        the teacher's from detached features (no gradient can reach the teacher detector). Every
        configured level must exist on both sides (ValueError otherwise)."""
        self.check_inputs(teacher_feats, student_feats)
        return [
            (
                self.instances(teacher_feats[level].detach(), boxes, image_shape),
                self.instances(student_feats[level], boxes, image_shape),
            )
            for level in self.levels
        ]

    def same_instances(self, other: InstanceLoss) -> bool:
        """True if ``other`` pools the same instances (K, levels, ROI Align), so both can share them."""
        return (self.instance_size, self.levels, self.roi) == (other.instance_size, other.levels, other.roi)

    def forward(
        self,
        teacher_feats: Sequence[torch.Tensor],
        student_feats: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> torch.Tensor:
        """The loss: the instances of :meth:`level_instances`, handed to the subclass's ``from_instances``."""
        return self.from_instances(self.level_instances(teacher_feats, student_feats, boxes, image_shape), boxes)

    def from_instances(
        self, levels: Sequence[tuple[torch.Tensor, torch.Tensor]], boxes: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """The loss from each configured level's (teacher, student) ROI features; ``boxes`` gives N_i per image."""
        raise NotImplementedError

    def check_inputs(self, teacher_feats: Sequence[torch.Tensor], student_feats: Sequence[torch.Tensor]) -> None:
        """Every configured level exists on both sides."""
        check_levels(self.levels, min(len(teacher_feats), len(student_feats)))
