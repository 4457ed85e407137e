"""Binary foreground masks of GT boxes on FPN levels."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from drkd.distill.instance_features import level_stride


def box_cells(
    image_boxes: torch.Tensor, stride: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The feature cells each box covers on a level of stride s: columns x0 .. x1 − 1 and rows
    y0 .. y1 − 1, with x0 = floor(x_1/s), x1 = max(ceil(x_2/s), x0 + 1) (rows alike), so a box thinner
    than a cell still covers the cell it lies in.

    Args:
        image_boxes: (N, 4) xyxy boxes of one image, in padded-batch coordinates.
        stride: the level's stride s.
        device: where the results go.

    Returns:
        ``(x0, y0, x1, y1)``, each (N,) float32 (whole numbers).
    """
    cells = image_boxes.detach().to(device=device, dtype=torch.float32).reshape(-1, 4) / stride
    x0, y0 = cells[:, 0].floor(), cells[:, 1].floor()
    return x0, y0, torch.maximum(cells[:, 2].ceil(), x0 + 1), torch.maximum(cells[:, 3].ceil(), y0 + 1)


def foreground_mask(boxes: Sequence[torch.Tensor], feat: torch.Tensor, image_shape: tuple[int, int]) -> torch.Tensor:
    """Binary foreground mask of one FPN level: 1 where a feature cell's footprint overlaps any GT box of its image.

    Cell (i, j) covers image pixels [j·s, (j+1)·s) × [i·s, (i+1)·s) with s the level stride, so a
    box marks columns floor(x1/s) .. ceil(x2/s) - 1; a box thinner than one cell still marks the
    cell it lies in. Images without boxes get an all-zero mask.

    Args:
        boxes: per image its GT boxes (N_i, 4), xyxy, in the coordinates of the padded batch tensor;
            one entry per image of ``feat`` (ValueError otherwise).
        feat: the FPN level, (B, C, H, W); only its shape, dtype and device are used.
        image_shape: (H, W) of the padded batch tensor; s = ``image_shape[-1] / W``.

    Returns:
        (B, 1, H, W) of 0s and 1s, with ``feat``'s dtype and device; never requires grad.
    """
    b, _, h, w = feat.shape
    if len(boxes) != b:
        raise ValueError(f"got boxes for {len(boxes)} images but features for {b}")
    stride = level_stride(feat, image_shape)
    mask = torch.zeros(b, 1, h, w, dtype=feat.dtype, device=feat.device)
    rows = torch.arange(h, device=feat.device, dtype=torch.float32)
    cols = torch.arange(w, device=feat.device, dtype=torch.float32)
    for i, image_boxes in enumerate(boxes):
        if image_boxes.numel() == 0:
            continue
        x0, y0, x1, y1 = box_cells(image_boxes, stride, feat.device)
        in_cols = (cols[None] >= x0[:, None]) & (cols[None] < x1[:, None])  # (N, W)
        in_rows = (rows[None] >= y0[:, None]) & (rows[None] < y1[:, None])  # (N, H)
        covered = in_rows.float().transpose(0, 1) @ in_cols.float()  # (H, W): boxes covering the cell
        mask[i, 0] = (covered > 0).to(feat.dtype)
    return mask


def foreground_masks(
    feats: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor], image_shape: tuple[int, int]
) -> list[torch.Tensor]:
    """:func:`foreground_mask` for every FPN level (note the argument order: features first).

    Args:
        feats: the L FPN levels, each (B, C, H_l, W_l).
        boxes: per image its GT boxes (N_i, 4), xyxy, in padded-batch coordinates.
        image_shape: (H, W) of the padded batch tensor.

    Returns:
        L masks, each (B, 1, H_l, W_l).
    """
    return [foreground_mask(boxes, feat, image_shape) for feat in feats]
