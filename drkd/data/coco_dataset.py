"""COCO-format detection dataset yielding torchvision detector targets, with strict validation."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from drkd.data.annotation_cache import cached_parse

logger = logging.getLogger("drkd.data")

Target = dict[str, Any]


class DatasetError(ValueError):
    """A problem with a dataset's files; the message names the file and the offending field."""


class CocoDetection(torch.utils.data.Dataset):
    """Images and targets from a COCO ``instances_*.json`` file.

    Category ids are remapped to contiguous labels ``1..C`` (0 is the background, as torchvision
    detectors expect). With ``train=True`` crowd annotations are left out of the targets (they only
    matter to evaluation, which uses ``.coco``); with ``train=False`` they are kept with
    ``iscrowd=1``. Boxes are clipped to the image; those then narrower or lower than 1 px are
    dropped and counted in ``.num_dropped_boxes``. ``area`` is the annotation's COCO area.

    The JSON is validated on construction (``DatasetError`` naming the file and field), every image
    file must exist; images themselves are read on access. The parsed file (without segmentations)
    is cached on the node (:mod:`drkd.data.annotation_cache`), so later runs and ranks skip the parse.

    Args:
        image_dir: directory the images' ``file_name`` entries are relative to.
        annotation_file: the COCO ``instances_*.json``.
        transforms: called as ``transforms(image, target)`` and returning both, e.g.
            :func:`~drkd.data.transforms.build_transforms`; ``None`` (default): none.
        train: leave crowd annotations out of the targets (default True); False keeps them.

    A sample is ``(image, target)``: a float32 (3, H, W) image in [0, 1] and ``{"boxes": (N, 4) xyxy
    BoundingBoxes, "labels": (N,) int64 in 1..C, "image_id": int, "area": (N,) float32,
    "iscrowd": (N,) int64}`` (before ``transforms``). Attributes: ``coco`` (the pycocotools index),
    ``cat_id_to_label``, ``label_to_cat_id``, ``category_names``, ``categories`` (``[id, name]`` of
    labels 1..C), ``num_classes`` (C + 1, background included), ``image_ids`` (dataset order), ``num_dropped_boxes``.
    """

    @property
    def categories(self) -> list[list[int | str]]:
        """``[category id, name]`` of labels 1..C: what a trained model's class indices mean."""
        return [[cid, name] for cid, name in zip(self.label_to_cat_id.values(), self.category_names)]

    def __init__(
        self,
        image_dir: str | Path,
        annotation_file: str | Path,
        transforms: Callable[[tv_tensors.Image, Target], tuple[Any, Target]] | None = None,
        train: bool = True,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        self.transforms = transforms
        self.train = train

        dataset = cached_parse(self.annotation_file, _parse_annotations)
        self.coco = COCO()
        self.coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()

        cat_ids = sorted(c["id"] for c in dataset["categories"])
        self.cat_id_to_label: dict[int, int] = {cid: i + 1 for i, cid in enumerate(cat_ids)}
        self.label_to_cat_id: dict[int, int] = {i + 1: cid for i, cid in enumerate(cat_ids)}
        self.category_names: list[str] = [self.coco.cats[cid]["name"] for cid in cat_ids]
        self.num_classes = len(cat_ids) + 1
        self.image_ids: list[int] = [img["id"] for img in dataset["images"]]

        self._sizes: dict[int, tuple[int, int]] = {}
        present = _file_names(self.image_dir, dataset["images"])
        for i, img in enumerate(dataset["images"]):
            path = self.image_dir / img["file_name"]
            if not (img["file_name"] in present if present is not None else path.is_file()):
                raise DatasetError(f"{self.annotation_file}: images[{i}].file_name: image file {path} does not exist")
            self._sizes[img["id"]] = self._declared_size(i, img, path)

        self.num_dropped_boxes = 0
        self._targets = {image_id: self._build_target(image_id) for image_id in self.image_ids}
        if self.num_dropped_boxes:
            logger.warning(
                "%s: dropped %d degenerate boxes (< 1 px wide or high after clipping to the image)",
                self.annotation_file,
                self.num_dropped_boxes,
            )

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Any, Target]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        try:
            with Image.open(path) as pil:
                pil = pil.convert("RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise DatasetError(f"{path} (from {self.annotation_file}): cannot read image: {e}") from e
        height, width = self._sizes[image_id]
        if pil.size != (width, height):
            raise DatasetError(
                f"{self.annotation_file}: image id {image_id} ({path}) is {pil.size[0]}x{pil.size[1]} "
                f"but width/height say {width}x{height}"
            )
        image = F.to_dtype(F.to_image(pil), torch.float32, scale=True)

        boxes, labels, area, iscrowd = self._targets[image_id]
        target: Target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(boxes), format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(height, width)
            ),
            "labels": torch.from_numpy(labels),
            "image_id": image_id,
            "area": torch.from_numpy(area),
            "iscrowd": torch.from_numpy(iscrowd),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _declared_size(self, index: int, img: dict[str, Any], path: Path) -> tuple[int, int]:
        """(H, W) from the JSON when given, else from the image header."""
        if "width" in img and "height" in img:
            return img["height"], img["width"]
        try:
            with Image.open(path) as pil:
                return pil.size[1], pil.size[0]
        except (OSError, UnidentifiedImageError) as e:
            raise DatasetError(f"{path} (images[{index}] of {self.annotation_file}): cannot read image: {e}") from e

    def _build_target(self, image_id: int) -> tuple[np.ndarray, ...]:
        height, width = self._sizes[image_id]
        boxes, labels, area, iscrowd = [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if self.train and ann["iscrowd"]:
                continue
            x, y, w, h = ann["bbox"]
            x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if x2 - x1 < 1 or y2 - y1 < 1:
                self.num_dropped_boxes += 1
                continue
            boxes.append((x1, y1, x2, y2))
            labels.append(self.cat_id_to_label[ann["category_id"]])
            area.append(ann["area"])
            iscrowd.append(1 if ann["iscrowd"] else 0)
        return (
            np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            np.asarray(labels, dtype=np.int64),
            np.asarray(area, dtype=np.float32),
            np.asarray(iscrowd, dtype=np.int64),
        )


def _file_names(image_dir: Path, images: list[dict[str, Any]]) -> set[str] | None:
    """The names of the files in ``image_dir`` from one directory listing, when every ``file_name``
    is a plain name in it (as COCO's are): on a network file system one listing of 118k entries
    costs far less than 118k stat calls. ``None`` where file names have directories in them."""
    if any("/" in img["file_name"] or "\\" in img["file_name"] for img in images) or not image_dir.is_dir():
        return None
    with os.scandir(image_dir) as entries:
        return {e.name for e in entries}


def collate_detection(batch: list[tuple[Any, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """DataLoader collate: images and targets as lists (detectors take variable-size images)."""
    return [image for image, _ in batch], [target for _, target in batch]


def _parse_annotations(path: Path) -> dict[str, Any]:
    """The validated annotation file, without the ``segmentation`` entries (boxes are all drkd uses,
    and on COCO the polygons are most of the file)."""
    dataset = _load_json(path)
    _validate(dataset, path)
    for ann in dataset["annotations"]:
        ann.pop("segmentation", None)
    return dataset


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: annotation file does not exist") from e
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: malformed JSON at line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read annotation file: {e}") from e


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _validate(dataset: Any, path: Path) -> None:
    """Check what pycocotools and this module rely on; fill COCO defaults for area/iscrowd."""

    def fail(field: str, problem: str) -> DatasetError:
        return DatasetError(f"{path}: {field}: {problem}")

    def require(obj: dict[str, Any], where: str, key: str, check: Callable[[Any], bool], kind: str) -> Any:
        if key not in obj:
            raise fail(f"{where}.{key}", "missing required field")
        if not check(obj[key]):
            raise fail(f"{where}.{key}", f"expected {kind}, got {obj[key]!r}")
        return obj[key]

    if not isinstance(dataset, dict):
        raise fail("<root>", f"expected a JSON object, got {type(dataset).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in dataset:
            raise fail(key, "missing required field")
        if not isinstance(dataset[key], list):
            raise fail(key, f"expected a list, got {type(dataset[key]).__name__}")

    cat_ids: set[int] = set()
    for i, cat in enumerate(dataset["categories"]):
        where = f"categories[{i}]"
        if not isinstance(cat, dict):
            raise fail(where, "expected an object")
        cid = require(cat, where, "id", _is_int, "an integer")
        require(cat, where, "name", lambda v: isinstance(v, str), "a string")
        if cid in cat_ids:
            raise fail(f"{where}.id", f"duplicate category id {cid}")
        cat_ids.add(cid)

    image_ids: set[int] = set()
    for i, img in enumerate(dataset["images"]):
        where = f"images[{i}]"
        if not isinstance(img, dict):
            raise fail(where, "expected an object")
        iid = require(img, where, "id", _is_int, "an integer")
        require(img, where, "file_name", lambda v: isinstance(v, str) and v != "", "a non-empty string")
        for key in ("width", "height"):
            if key in img:
                require(img, where, key, lambda v: _is_int(v) and v > 0, "a positive integer")
        if iid in image_ids:
            raise fail(f"{where}.id", f"duplicate image id {iid}")
        image_ids.add(iid)

    ann_ids: set[int] = set()
    for i, ann in enumerate(dataset["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise fail(where, "expected an object")
        aid = require(ann, where, "id", _is_int, "an integer")
        if aid in ann_ids:
            raise fail(f"{where}.id", f"duplicate annotation id {aid}")
        ann_ids.add(aid)
        if require(ann, where, "image_id", _is_int, "an integer") not in image_ids:
            raise fail(f"{where}.image_id", f"{ann['image_id']} is not the id of any image")
        if require(ann, where, "category_id", _is_int, "an integer") not in cat_ids:
            raise fail(f"{where}.category_id", f"{ann['category_id']} is not the id of any category")
        bbox = require(
            ann,
            where,
            "bbox",
            lambda v: isinstance(v, list) and len(v) == 4 and all(_is_number(x) for x in v),
            "[x, y, width, height] of finite numbers",
        )
        # COCOeval reads area (size ranges) and iscrowd from every GT annotation.
        if "area" in ann:
            require(ann, where, "area", lambda v: _is_number(v) and v >= 0, "a non-negative number")
        else:
            ann["area"] = float(max(bbox[2], 0) * max(bbox[3], 0))
        if "iscrowd" in ann:
            require(ann, where, "iscrowd", lambda v: _is_int(v) and v in (0, 1), "0 or 1")
        else:
            ann["iscrowd"] = 0
