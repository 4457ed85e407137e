"""The interface every distillation method implements, so the engine can treat them alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from drkd.config.methods import MethodParams


def check_structure(teacher_channels: int, student_channels: int, num_levels: int) -> None:
    """The arguments every distiller takes: positive integers, named in the error otherwise."""
    for name, value in (
        ("teacher_channels", teacher_channels),
        ("student_channels", student_channels),
        ("num_levels", num_levels),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_positive(**values: float) -> None:
    """Every keyword's value is > 0 (a loss weight, a temperature); ValueError naming the first that is not."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


def check_feature_levels(
    teacher_feats: Sequence[torch.Tensor], student_feats: Sequence[torch.Tensor], num_levels: int
) -> None:
    """Both feature lists hold the ``num_levels`` FPN levels the distiller was built for."""
    if not len(teacher_feats) == len(student_feats) == num_levels:
        raise ValueError(
            f"expected {num_levels} feature levels, got teacher {len(teacher_feats)}, student {len(student_feats)}"
        )


class Distiller(nn.Module):
    """Distillation losses between frozen teacher features and student features.

    A method subclasses this, calls ``super().__init__(teacher_channels, student_channels,
    num_levels)`` (which checks them and stores them as attributes), fills ``loss_weights`` and
    implements :meth:`losses`. Its trainable pieces (adaptation layers, relation modules, ...) are
    submodules, so they are optimised and checkpointed beside the student; the exported student
    carries none of them.

    Args:
        teacher_channels: channels C_t of every teacher FPN level.
        student_channels: channels C_s of every student FPN level.
        num_levels: number of FPN levels L both sides hand in.

    ``forward(teacher_feats, student_feats, boxes, image_shape)`` takes, for one batch:
      * ``teacher_feats`` / ``student_feats``: L FPN levels, highest resolution first, each
        (B, C, H_l, W_l); teacher tensors come from a frozen model and are detached here.
      * ``boxes``: per image, the GT boxes (N_i, 4, xyxy) in the coordinates of the transformed,
        padded image tensor the features were computed from.
      * ``image_shape``: (H, W) of that padded batch tensor; a level's stride is
        ``image_shape[-1] / feat.shape[-1]``.
    checks the level count and batch size, and returns :meth:`losses`: the *unweighted* loss
    terms, keyed ``loss_<name>``. ``loss_weights`` maps the same keys to their λ; the engine forms
    ``sum(loss_weights[k] * losses[k])`` (:meth:`weighted_total`).
    """

    loss_weights: dict[str, float]

    def __init__(self, teacher_channels: int, student_channels: int, num_levels: int) -> None:
        super().__init__()
        check_structure(teacher_channels, student_channels, num_levels)
        self.teacher_channels = teacher_channels
        self.student_channels = student_channels
        self.num_levels = num_levels
        self.loss_weights = {}

    @classmethod
    def from_params(
        cls, params: MethodParams, teacher_channels: int, student_channels: int, num_levels: int, two_stage: bool
    ) -> Distiller:
        """Build from a method's config section (``params.distiller_kwargs(two_stage)``)."""
        return cls(teacher_channels, student_channels, num_levels, **params.distiller_kwargs(two_stage))

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
        return self.losses([t.detach() for t in teacher_feats], list(student_feats), boxes, image_shape)

    def losses(  # pragma: no cover - interface
        self,
        teacher_feats: list[torch.Tensor],
        student_feats: list[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        """The unweighted loss terms of one batch (arguments as ``forward``'s, teacher detached)."""
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
