"""Instance distillation (paper §3.2, Eq. 8): L_INS = 1/n Σ_i ||t_i − f(s_i)||_2.

t_i, s_i are the K×K ROI-aligned features of the i-th GT instance on a configured FPN level
(the same levels and K as the instance-wise relation loss), f is an adaptive 1×1 conv per level
on the student side, and n is the number of instances in the batch. The distance is taken per
instance over (D, K, K), averaged over the n instances, then over levels. With n = 0 the loss
is an exact 0 still connected to the graph.

The authors' code (nizhenliang/Dual-Relation-Knowledge-Distillation, ``two_stage.py``,
``kd_foreground_loss``) takes one ``torch.dist`` over all of an image's instances and sums it
over images and levels, without the 1/n: ``reduction="authors"`` does the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from drkd.distill.adaptation import Adapter
from drkd.distill.drkd.instance_loss import InstanceLoss
from drkd.distill.drkd.reduction import batch_distance, over_levels
from drkd.distill.feature_distance import DEFAULT_DISTANCE
from drkd.distill.instance_features import instance_counts


class InstanceDistillLoss(InstanceLoss):
    """L_INS = 1/n Σ_i ||t_i − f(s_i)||_2 (Eq. 8), averaged over the batch's n instances and over levels.

    Per configured level, the GT boxes are ROI-aligned on both sides to (n, D, K, K) (Eq. 5), the
    student's pass through that level's adapter f (1×1 conv D_s -> D_t), and the distance is taken
    per instance over (D_t, K, K). A scalar; an exact, graph-connected 0 when n = 0.

    Args:
        teacher_channels: D_t, channels of the teacher FPN levels.
        student_channels: D_s, channels of the student FPN levels.
        instance_size: K of the K×K ROI Align, 1, 3 or 5 (Table 3); default 3.
        levels: FPN level indices (0 = highest resolution) to pool instances from, distinct and
            non-negative; default (0, 1). Checked against the number of levels handed to ``forward``.
        distance: ``"euclidean"`` (default) or ``"squared"``
            (:func:`~drkd.distill.feature_distance.feature_distance`).
        reduction: ``"mean"`` (default: per instance, averaged over instances and levels) or
            ``"authors"`` (one distance per image over its instances, summed over images and levels;
            see :mod:`drkd.distill.drkd.reduction`).
        roi_aligned, roi_sampling_ratio: ``aligned`` and ``sampling_ratio`` of the ROI Align
            (:func:`~drkd.distill.instance_features.extract_instances`); default True, 2.

    ``forward(teacher_feats, student_feats, boxes, image_shape)`` takes the same arguments as
    :class:`~drkd.distill.drkd.instance_relation.InstanceRelationLoss`'s and returns a float32 scalar.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        *,
        instance_size: int = 3,
        levels: Sequence[int] = (0, 1),
        distance: str = DEFAULT_DISTANCE,
        reduction: str = "mean",
        roi_aligned: bool = True,
        roi_sampling_ratio: int = 2,
    ) -> None:
        super().__init__(
            instance_size=instance_size,
            levels=levels,
            distance=distance,
            reduction=reduction,
            roi_aligned=roi_aligned,
            roi_sampling_ratio=roi_sampling_ratio,
        )
        self.adapters = nn.ModuleList(Adapter(student_channels, teacher_channels) for _ in self.levels)

    def from_instances(
        self, levels: Sequence[tuple[torch.Tensor, torch.Tensor]], boxes: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """L_INS from the ROI features of :meth:`~drkd.distill.drkd.instance_loss.InstanceLoss.level_instances`."""
        counts = instance_counts(boxes)
        level_terms = []
        for adapter, (t, s_roi) in zip(self.adapters, levels):
            s = adapter(s_roi)
            if self.reduction == "authors":  # one distance per image over all its instances, summed
                per_image = [
                    batch_distance(ti, si, self.distance, self.reduction)
                    for ti, si in zip(t.split(counts), s.split(counts))
                ]
                level_terms.append(torch.stack(per_image).sum())
            else:
                level_terms.append(batch_distance(t, s, self.distance, self.reduction))
        return over_levels(level_terms, self.reduction)
