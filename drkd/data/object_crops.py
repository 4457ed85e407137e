"""Object crops of a detection dataset, for pretraining a backbone as a classifier on its domain.

The COCO detectors start from ImageNet-pretrained backbones; the embedded default's synthetic shapes
have no such backbone, and a detector trained from random initialisation barely leaves the start in
a few hundred iterations. A classifier trained once on the dataset's own object crops (each shape
class, plus a background class of crops that hold no object) is the miniature's stand-in for
ImageNet pretraining.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

BACKGROUND_LABEL = 0


def _square_around(box: np.ndarray, context: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The square of side ``(1 + context) * max(w, h)`` centred on ``box`` (xyxy), clipped to the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = (1.0 + context) * max(x1 - x0, y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    right, bottom = int(round(cx + side / 2)), int(round(cy + side / 2))
    left, top = max(0, left), max(0, top)
    right, bottom = min(width, max(right, left + 1)), min(height, max(bottom, top + 1))
    return left, top, right, bottom


def _overlaps(window: tuple[int, int, int, int], boxes: np.ndarray) -> bool:
    """Whether ``window`` (xyxy) intersects any of ``boxes`` (N, 4) at all."""
    if len(boxes) == 0:
        return False
    left, top, right, bottom = window
    ix = np.minimum(right, boxes[:, 2]) - np.maximum(left, boxes[:, 0])
    iy = np.minimum(bottom, boxes[:, 3]) - np.maximum(top, boxes[:, 1])
    return bool(((ix > 0) & (iy > 0)).any())


def object_crops(
    dataset: Any,
    size: int = 64,
    context: float = 0.2,
    backgrounds_per_image: int = 1,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every annotated object of ``dataset`` as a square crop, plus crops of background.

    Each object's crop is the square of side (1 + ``context``) × its longer box side, centred on the
    box and clipped to the image, resized to ``size`` × ``size`` (bilinear); its label is the
    object's (1..C). Per image, ``backgrounds_per_image`` squares that intersect no box, of a side
    drawn from the objects' range, get label 0 (``BACKGROUND_LABEL``); an image where none fits
    after 20 draws gives fewer.

    Args:
        dataset: a :class:`~drkd.data.coco_dataset.CocoDetection` (or a ``Subset`` of one) without
            transforms: its samples are float (3, H, W) images in [0, 1] and their targets.
        size: side of every crop in pixels; default 64.
        context: margin around the box, as a fraction of its longer side; default 0.2.
        backgrounds_per_image: background crops drawn per image; default 1.
        seed: seeds the background draws; default 0.

    Returns:
        ``(crops, labels)``: uint8 (N, 3, size, size) and int64 (N,) with labels in 0..C.
    """
    rng = np.random.default_rng(seed)
    crops: list[torch.Tensor] = []
    labels: list[int] = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        height, width = image.shape[-2:]
        boxes = target["boxes"].numpy() if len(target["boxes"]) else np.zeros((0, 4), np.float32)
        windows = [(_square_around(b, context, width, height), int(lbl)) for b, lbl in zip(boxes, target["labels"])]
        for _ in range(backgrounds_per_image):
            for _attempt in range(20):
                side = int(rng.integers(12, max(13, min(width, height) // 2)))
                left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
                window = (left, top, left + side, top + side)
                if not _overlaps(window, boxes):
                    windows.append((window, BACKGROUND_LABEL))
                    break
        for (left, top, right, bottom), label in windows:
            patch = image[:, top:bottom, left:right].unsqueeze(0)
            resized = F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False)[0]
            crops.append((resized.clamp(0, 1) * 255).round().to(torch.uint8))
            labels.append(label)
    if not crops:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
    return torch.stack(crops), torch.tensor(labels, dtype=torch.int64)
