"""The interface every distillation method implements, so the engine can treat them alike."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def check_structure(teacher_channels: int, student_channels: int, num_levels: int) -> None:
    """The arguments every distiller takes: positive integers, named in the error otherwise."""
    for name, value in (("teacher_channels", teacher_channels), ("student_channels", student_channels), ("num_levels", num_levels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_feature_levels(teacher_feats: Sequence[torch.Tensor], student_feats: Sequence[torch.Tensor], num_levels: int) -> None:
    """Both feature lists hold the ``num_levels`` FPN levels the distiller was built for."""
    if not len(teacher_feats) == len(student_feats) == num_levels:
        raise ValueError(
            f"expected {num_levels} feature levels, got teacher {len(teacher_feats)}, student {len(student_feats)}")


class Distiller(nn.Module):
    """Distillation losses between frozen teacher features and student features.

    Subclasses hold their trainable pieces (adaptation layers, relation modules, ...) as
    submodules, so they are optimised and checkpointed beside the student; the exported
    student carries none of them.

    ``forward`` takes, for one batch:
      * ``teacher_feats`` / ``student_feats``: FPN levels, highest resolution first, each (B, C, H, W);
        teacher tensors come from a frozen model under ``no_grad``.
      * ``boxes``: per image, the GT boxes (N_i, 4, xyxy) in the coordinates of the transformed,
        padded image tensor the features were computed from.
      * ``image_shape``: (H, W) of that padded batch tensor; a level's stride is
        ``image_shape[-1] / feat.shape[-1]``.
    and returns the *unweighted* loss terms, keyed ``loss_<name>``. ``loss_weights`` maps the same
    keys to their λ; the engine forms ``sum(loss_weights[k] * losses[k])``.
    """

    loss_weights: dict[str, float]

    def forward(  # pragma: no cover - interface
        self,
        teacher_feats: Sequence[torch.Tensor],
        student_feats: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def weighted_total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ λ_k · L_k over the terms this distiller returned."""
        total = None
        for key, value in losses.items():
            term = self.loss_weights[key] * value
            total = term if total is None else total + term
        if total is None:
            raise ValueError("weighted_total() needs at least one loss term")
        return total
