"""Deterministic synthetic COCO-format detection dataset of coloured shapes.

The class of an object is its shape (circle, square, triangle, cross, ring, diamond); its colour
is random, so colour carries no class information. Images have a textured, noisy background with
unlabeled clutter (line segments, irregular blobs), objects may occlude each other, and box sizes
are spread over COCO's small / medium / large ranges so AP_S, AP_M and AP_L are all meaningful.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from drkd.data.atomic_file import atomic_write_bytes

logger = logging.getLogger("drkd.data")

# Bump whenever the generated content changes, so ensure_synthetic_coco() regenerates stale copies.
GENERATOR_VERSION = 1

SHAPE_NAMES = ("circle", "square", "triangle", "cross", "ring", "diamond")

# (name, probability, min side, max side) in pixels; COCO: small < 32², medium < 96², large ≥ 96².
# Large objects are the ones most often unplaceable or occluded away, so they are over-sampled
# to land near 50 / 35 / 15 % (small / medium / large) by count at image_size 160.
_SIZE_BUCKETS = (("small", 0.44, 10, 30), ("medium", 0.29, 34, 90), ("large", 0.27, 98, 130))
_MAX_SIDE_FRACTION = 0.9  # an object's side never exceeds this fraction of the image
_MIN_VISIBLE_FRACTION = 0.4  # objects more than 60% occluded are drawn but not annotated
_MAX_BOX_COVER = 0.45  # placement: a new object may cover at most this much of an earlier box
_CROWD_PROB_TRAIN = 0.2  # per train image; ~2% of train annotations end up iscrowd=1
_EMPTY_VAL_EVERY = 25  # one val image in this many has no objects (at least one if num_val ≥ 2)


@dataclass(frozen=True)
class _Params:
    version: int
    seed: int
    num_train: int
    num_val: int
    image_size: int
    num_classes: int


def category_id(cls_index: int) -> int:
    """Non-contiguous COCO category id of shape class ``cls_index`` (0-based): 1, 3, 5, ..."""
    return 2 * cls_index + 1


def make_synthetic_coco(
    root: str | Path,
    seed: int = 0,
    num_train: int = 400,
    num_val: int = 100,
    image_size: int = 160,
    num_classes: int = 6,
) -> Path:
    """Generate the dataset under ``root`` (overwriting), returning ``root`` as a Path.

    Layout: ``train/*.png``, ``val/*.png``, ``annotations/instances_{train,val}.json`` and the
    ``synthetic.json`` marker (written last, so an interrupted run is detected and redone).
    Deterministic: the same arguments give the same files; train and val draw from independent
    streams, so changing ``num_val`` leaves the train split as it was. Category ids are 1, 3, 5, ...
    (non-contiguous on purpose, see :func:`category_id`).

    Args:
        root: the dataset directory (created if missing).
        seed: seed of the generator; default 0.
        num_train: number of training images (>= 0); default 400.
        num_val: number of validation images (>= 0); default 100.
        image_size: side of the square RGB images in pixels (>= 32); default 160.
        num_classes: number of shape classes, 1..6 (the first ``num_classes`` of ``SHAPE_NAMES``); default 6.
    """
    if not 1 <= num_classes <= len(SHAPE_NAMES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPE_NAMES)}, got {num_classes}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    root = Path(root)
    params = _Params(GENERATOR_VERSION, seed, num_train, num_val, image_size, num_classes)
    marker = root / "synthetic.json"
    marker.unlink(missing_ok=True)
    logger.info("generating synthetic COCO in %s (%s)", root, _dumps(asdict(params)))

    # One independent stream per split, so changing num_val does not change the train images.
    train_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    for split, count, rng in (("train", num_train, train_rng), ("val", num_val, val_rng)):
        coco = _generate_split(root, split, count, image_size, num_classes, rng)
        atomic_write_bytes(root / "annotations" / f"instances_{split}.json", _dumps(coco).encode())
        crowd = sum(a["iscrowd"] for a in coco["annotations"])
        logger.info(
            "synthetic %s: %d images, %d annotations (%d crowd)",
            split,
            count,
            len(coco["annotations"]),
            crowd,
        )
    atomic_write_bytes(marker, _dumps(asdict(params)).encode())
    return root


def ensure_synthetic_coco(
    root: str | Path,
    seed: int = 0,
    num_train: int = 400,
    num_val: int = 100,
    image_size: int = 160,
    num_classes: int = 6,
) -> Path:
    """Return ``root``, generating the dataset only if it is absent, incomplete or was made with
    other parameters (compared through the ``synthetic.json`` marker).

    Arguments as for :func:`make_synthetic_coco`; a dataset of another ``GENERATOR_VERSION`` is regenerated too.
    """
    root = Path(root)
    params = _Params(GENERATOR_VERSION, seed, num_train, num_val, image_size, num_classes)
    if _is_complete(root, params):
        logger.info("reusing synthetic COCO in %s", root)
        return root
    return make_synthetic_coco(root, seed, num_train, num_val, image_size, num_classes)


def _is_complete(root: Path, params: _Params) -> bool:
    try:
        if json.loads((root / "synthetic.json").read_text()) != asdict(params):
            return False
    except (OSError, ValueError):
        return False
    for split, count in (("train", params.num_train), ("val", params.num_val)):
        if not (root / "annotations" / f"instances_{split}.json").is_file():
            return False
        split_dir = root / split
        present = set(os.listdir(split_dir)) if split_dir.is_dir() else set()
        if not {_file_name(i) for i in range(count)} <= present:
            return False
    return True


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _file_name(index: int) -> str:
    return f"{index:06d}.png"


def _generate_split(
    root: Path, split: str, count: int, size: int, num_classes: int, rng: np.random.Generator
) -> dict[str, Any]:
    split_dir = root / split
    split_dir.mkdir(parents=True, exist_ok=True)
    expected = {_file_name(i) for i in range(count)}
    for stale in split_dir.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
        if stale.name not in expected:
            stale.unlink()

    crowd_prob = _CROWD_PROB_TRAIN if split == "train" else 0.0
    empty = set()
    if split == "val" and count >= 2:
        n_empty = max(1, count // _EMPTY_VAL_EVERY)
        empty = {count - 1 - k * _EMPTY_VAL_EVERY for k in range(n_empty)}

    images, annotations = [], []
    for index in range(count):
        image_id = index + 1
        pixels, objects = _render_image(rng, size, num_classes, index in empty, crowd_prob)
        atomic_write_bytes(split_dir / _file_name(index), _png_bytes(pixels))
        images.append({"id": image_id, "file_name": _file_name(index), "width": size, "height": size})
        for cls, bbox, crowd in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id(cls),
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": int(crowd),
                }
            )
    categories = [{"id": category_id(c), "name": SHAPE_NAMES[c], "supercategory": "shape"} for c in range(num_classes)]
    return {
        "info": {"description": f"drkd synthetic shapes ({split})", "version": str(GENERATOR_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random colour far enough (L1 ≥ 120) from the background's base colour to be visible."""
    best, best_dist = None, -1
    for _ in range(32):
        colour = rng.integers(0, 256, 3)
        dist = int(np.abs(colour - background).sum())
        if dist >= 120:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Base colour plus a smooth low-frequency texture; returns (float image HxWx3, base colour)."""
    base = rng.integers(40, 216, 3)
    coarse = np.clip(128 + rng.normal(0, 28, (6, 6, 3)), 0, 255).astype(np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR))
    return base + (texture.astype(np.float32) - 128), base


def _sample_side(rng: np.random.Generator, size: int) -> int:
    max_side = int(_MAX_SIDE_FRACTION * size)
    buckets = [(p, lo, min(hi, max_side)) for _, p, lo, hi in _SIZE_BUCKETS if lo <= max_side]
    probs = np.array([b[0] for b in buckets])
    _, lo, hi = buckets[rng.choice(len(buckets), p=probs / probs.sum())]
    return int(rng.integers(lo, hi + 1))


def _shape_mask(cls: int, box: tuple[int, int, int, int], size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of shape class ``cls`` filling ``box`` = (x0, y0, x1, y1), x1/y1 exclusive."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box
    xe, ye = x1 - 1, y1 - 1  # PIL coordinates are inclusive
    cx, cy = (x0 + xe) / 2, (y0 + ye) / 2
    short = min(x1 - x0, y1 - y0)
    name = SHAPE_NAMES[cls]
    if name == "circle":
        draw.ellipse((x0, y0, xe, ye), fill=255)
    elif name == "square":
        draw.rectangle((x0, y0, xe, ye), fill=255)
    elif name == "triangle":
        corners = [  # apex up, right, down, left
            [(cx, y0), (xe, ye), (x0, ye)],
            [(xe, cy), (x0, ye), (x0, y0)],
            [(cx, ye), (x0, y0), (xe, y0)],
            [(x0, cy), (xe, y0), (xe, ye)],
        ]
        draw.polygon(corners[int(rng.integers(4))], fill=255)
    elif name == "cross":
        half = max(1.0, 0.17 * short)
        draw.rectangle((x0, cy - half, xe, cy + half), fill=255)
        draw.rectangle((cx - half, y0, cx + half, ye), fill=255)
    elif name == "ring":
        draw.ellipse((x0, y0, xe, ye), outline=255, width=max(2, round(0.18 * short)))
    else:  # diamond
        draw.polygon([(cx, y0), (xe, cy), (cx, ye), (x0, cy)], fill=255)
    return np.asarray(mask) > 0


def _crowd_mask(cls: int, box: tuple[int, int, int, int], size: int, rng: np.random.Generator) -> np.ndarray:
    """A cluster of tiny same-class shapes inside ``box``: one iscrowd=1 region."""
    x0, y0, x1, y1 = box
    mask = np.zeros((size, size), dtype=bool)
    for _ in range(int(rng.integers(6, 12))):
        side = int(rng.integers(5, 10))
        px = int(rng.integers(x0, max(x0, x1 - side) + 1))
        py = int(rng.integers(y0, max(y0, y1 - side) + 1))
        mask |= _shape_mask(cls, (px, py, px + side, py + side), size, rng)
    return mask


def _draw_clutter(canvas: np.ndarray, rng: np.random.Generator, base: np.ndarray, lines: int, blobs: int) -> np.ndarray:
    """Draw unlabeled line segments and irregular blobs; returns the mask of painted pixels."""
    size = canvas.shape[0]
    layer = Image.new("L", (size, size), 0)
    painted = np.zeros((size, size), dtype=bool)
    for k in range(lines + blobs):
        layer.paste(0, (0, 0, size, size))
        draw = ImageDraw.Draw(layer)
        if k < lines:
            pts = rng.uniform(0, size, 4)
            draw.line(tuple(pts), fill=255, width=int(rng.integers(1, 3)))
        else:
            centre = rng.uniform(0, size, 2)
            n = int(rng.integers(5, 9))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = rng.uniform(1.5, 6.0, n)
            pts = [(float(centre[0] + r * np.cos(a)), float(centre[1] + r * np.sin(a))) for a, r in zip(angles, radii)]
            draw.polygon(pts, fill=255)
        m = np.asarray(layer) > 0
        canvas[m] = _contrasting_colour(rng, base)
        painted |= m
    return painted


def _render_image(
    rng: np.random.Generator, size: int, num_classes: int, empty: bool, crowd_prob: float
) -> tuple[np.ndarray, list[tuple[int, list[int], bool]]]:
    """Render one image; returns (uint8 HxWx3 pixels, [(class, bbox xywh, is_crowd), ...])."""
    canvas, base = _background(rng, size)
    _draw_clutter(canvas, rng, base, lines=int(rng.integers(2, 6)), blobs=int(rng.integers(3, 10)))

    # (class, side_w, side_h, is_crowd); drawn largest first so small objects land on top.
    items: list[tuple[int, int, int, bool]] = []
    if not empty:
        max_side = int(_MAX_SIDE_FRACTION * size)
        for _ in range(int(rng.integers(3, 13))):
            side = _sample_side(rng, size)
            aspect = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
            w = int(np.clip(round(side * np.sqrt(aspect)), 6, max_side))
            h = int(np.clip(round(side / np.sqrt(aspect)), 6, max_side))
            items.append((int(rng.integers(num_classes)), w, h, False))
        if rng.random() < crowd_prob:
            side = int(rng.integers(28, min(57, max_side + 1)))
            items.append((int(rng.integers(num_classes)), side, side, True))
    items.sort(key=lambda it: -it[1] * it[2])

    owner = np.full((size, size), -1, dtype=np.int16)
    placed: list[tuple[int, tuple[int, int, int, int], bool, np.ndarray]] = []
    for cls, w, h, crowd in items:
        box = _place(rng, size, w, h, [p[1] for p in placed])
        if box is None:
            continue
        mask = (_crowd_mask if crowd else _shape_mask)(cls, box, size, rng)
        canvas[mask] = _contrasting_colour(rng, base)
        owner[mask] = len(placed)
        placed.append((cls, box, crowd, mask))

    # A few thin lines over everything, so objects are not always cleanly delimited.
    over = _draw_clutter(canvas, rng, base, lines=int(rng.integers(0, 3)), blobs=0)
    owner[over] = -1

    objects = []
    for idx, (cls, _, crowd, mask) in enumerate(placed):
        visible = owner == idx
        total = int(mask.sum())
        if total == 0 or visible.sum() < _MIN_VISIBLE_FRACTION * total:
            continue
        ys, xs = np.nonzero(visible)
        x, y = int(xs.min()), int(ys.min())
        objects.append((cls, [x, y, int(xs.max()) + 1 - x, int(ys.max()) + 1 - y], crowd))

    canvas += rng.normal(0, 8, canvas.shape)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), objects


def _place(
    rng: np.random.Generator, size: int, w: int, h: int, boxes: list[tuple[int, int, int, int]]
) -> tuple[int, int, int, int] | None:
    """Random position for a w×h box that covers at most _MAX_BOX_COVER of any earlier box."""
    for _ in range(30):
        x0 = int(rng.integers(0, size - w + 1))
        y0 = int(rng.integers(0, size - h + 1))
        cand = (x0, y0, x0 + w, y0 + h)
        if all(_cover(cand, b) <= _MAX_BOX_COVER for b in boxes):
            return cand
    return None


def _cover(top: tuple[int, int, int, int], below: tuple[int, int, int, int]) -> float:
    """Fraction of box ``below`` covered by box ``top``."""
    iw = min(top[2], below[2]) - max(top[0], below[0])
    ih = min(top[3], below[3]) - max(top[1], below[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / ((below[2] - below[0]) * (below[3] - below[1]))
