"""Instance feature extraction (paper Eq. 5): ROI Align of the GT boxes on FPN levels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import roi_align


def level_stride(feat: torch.Tensor, image_shape: tuple[int, int]) -> float:
    """The real stride of a level: padded image width over feature width, ``image_shape[-1] / W_l``.

    Args:
        feat: one FPN level, (B, C, H_l, W_l).
        image_shape: (H, W) of the padded batch tensor the level was computed from.
    """
    return image_shape[-1] / feat.shape[-1]


def extract_instances(
    feat: torch.Tensor,
    boxes: Sequence[torch.Tensor],
    image_shape: tuple[int, int],
    output_size: int,
    *,
    aligned: bool = True,
    sampling_ratio: int = 2,
) -> torch.Tensor:
    """ξ(x, c, o) of Eq. 5: ROI-align every image's GT boxes on one FPN level to K×K.

    torchvision's ``roi_align`` with ``spatial_scale = 1 / stride`` (:func:`level_stride`). The
    defaults (``aligned=True``: pixel centres at +0.5, boxes shifted by −0.5 px; 2×2 samples per
    bin) are drkd's; the authors' code calls ``roi_align`` with torchvision's defaults
    (``aligned=False``, ``sampling_ratio=-1``: adaptive, ceil(box size / K) samples per bin).

    Args:
        feat: x, one FPN level, (B, C, H_l, W_l).
        boxes: c, per image its GT boxes (N_i, 4), xyxy, in the coordinates of the padded batch tensor;
            moved to ``feat``'s device and kept in at least float32 (a float16 or bfloat16 copy, the student's
            dtype under autocast, would move a box at x ≈ 1000 px by up to 0.5 or 4 px).
        image_shape: (H, W) of that padded batch tensor; sets the level's stride.
        output_size: o, the side K of the pooled K×K instance features.
        aligned: torchvision's half-pixel correction (default True).
        sampling_ratio: samples per bin side; <= 0: adaptive (default 2).

    Returns:
        (ΣN_i, C, K, K) in at least float32 (the pooling runs in float32, as torchvision's autocast runs it),
        instances of image 0 first, in box order; an empty batch of boxes gives a (0, C, K, K)
        tensor. Split it per image with :func:`instance_counts`.
    """
    wide = torch.promote_types(feat.dtype, torch.float32)  # float16/bfloat16 -> float32; float64 stays
    rois = [b.to(dtype=wide, device=feat.device) for b in boxes]
    return roi_align(
        feat.to(wide),
        rois,
        output_size=(output_size, output_size),
        spatial_scale=1.0 / level_stride(feat, image_shape),
        sampling_ratio=sampling_ratio,
        aligned=aligned,
    )


def instance_counts(boxes: Sequence[torch.Tensor]) -> list[int]:
    """Number of GT instances per image, [N_0, N_1, ...], to split the ROI output back per image.

    Args:
        boxes: per image its GT boxes, (N_i, 4).
    """
    return [int(b.shape[0]) for b in boxes]


def pad_by_image(x: torch.Tensor, counts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay the instances of a batch out per image, padded with zeros, so per-image work runs batched.

    Args:
        x: (ΣN_i, ...) per-instance rows, image 0 first (as :func:`extract_instances` returns them).
        counts: N_i per image (:func:`instance_counts`), summing to ``x.shape[0]``.

    Returns:
        ``padded`` (B, N_max, ...), image b's rows in ``padded[b, :N_b]`` and zeros after them
        (differentiable with respect to ``x``), and ``valid`` (B, N_max) bool, True on real rows.
    """
    if sum(counts) != x.shape[0]:
        raise ValueError(f"counts {list(counts)} sum to {sum(counts)}, but there are {x.shape[0]} rows")
    n_max = max(counts, default=0)
    # Built on the host and copied: a boolean-mask assignment on the device would wait for the
    # device (to count the mask's True entries) at every call.
    valid = torch.arange(n_max)[None, :] < torch.tensor(counts)[:, None]
    slots = torch.arange(len(counts) * n_max)[valid.flatten()]
    padded = x.new_zeros((len(counts) * n_max, *x.shape[1:])).index_copy(0, slots.to(x.device), x)
    return padded.view(len(counts), n_max, *x.shape[1:]), valid.to(x.device)
