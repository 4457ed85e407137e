"""Detection transforms (torchvision.transforms.v2) for CocoDetection samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

# Per-box tensors SanitizeBoundingBoxes must filter together with the boxes.
_PER_BOX_KEYS = ("labels", "area", "iscrowd")


def _per_box_tensors(inputs: Any) -> tuple[torch.Tensor, ...]:
    """labels_getter for SanitizeBoundingBoxes: the (image, target) sample's per-box tensors."""
    target = inputs[1] if isinstance(inputs, (tuple, list)) else inputs
    if not isinstance(target, Mapping) or "labels" not in target:
        raise ValueError("expected an (image, target) sample whose target has a 'labels' tensor")
    return tuple(target[k] for k in _PER_BOX_KEYS if k in target)


def build_transforms(
    train: bool,
    hflip_prob: float = 0.5,
    resize_scales: Sequence[int] | None = None,
    max_size: int | None = None,
) -> v2.Transform:
    """Transforms taking and returning ``(image, target)``.

    Training: random horizontal flip, optional RandomShortestSize(resize_scales, max_size), then
    SanitizeBoundingBoxes, which removes boxes the augmentation made degenerate together with their
    labels/area/iscrowd. ``area`` keeps its original-image value (detectors don't use it).
    Evaluation: identity, so predictions come back in original image coordinates.
    (Resizing to the detector's input size is the detector's own transform, not this.)

    Args:
        train: build the training augmentation (True) or the identity (False).
        hflip_prob: probability of the horizontal flip; default 0.5. Training only.
        resize_scales: shorter-side sizes RandomShortestSize picks from; ``None`` or empty (default):
            no resize. Training only.
        max_size: RandomShortestSize's cap on the longer side; ``None`` (default): no cap.

    Returns:
        A ``torchvision.transforms.v2`` transform, called as ``transform(image, target)``.
    """
    if not train:
        return v2.Identity()
    steps: list[v2.Transform] = [v2.RandomHorizontalFlip(hflip_prob)]
    if resize_scales:
        steps.append(v2.RandomShortestSize(list(resize_scales), max_size))
    steps.append(v2.SanitizeBoundingBoxes(labels_getter=_per_box_tensors))
    return v2.Compose(steps)
