"""FGD's focal masks: which feature cells are foreground, how much each counts (Eq. 1–3), and the
spatial and channel attention of a feature map (Eq. 5–6)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from drkd.distill.foreground_mask import box_cells
from drkd.distill.instance_features import level_stride

BOX_CELLS = ("paper", "authors")


def scale_masks(
    boxes: Sequence[torch.Tensor], feat: torch.Tensor, image_shape: tuple[int, int], mode: str = "paper"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The foreground and background scale masks of one FPN level.

    Foreground (Eq. 1–2): a cell inside GT box r gets 1/(H_r·W_r), H_r × W_r the box's size in cells;
    a cell in several boxes takes the smallest box's (the largest value). Background (Eq. 3): every
    other cell gets 1/N_bg, N_bg the image's background cell count (all zero if there is none).

    Args:
        boxes: per image its GT boxes (N_i, 4), xyxy, in padded-batch coordinates.
        feat: the level, (B, C, H, W); only its shape and device are used.
        image_shape: (H, W) of the padded batch; the stride is ``image_shape[-1] / W``.
        mode: the ``distill.fgd.box_cells`` setting. ``paper``: box r covers the cells of
            :func:`~drkd.distill.foreground_mask.box_cells`; ``authors``: yzd-v/FGD's indexing, one
            more cell on each axis (counted in the area) and the x range applied to rows, the y range
            to columns (clipped to the map).

    Returns:
        ``(fg, bg)``, each (B, H, W) float32.
    """
    if mode not in BOX_CELLS:
        raise ValueError(f"box_cells must be one of {BOX_CELLS}, got {mode!r}")
    b, _, h, w = feat.shape
    if len(boxes) != b:
        raise ValueError(f"got boxes for {len(boxes)} images but features for {b}")
    stride = level_stride(feat, image_shape)
    fg = torch.zeros(b, h, w, device=feat.device)
    rows = torch.arange(h, device=feat.device, dtype=torch.float32)
    cols = torch.arange(w, device=feat.device, dtype=torch.float32)
    for i, image_boxes in enumerate(boxes):
        if image_boxes.numel() == 0:
            continue
        if mode == "paper":
            x0, y0, x1, y1 = box_cells(image_boxes, stride, feat.device)
            row_lo, row_hi, col_lo, col_hi = y0, y1, x0, x1
        else:  # inclusive ceil, then the [x, y] indexing of an (H, W) map
            cells = image_boxes.detach().to(device=feat.device, dtype=torch.float32).reshape(-1, 4) / stride
            x0, y0, x1, y1 = cells[:, 0].floor(), cells[:, 1].floor(), cells[:, 2].ceil() + 1, cells[:, 3].ceil() + 1
            row_lo, row_hi, col_lo, col_hi = x0, x1, y0, y1
        area = (x1 - x0) * (y1 - y0)  # (N,)
        in_rows = (rows[None] >= row_lo[:, None]) & (rows[None] < row_hi[:, None])  # (N, H)
        in_cols = (cols[None] >= col_lo[:, None]) & (cols[None] < col_hi[:, None])  # (N, W)
        inside = in_rows[:, :, None] & in_cols[:, None, :]  # (N, H, W)
        fg[i] = (inside.float() / area[:, None, None]).amax(dim=0)
    bg = (fg == 0).float()
    count = bg.sum(dim=(1, 2), keepdim=True)
    return fg, torch.where(count > 0, bg / count.clamp(min=1), bg)


def attention(feat: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial and channel attention (Eq. 5–6) of a feature map.

    A^S = H·W · softmax_{(i,j)}(mean_c |F| / T),   A^C = C · softmax_c(mean_{(i,j)} |F| / T).

    Args:
        feat: (B, C, H, W); computed in float32.
        temperature: T > 0.

    Returns:
        ``(spatial (B, H, W), channel (B, C))``, float32; each sums to H·W (resp. C) per image.
    """
    b, c, h, w = feat.shape
    value = feat.float().abs()
    spatial = h * w * F.softmax((value.mean(dim=1) / temperature).flatten(1), dim=1).view(b, h, w)
    channel = c * F.softmax(value.mean(dim=(2, 3)) / temperature, dim=1)
    return spatial, channel
