"""Faster R-CNN's multi-scale ROI Align on the CPU as one weighted gather (``embedding_bag``).

torchvision's CPU ``roi_align`` runs one scalar loop per level in a single thread, and its backward
scatters every sample point into the (B, C, H, W) gradient one channel plane at a time; in a
training step of the embedded default's two-stage student (1024 sampled ROIs, batch 8) the
backward alone was about 18 % of the step (torch profiler, README "Speed"). The same arithmetic is
a sparse product: each output bin is a fixed weighted sum of feature pixels (bilinear weights of
its sampling points, divided by their count), so all levels' features go into one
(Σ_l B·H_l·W_l, C) table and every bin becomes one bag of ``F.embedding_bag(mode="sum")`` with
per-sample weights. Its backward accumulates whole C-vectors per pixel (contiguous rows) and both
directions use torch's threads.

The sampling is torchvision's (``torchvision/csrc/ops/cpu/roi_align_kernel.cpp``): a ROI's bins
are ``output_size`` equal parts of the scaled box (at least 1×1 feature pixel unless ``aligned``,
whose boxes shift by −0.5 px); each bin averages ``sampling_ratio``² bilinear samples at the
centres of its sub-cells; a sample outside [−1, H] × [−1, W] contributes 0 (and still counts),
and one in [−1, 0) is clamped to 0, one at or beyond the last row or column to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales


def _axis_taps(start: Tensor, bin_size: Tensor, bins: int, grid: int, size: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear taps along one axis for every (ROI, bin, sample): indices and weights, (R, bins, grid, 2).

    Args:
        start: (R,) the scaled box's first coordinate on this axis (after the −0.5 shift when aligned).
        bin_size: (R,) the length of one bin, in feature pixels.
        bins: bins per ROI on this axis (``output_size``'s entry).
        grid: samples per bin on this axis (``sampling_ratio``).
        size: (R,) the feature map's length on this axis (H or W of the ROI's level), integer-valued.

    Returns:
        (low and high pixel index, their weights); a sample outside [−1, size] has both weights 0.
    """
    steps = torch.arange(bins, dtype=start.dtype, device=start.device)
    sub = torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5
    # torchvision's order of operations: start + p * bin + (i + .5) * bin / grid
    pos = (
        start[:, None, None]
        + steps[None, :, None] * bin_size[:, None, None]
        + sub[None, None, :] * bin_size[:, None, None] / grid
    )
    limit = size.to(pos.dtype)[:, None, None]
    inside = (pos >= -1.0) & (pos <= limit)
    pos = pos.clamp_min(0.0)
    low = pos.floor()
    last = limit - 1
    at_end = low >= last
    low = torch.where(at_end, last, low)
    pos = torch.where(at_end, low, pos)
    high = torch.where(at_end, low, low + 1)
    frac = pos - low
    weights = torch.stack([1.0 - frac, frac], dim=-1) * inside.unsqueeze(-1).to(pos.dtype)
    return torch.stack([low, high], dim=-1).long(), weights


def roi_align_plan(
    rois: Tensor,
    levels: Tensor,
    scales: list[float],
    shapes: list[tuple[int, int, int]],
    output_size: tuple[int, int],
    sampling_ratio: int,
    aligned: bool = False,
) -> tuple[Tensor, Tensor]:
    """Which rows of the stacked feature table each output bin reads, and with what weight.

    Args:
        rois: (R, 5) float, ``[batch index, x1, y1, x2, y2]`` in image coordinates.
        levels: (R,) long, the pyramid level each ROI pools from (index into ``scales``/``shapes``).
        scales: per level, the spatial scale (1 / stride) of its feature map.
        shapes: per level, (B, H, W) of its feature map; the table stacks levels in this order, each
            flattened as (B, H, W) rows (:func:`stack_levels`).
        output_size: (PH, PW) bins per ROI.
        sampling_ratio: samples per bin along each axis, > 0 (torchvision's adaptive 0 is not supported).
        aligned: shift the box by −0.5 feature pixel and drop the 1-pixel minimum size (torchvision's ``aligned``).

    Returns:
        ``(indices, weights)``, each (R·PH·PW, 4·sampling_ratio²): row indices into the table and
        the bilinear weights divided by the number of samples (0 for samples outside the map).
    """
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be >= 1 here, got {sampling_ratio}")
    ph, pw = output_size
    dtype, device = rois.dtype, rois.device
    scale = torch.tensor(scales, dtype=dtype, device=device)[levels]
    shape = torch.tensor(shapes, dtype=torch.long, device=device)[levels]  # (R, 3): B, H, W
    sizes = [b * h * w for b, h, w in shapes]
    level_start = torch.tensor([0, *sizes[:-1]], dtype=torch.long, device=device).cumsum(0)[levels]
    height, width = shape[:, 1], shape[:, 2]
    offset = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * scale - offset, rois[:, 2] * scale - offset
    box_w, box_h = rois[:, 3] * scale - offset - x1, rois[:, 4] * scale - offset - y1
    if not aligned:
        box_w, box_h = box_w.clamp_min(1.0), box_h.clamp_min(1.0)
    y_idx, y_w = _axis_taps(y1, box_h / ph, ph, sampling_ratio, height)  # (R, PH, g, 2)
    x_idx, x_w = _axis_taps(x1, box_w / pw, pw, sampling_ratio, width)  # (R, PW, g, 2)
    base = level_start + rois[:, 0].long() * height * width  # (R,) first row of the ROI's image
    r = rois.shape[0]
    # (R, PH, PW, g_y, 2, g_x, 2): one entry per (bin, sample, tap)
    rows = (
        base[:, None, None, None, None, None, None]
        + (y_idx * width[:, None, None, None])[:, :, None, :, :, None, None]
        + x_idx[:, None, :, None, None, :, :]
    )
    weights = y_w[:, :, None, :, :, None, None] * x_w[:, None, :, None, None, :, :] / sampling_ratio**2
    return rows.reshape(r * ph * pw, -1), weights.reshape(r * ph * pw, -1)


def stack_levels(features: list[Tensor]) -> Tensor:
    """The feature table: every level's (B, C, H, W) map as (B·H·W, C) rows, levels stacked in order."""
    return torch.cat([f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]) for f in features])


def roi_align_gather(
    features: list[Tensor],
    rois: Tensor,
    levels: Tensor,
    scales: list[float],
    output_size: tuple[int, int],
    sampling_ratio: int,
    aligned: bool = False,
) -> Tensor:
    """ROI Align of every ROI on its own level, as one ``embedding_bag`` over the stacked levels.

    Equals torchvision's ``roi_align(features[l], rois_l, output_size, scales[l], sampling_ratio,
    aligned)`` for the ROIs of each level l, up to float rounding, forward and backward (gradients
    reach ``features``, none the boxes, as in torchvision).

    Args:
        features: L maps (B, C, H_l, W_l) with equal B and C.
        rois: (R, 5) ``[batch index, x1, y1, x2, y2]`` in image coordinates.
        levels: (R,) long, each ROI's level.
        scales: L spatial scales (1 / stride).
        output_size: (PH, PW).
        sampling_ratio: samples per bin per axis (>= 1).
        aligned: torchvision's ``aligned`` (default False, what Faster R-CNN's box pooler uses).

    Returns:
        (R, C, PH, PW) in float32 (the product runs in float32, as torchvision's autocast runs ROI Align).
    """
    ph, pw = output_size
    channels = features[0].shape[1]
    if rois.shape[0] == 0:
        return features[0].new_zeros((0, channels, ph, pw), dtype=torch.float32)
    table = stack_levels([f.float() for f in features])
    shapes = [(f.shape[0], f.shape[2], f.shape[3]) for f in features]
    with torch.no_grad():
        rows, weights = roi_align_plan(rois.float(), levels, scales, shapes, output_size, sampling_ratio, aligned)
    pooled = F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")  # (R·PH·PW, C)
    return pooled.view(rois.shape[0], ph, pw, channels).permute(0, 3, 1, 2).contiguous()


class GatherMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (same levels, scales, level mapping and output), computed
    by :func:`roi_align_gather` on the CPU; on other devices, when tracing, or with torchvision's
    adaptive ``sampling_ratio`` (0) it is torchvision's own forward.

    Args: those of ``MultiScaleRoIAlign`` (``featmap_names``, ``output_size``, ``sampling_ratio``,
    ``canonical_scale``, ``canonical_level``).
    """

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        x_filtered = _filter_input(x, self.featmap_names)
        if x_filtered[0].device.type != "cpu" or self.sampling_ratio < 1 or torchvision._is_tracing():
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                x_filtered, image_shapes, self.canonical_scale, self.canonical_level
            )
        # with one level the mapper's range is that level, so every ROI maps to index 0
        levels = self.map_levels(boxes)
        rois = _convert_to_roi_format(boxes)
        pooled = roi_align_gather(x_filtered, rois, levels, self.scales, tuple(self.output_size), self.sampling_ratio)
        return pooled.to(x_filtered[0].dtype)


def gather_pooler(pooler: MultiScaleRoIAlign) -> GatherMultiScaleRoIAlign:
    """The same pooler (levels, output size, sampling ratio, canonical scale and level) computed by
    :class:`GatherMultiScaleRoIAlign`; it has no parameters, so state dicts are unchanged."""
    return GatherMultiScaleRoIAlign(
        pooler.featmap_names,
        pooler.output_size,
        pooler.sampling_ratio,
        canonical_scale=pooler.canonical_scale,
        canonical_level=pooler.canonical_level,
    )


def torchvision_box_pooler() -> MultiScaleRoIAlign:
    """torchvision's own default Faster R-CNN box pooler: P2–P5 (feature keys "0"–"3"), 7×7 bins, 2×2 samples per bin."""
    return MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2)


def box_pooler() -> GatherMultiScaleRoIAlign:
    """The same pooler as :func:`torchvision_box_pooler`, computed by :class:`GatherMultiScaleRoIAlign`."""
    return gather_pooler(torchvision_box_pooler())
