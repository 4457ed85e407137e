"""Instance distillation (paper §3.2, Eq. 8): L_INS = 1/n Σ_i ||t_i − f(s_i)||_2.

t_i, s_i are the K×K ROI-aligned features of the i-th GT instance on a configured FPN level
(the same levels and K as the instance-wise relation loss), f is an adaptive 1×1 conv per level
on the student side, and n is the number of instances in the batch. The distance is taken per
instance over (D, K, K), averaged over the n instances, then over levels. With n = 0 the loss
is an exact 0 still connected to the graph.

The authors' code (nizhenliang/Dual-Relation-Knowledge-Distillation, ``two_stage.py``,
``kd_foreground_loss``) takes one ``torch.dist`` over all of an image's instances and sums it
over images and levels, without the 1/n.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from drkd.distill.adaptation import Adapter
from drkd.distill.drkd.instance_relation import check_instance_size, check_levels
from drkd.distill.feature_distance import DEFAULT_DISTANCE, check_distance, feature_distance
from drkd.distill.instance_features import extract_instances


class InstanceDistillLoss(nn.Module):
    """Eq. 8 averaged over the batch's instances and over ``levels``."""

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        *,
        instance_size: int = 3,
        levels: Sequence[int] = (0, 1),
        distance: str = DEFAULT_DISTANCE,
    ) -> None:
        super().__init__()
        self.instance_size = check_instance_size(instance_size)
        self.levels = check_levels(levels)
        self.distance = check_distance(distance)
        self.adapters = nn.ModuleList(Adapter(student_channels, teacher_channels) for _ in self.levels)

    def forward(
        self,
        teacher_feats: Sequence[torch.Tensor],
        student_feats: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> torch.Tensor:
        check_levels(self.levels, min(len(teacher_feats), len(student_feats)))
        level_terms = []
        for adapter, level in zip(self.adapters, self.levels):
            t = extract_instances(teacher_feats[level].detach(), boxes, image_shape, self.instance_size)
            s = adapter(extract_instances(student_feats[level], boxes, image_shape, self.instance_size))
            distances = feature_distance(t, s, self.distance)
            level_terms.append(distances.sum() / max(1, distances.shape[0]))
        return torch.stack(level_terms).mean()
