"""Student + distillation modules as one trainable module (what DDP wraps); the teacher rides beside it."""

from __future__ import annotations

import torch
from torch import nn

from drkd.distill.base import Distiller
from drkd.models.feature_taps import FeatureTap, freeze, teacher_features


class DistillationModel(nn.Module):
    """One training forward: student detection losses + the distiller's losses, L = L_det + Σ λ_k L_k.

    The teacher is deliberately *not* a submodule: it is not wrapped by DDP, not optimised and not
    saved with the student; it stays in eval mode whatever `.train()` is called on this module.
    Device and dtype moves (``.to()``, ``.half()``, ...) reach it all the same.

    Args:
        student: the torchvision detector being trained (needs ``transform`` and ``backbone``); a
            :class:`~drkd.models.feature_taps.FeatureTap` records its FPN levels when distilling.
        distiller: the method's :class:`~drkd.distill.base.Distiller`, or ``None`` (default) to train
            the student alone (the baseline). Given if and only if ``teacher`` is (ValueError otherwise).
        teacher: the teacher detector, or ``None`` (default); frozen here (eval mode, no gradients).
            Only its ``backbone`` runs, on the student's transformed batch tensor.

    ``forward(images, targets)``: a list of B images (3, H_i, W_i) and their torchvision targets
    (``boxes`` (N_i, 4) xyxy, ``labels`` (N_i,), ...); the student must be in train mode.
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
        """Returns (total loss, every term detached, keyed loss_<name>; `loss_det` is their detection sum).

        The total is a scalar with grad: the student's detection losses plus the distiller's
        :meth:`~drkd.distill.base.Distiller.weighted_total`. The terms: the student's own losses
        (prefixed ``loss_`` where torchvision's key lacks it), ``loss_det``, the distiller's
        unweighted terms and ``loss_total``.
        """
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
