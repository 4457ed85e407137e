"""COCO bbox evaluation split in two steps: workers turn detector outputs into plain COCO result
dicts (gatherable across processes), one process scores them with pycocotools' COCOeval."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

METRIC_KEYS = ("mAP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")
BACKGROUND_LABEL = 0  # torchvision's convention: num_classes counts it, no category has it


def detections_to_coco(
    outputs: Sequence[dict[str, torch.Tensor]],
    image_ids: Sequence[int],
    label_to_cat_id: dict[int, int],
) -> list[dict[str, Any]]:
    """torchvision detector outputs (xyxy boxes in original image coordinates, scores, contiguous
    labels) → COCO result dicts ``{image_id, category_id, bbox: [x, y, w, h], score}`` made of
    plain Python ints/floats (bbox rounded to 2 decimals, score to 4).

    Args:
        outputs: one dict per image with ``boxes`` (D, 4) xyxy, ``scores`` (D,), ``labels`` (D,).
        image_ids: the COCO image id of each output, same length (ValueError otherwise).
        label_to_cat_id: contiguous label -> COCO category id; an unknown label raises ValueError,
            except the background label 0: RetinaNet's and FCOS's heads keep a logit for it (never a
            positive in training, but a barely trained head can score it over the threshold), and
            such a detection is dropped.

    Returns:
        One dict per detection, images in the given order.
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"got {len(outputs)} outputs for {len(image_ids)} image ids")
    results: list[dict[str, Any]] = []
    for output, image_id in zip(outputs, image_ids):
        boxes = output["boxes"].detach().to("cpu", torch.float64).reshape(-1, 4).numpy()
        scores = output["scores"].detach().to("cpu", torch.float64).reshape(-1).numpy()
        labels = output["labels"].detach().to("cpu").reshape(-1).tolist()
        for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels):
            if label == BACKGROUND_LABEL and label not in label_to_cat_id:
                continue
            if label not in label_to_cat_id:
                raise ValueError(f"image {image_id}: predicted label {label} has no category id")
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(label_to_cat_id[label]),
                    "bbox": [round(float(v), 2) for v in (x1, y1, x2 - x1, y2 - y1)],
                    "score": round(float(score), 4),
                }
            )
    return results


def coco_metrics(
    coco_gt: COCO,
    detections: Sequence[dict[str, Any]],
    image_ids: Sequence[int] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """COCO bbox AP in percent, keyed by ``METRIC_KEYS``, over ``image_ids`` (default: all images).

    Detections are sorted before scoring, so the result does not depend on the order in which
    they were gathered. No detections gives all zeros. COCOeval reports -1 for a size range
    (AP_S/AP_M/AP_L) that has no non-crowd ground truth among the evaluated images; that is
    reported here as 0.0, so the metrics stay plain finite floats (a 0.0 can thus mean "no such
    objects" as well as "none found"). Values are rounded to 6 decimals. COCOeval's printout is
    shown only with ``verbose=True``.

    Args:
        coco_gt: the ground truth (``CocoDetection.coco``).
        detections: COCO result dicts (:func:`detections_to_coco`), gathered from every process;
            those of images outside ``image_ids`` are ignored, image ids unknown to ``coco_gt`` raise
            ValueError.
        image_ids: the images to evaluate; ``None`` (default): every image of ``coco_gt``.
        verbose: print COCOeval's summary (default False).

    Returns:
        ``{"mAP", "AP50", "AP75", "AP_S", "AP_M", "AP_L"}`` as floats in [0, 100].
    """
    ids = sorted(set(coco_gt.getImgIds() if image_ids is None else image_ids))
    unknown = {d["image_id"] for d in detections} - set(coco_gt.getImgIds())
    if unknown:
        raise ValueError(f"detections for image ids not in the ground truth: {sorted(unknown)[:10]}")
    wanted = set(ids)
    # Copies: loadRes adds fields to the dicts it is given.
    dets = [dict(d, bbox=list(d["bbox"])) for d in detections if d["image_id"] in wanted]
    if not dets or not ids:
        return {k: 0.0 for k in METRIC_KEYS}
    dets.sort(key=lambda d: (d["image_id"], d["category_id"], -d["score"], tuple(d["bbox"])))

    out = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with out:
        coco_dt = coco_gt.loadRes(dets)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.imgIds = ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats[: len(METRIC_KEYS)], dtype=np.float64)
    # Rounded so that a perfect score is exactly 100.0 rather than 99.99999999999999.
    return {k: (0.0 if v < 0 else round(float(v) * 100.0, 6)) for k, v in zip(METRIC_KEYS, stats)}
