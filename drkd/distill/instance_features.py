"""Instance feature extraction (paper Eq. 5): ROI Align of the GT boxes on FPN levels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import roi_align


def level_stride(feat: torch.Tensor, image_shape: tuple[int, int]) -> float:
    """The real stride of a level: padded image width over feature width."""
    return image_shape[-1] / feat.shape[-1]


def extract_instances(
    feat: torch.Tensor,
    boxes: Sequence[torch.Tensor],
    image_shape: tuple[int, int],
    output_size: int,
) -> torch.Tensor:
    """ξ(x, c, o): ROI-align every image's GT boxes on one level.

    Returns (ΣN_i, C, K, K), instances of image 0 first, in box order; an empty batch of boxes
    gives a (0, C, K, K) tensor.
    """
    rois = [b.to(dtype=feat.dtype, device=feat.device) for b in boxes]
    return roi_align(
        feat,
        rois,
        output_size=(output_size, output_size),
        spatial_scale=1.0 / level_stride(feat, image_shape),
        sampling_ratio=2,
        aligned=True,
    )


def instance_counts(boxes: Sequence[torch.Tensor]) -> list[int]:
    """Number of GT instances per image, to split the ROI output back per image."""
    return [int(b.shape[0]) for b in boxes]
