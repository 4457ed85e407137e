import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drkd.data.synthetic import ensure_synthetic_coco, make_synthetic_coco

SMALL = dict(num_train=12, num_val=6, image_size=96)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def test_layout_and_coco_fields(tmp_path):
    root = make_synthetic_coco(tmp_path / "d", seed=0, **SMALL)
    for split, n in (("train", 12), ("val", 6)):
        coco = _load(root, split)
        assert len(coco["images"]) == n
        for img in coco["images"]:
            assert (root / split / img["file_name"]).is_file()
            assert (img["width"], img["height"]) == (96, 96)
        cat_ids = [c["id"] for c in coco["categories"]]
        assert cat_ids == [1, 3, 5, 7, 9, 11]  # non-contiguous on purpose
        assert {"id", "name", "supercategory"} <= set(coco["categories"][0])
        for ann in coco["annotations"]:
            assert {"id", "image_id", "category_id", "bbox", "area", "iscrowd"} <= set(ann)
            x, y, w, h = ann["bbox"]
            assert w >= 1 and h >= 1 and x >= 0 and y >= 0 and x + w <= 96 and y + h <= 96
            assert ann["category_id"] in cat_ids
    with Image.open(root / "train" / "000000.png") as im:
        assert im.mode == "RGB" and im.size == (96, 96)
    # The last val image is one of the deliberately empty ones.
    val = _load(root, "val")
    assert val["images"][-1]["id"] not in {a["image_id"] for a in val["annotations"]}
    assert json.loads((root / "synthetic.json").read_text())["seed"] == 0


def test_same_seed_is_byte_identical(tmp_path):
    a = _files(make_synthetic_coco(tmp_path / "a", seed=3, **SMALL))
    b = _files(make_synthetic_coco(tmp_path / "b", seed=3, **SMALL))
    assert a.keys() == b.keys() and len(a) == 12 + 6 + 3
    assert a == b


def test_different_seed_differs(tmp_path):
    a = make_synthetic_coco(tmp_path / "a", seed=0, **SMALL)
    b = make_synthetic_coco(tmp_path / "b", seed=1, **SMALL)
    assert _load(a, "train") != _load(b, "train")
    pa = np.asarray(Image.open(a / "train" / "000000.png"))
    pb = np.asarray(Image.open(b / "train" / "000000.png"))
    assert not np.array_equal(pa, pb)


def test_size_mix_and_crowd_at_default_settings(tmp_path):
    root = make_synthetic_coco(tmp_path / "d", seed=0, num_train=40, num_val=0)
    anns = _load(root, "train")["annotations"]
    areas = np.array([a["area"] for a in anns if not a["iscrowd"]])
    small, large = np.mean(areas < 32**2), np.mean(areas >= 96**2)
    medium = 1 - small - large
    assert 0.35 < small < 0.65 and 0.2 < medium < 0.5 and 0.05 < large < 0.3
    per_image = np.bincount([a["image_id"] for a in anns], minlength=41)[1:]
    assert per_image.max() <= 13 and per_image.mean() > 3
    crowd = sum(a["iscrowd"] for a in anns)
    assert 1 <= crowd <= 0.1 * len(anns)


def test_ensure_reuses_and_regenerates(tmp_path):
    root = tmp_path / "d"
    ensure_synthetic_coco(root, seed=0, **SMALL)
    ann_file = root / "annotations" / "instances_train.json"
    original = ann_file.read_bytes()

    # Same parameters: reused, so a file we tampered with stays tampered.
    ann_file.write_bytes(b"tampered")
    ensure_synthetic_coco(root, seed=0, **SMALL)
    assert ann_file.read_bytes() == b"tampered"

    # A missing marker means an interrupted generation: redone.
    (root / "synthetic.json").unlink()
    ensure_synthetic_coco(root, seed=0, **SMALL)
    assert ann_file.read_bytes() == original

    # Other parameters: regenerated, stale images removed.
    ensure_synthetic_coco(root, seed=0, num_train=5, num_val=6, image_size=96)
    assert len(_load(root, "train")["images"]) == 5
    assert sorted(p.name for p in (root / "train").iterdir()) == [f"{i:06d}.png" for i in range(5)]


def test_rejects_bad_parameters(tmp_path):
    with pytest.raises(ValueError):
        make_synthetic_coco(tmp_path, num_classes=7)
