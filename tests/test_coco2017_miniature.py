"""`drkd synth --layout coco2017`: laid out, named and categorised as COCO 2017, read by the dataset
and by pycocotools."""

from __future__ import annotations

import json
from pathlib import Path

from drkd.cli import main
from drkd.data.coco2017_miniature import SHAPE_TO_COCO_ID
from drkd.data.coco_dataset import CocoDetection
from drkd.data.coco_eval import coco_metrics

MISSING = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # COCO 2017's unused category ids


def test_coco2017_layout_categories_crowds_and_evaluation(tmp_path: Path) -> None:
    args = ["synth", "--layout", "coco2017", "--root", str(tmp_path), "--num-train", "6", "--num-val", "4"]
    assert main([*args, "--image-size", "64"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations", "train2017", "val2017"]
    for split, count in (("train", 6), ("val", 4)):
        dataset = json.loads((tmp_path / "annotations" / f"instances_{split}2017.json").read_text())
        assert {"info", "licenses", "images", "annotations", "categories"} <= set(dataset)
        ids = [c["id"] for c in dataset["categories"]]
        assert len(ids) == 80 and set(ids) == set(range(1, 91)) - MISSING
        names = {c["id"]: c["name"] for c in dataset["categories"]}
        assert (names[1], names[13], names[90]) == ("person", "stop sign", "toothbrush")
        files = sorted(p.name for p in (tmp_path / f"{split}2017").iterdir())
        assert len(files) == count and all(len(f) == 16 and f.endswith(".jpg") for f in files)
        assert sorted(img["file_name"] for img in dataset["images"]) == files
        assert all(img["file_name"] == f"{img['id']:012d}.jpg" for img in dataset["images"])
        assert any(a["iscrowd"] for a in dataset["annotations"])  # both COCO splits have crowd regions
        assert {a["category_id"] for a in dataset["annotations"]} <= set(SHAPE_TO_COCO_ID.values())
        ds = CocoDetection(tmp_path / f"{split}2017", tmp_path / "annotations" / f"instances_{split}2017.json")
        assert ds.num_classes == 81 and len(ds) == count
    # pycocotools scores the ground truth, given as detections, at AP 100
    val = CocoDetection(tmp_path / "val2017", tmp_path / "annotations" / "instances_val2017.json", train=False)
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in val.coco.dataset["annotations"]
        if not a["iscrowd"]
    ]
    assert coco_metrics(val.coco, detections, val.image_ids)["mAP"] == 100.0
    # deterministic
    first = (tmp_path / "annotations" / "instances_train2017.json").read_bytes()
    assert main([*args, "--image-size", "64"]) == 0
    assert (tmp_path / "annotations" / "instances_train2017.json").read_bytes() == first
