"""Student + distillation modules as one trainable module (what DDP wraps); the teacher rides beside it."""

from __future__ import annotations

import torch
from torch import nn

from drkd.distill.base import Distiller
from drkd.models.feature_taps import FeatureTap, freeze, teacher_features


class DistillationModel(nn.Module):
    """One training forward: student detection losses + the distiller's losses.

    The teacher is deliberately *not* a submodule: it is not wrapped by DDP, not optimised and not
    saved with the student; it stays in eval mode whatever `.train()` is called on this module.
    """

    def __init__(
        self, student: nn.Module, distiller: Distiller | None = None, teacher: nn.Module | None = None
    ) -> None:
        super().__init__()
        if (distiller is None) != (teacher is None):
            raise ValueError("a distiller needs a teacher and a teacher needs a distiller")
        self.student = student
        self.distiller = distiller
        self.__dict__["teacher"] = freeze(teacher) if teacher is not None else None
        self.tap = FeatureTap(student) if distiller is not None else None

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        """`.to(device)`, `.half()`, channels_last ... reach the teacher too, though it is no submodule."""
        super()._apply(fn, recurse)
        if self.teacher is not None:
            self.teacher._apply(fn, recurse)
        return self

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns (total loss, every term detached, keyed loss_<name>; `loss_det` is their detection sum)."""
        det = self.student(images, targets)
        loss = sum(det.values())
        terms = {k if k.startswith("loss_") else f"loss_{k}": v.detach() for k, v in det.items()}
        terms["loss_det"] = loss.detach()
        if self.distiller is not None:
            tap = self.tap
            t_feats = teacher_features(self.teacher, tap.images.tensors)
            distill = self.distiller(t_feats, tap.features, tap.boxes, tap.image_shape)
            loss = loss + self.distiller.weighted_total(distill)
            terms.update({k: v.detach() for k, v in distill.items()})
            tap.clear()
        terms["loss_total"] = loss.detach()
        return loss, terms
