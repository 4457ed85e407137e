"""Feature capture: what one student forward saw, and the frozen teacher's FPN on the same tensors.

Hooks on the detector's public pieces (`transform`, `backbone`) rather than a copy of its forward,
so teacher and student see the very same transformed image tensor and the GT boxes are in its
coordinates.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList


class FeatureTap:
    """Records the transformed batch and every FPN level of a torchvision detector's forward.

    Forward hooks on ``detector.transform`` and ``detector.backbone``; after each forward:
      * ``images``: the transform's ``ImageList`` (``images.tensors`` is the padded (B, 3, H, W) batch);
      * ``targets``: the transformed targets (``None`` when the detector ran without targets);
      * ``features``: the backbone's L FPN levels, each (B, C, H_l, W_l), highest resolution first.

    Args:
        detector: a torchvision detector (anything with ``transform`` and ``backbone``; TypeError otherwise).
    """

    def __init__(self, detector: nn.Module) -> None:
        for part in ("transform", "backbone"):
            if not hasattr(detector, part):
                raise TypeError(f"{type(detector).__name__} has no `{part}`: not a torchvision detector")
        self.images: ImageList | None = None
        self.targets: list[dict[str, torch.Tensor]] | None = None
        self.features: list[torch.Tensor] = []
        self._handles = [
            detector.transform.register_forward_hook(self._on_transform),
            detector.backbone.register_forward_hook(self._on_backbone),
        ]

    def _on_transform(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.images, self.targets = output

    def _on_backbone(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.features = list(output.values()) if isinstance(output, dict) else [output]

    @property
    def boxes(self) -> list[torch.Tensor]:
        """GT boxes in the transformed (resized, padded-batch) image coordinates: per image (N_i, 4), xyxy."""
        if self.targets is None:
            raise RuntimeError("no targets captured: the detector ran without targets (eval mode?)")
        return [t["boxes"] for t in self.targets]

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the padded batch tensor the features were computed from."""
        if self.images is None:
            raise RuntimeError("nothing captured yet: run the detector first")
        h, w = self.images.tensors.shape[-2:]
        return int(h), int(w)

    def clear(self) -> None:
        """Drop what was recorded (frees the batch and the feature maps)."""
        self.images, self.targets, self.features = None, None, []

    def remove(self) -> None:
        """Remove the hooks; the tap records nothing more."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def freeze(teacher: nn.Module) -> nn.Module:
    """Eval mode and no gradients, for good: the teacher is never trained. Returns ``teacher`` itself."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def teacher_features(teacher: nn.Module, image_tensor: torch.Tensor) -> list[torch.Tensor]:
    """The teacher's backbone + FPN only (its heads would be wasted work), frozen, under no_grad.

    Args:
        teacher: a frozen torchvision detector (see :func:`freeze`).
        image_tensor: the student's padded, transformed batch (B, 3, H, W) (``FeatureTap.images.tensors``);
            the backbone runs under whatever autocast surrounds the call (the training step's).

    Returns:
        The L FPN levels, each (B, C_t, H_l, W_l) in float32, highest resolution first.
    """
    with torch.no_grad():
        out = teacher.backbone(image_tensor)
    return [f.float() for f in out.values()]


def fpn_channels(detector: nn.Module) -> int:
    """Channels C of every FPN level of a torchvision detector (``detector.backbone.out_channels``)."""
    return int(detector.backbone.out_channels)
