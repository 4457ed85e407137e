import contextlib
import io
import json
import random

import pytest
import torch
from pycocotools.coco import COCO

from drkd.data.coco_eval import METRIC_KEYS, coco_metrics, detections_to_coco

# Small (< 32²), medium and large (≥ 96²) boxes, a crowd region and an image without objects.
GT_ANNS = [
    (1, 1, [10, 10, 20, 20], 0),
    (1, 5, [50, 40, 60, 50], 0),
    (2, 1, [0, 0, 120, 110], 0),
    (2, 5, [130, 120, 25, 25], 0),
    (2, 1, [100, 5, 50, 30], 1),
    (3, 5, [30, 30, 40, 40], 0),
]


@pytest.fixture(scope="module")
def coco_gt() -> COCO:
    dataset = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 160, "height": 160} for i in (1, 2, 3, 4)],
        "annotations": [
            {"id": k + 1, "image_id": img, "category_id": cat, "bbox": box, "area": box[2] * box[3], "iscrowd": crowd}
            for k, (img, cat, box, crowd) in enumerate(GT_ANNS)
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 5, "name": "b"}],
    }
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _perfect() -> list[dict]:
    return [{"image_id": i, "category_id": c, "bbox": list(b), "score": 1.0} for i, c, b, crowd in GT_ANNS if not crowd]


def test_perfect_detections_score_100(coco_gt, capsys):
    metrics = coco_metrics(coco_gt, _perfect())
    assert tuple(metrics) == METRIC_KEYS
    assert metrics == {k: 100.0 for k in METRIC_KEYS}
    assert capsys.readouterr().out == ""  # COCOeval's printout is silenced


def test_verbose_prints_summary(coco_gt, capsys):
    coco_metrics(coco_gt, _perfect(), verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_shifted_boxes_score_lower(coco_gt):
    shifted = [dict(d, bbox=[d["bbox"][0] + 4, d["bbox"][1] + 4, *d["bbox"][2:]]) for d in _perfect()]
    metrics = coco_metrics(coco_gt, shifted)
    assert 0 < metrics["mAP"] < 100 and metrics["AP75"] < metrics["AP50"]


def test_empty_detections_give_zeros(coco_gt):
    assert coco_metrics(coco_gt, []) == {k: 0.0 for k in METRIC_KEYS}
    # Detections only outside the evaluated images count as none.
    assert coco_metrics(coco_gt, _perfect()[:2], image_ids=[2]) == {k: 0.0 for k in METRIC_KEYS}


def test_independent_of_detection_order(coco_gt):
    rng = random.Random(0)
    dets = _perfect()
    # False positives and score ties make the matching order-sensitive unless sorted.
    dets += [
        {
            "image_id": rng.choice([1, 2, 3, 4]),
            "category_id": rng.choice([1, 5]),
            "bbox": [rng.uniform(0, 100), rng.uniform(0, 100), 30.0, 30.0],
            "score": 1.0,
        }
        for _ in range(20)
    ]
    dets += [dict(d, bbox=[d["bbox"][0] + 3, *d["bbox"][1:]], score=0.5) for d in _perfect()]
    expected = coco_metrics(coco_gt, dets)
    assert 0 < expected["mAP"] < 100
    for _ in range(3):
        rng.shuffle(dets)
        assert coco_metrics(coco_gt, dets) == expected


def test_does_not_mutate_input(coco_gt):
    dets = _perfect()
    before = json.dumps(dets)
    coco_metrics(coco_gt, dets)
    assert json.dumps(dets) == before


def test_restricted_image_ids_and_missing_size_range(coco_gt):
    dets = _perfect()
    # Image 2 wrong, image 1 perfect: evaluating image 1 alone gives 100.
    dets = [d for d in dets if d["image_id"] != 2]
    metrics = coco_metrics(coco_gt, dets, image_ids=[1])
    assert metrics["mAP"] == 100.0 and metrics["AP_S"] == 100.0 and metrics["AP_M"] == 100.0
    assert metrics["AP_L"] == 0.0  # no large GT on image 1: COCOeval's -1 becomes 0.0
    assert coco_metrics(coco_gt, dets)["mAP"] < 100.0


def test_unknown_image_id_rejected(coco_gt):
    with pytest.raises(ValueError, match="99"):
        coco_metrics(coco_gt, [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])


def test_detections_to_coco():
    outputs = [
        {
            "boxes": torch.tensor([[1.234, 2.0, 11.5, 22.0], [0.0, 0.0, 5.0, 5.0]]),
            "scores": torch.tensor([0.98766, 0.5]),
            "labels": torch.tensor([2, 1]),
        },
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    results = detections_to_coco(outputs, [7, 8], {1: 3, 2: 9})
    assert results == [
        {"image_id": 7, "category_id": 9, "bbox": [1.23, 2.0, 10.27, 20.0], "score": 0.9877},
        {"image_id": 7, "category_id": 3, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.5},
    ]
    assert all(type(v) is float for r in results for v in [*r["bbox"], r["score"]])
    assert type(results[0]["image_id"]) is int and type(results[0]["category_id"]) is int
    json.dumps(results)
    with pytest.raises(ValueError):
        detections_to_coco(outputs, [7], {1: 3, 2: 9})
    with pytest.raises(ValueError):
        detections_to_coco(outputs[:1], [7], {1: 3})
    # a one-stage head's background slot (label 0, no category) is dropped, not an error
    background = [{**outputs[0], "labels": torch.tensor([0, 1])}]
    assert detections_to_coco(background, [7], {1: 3, 2: 9}) == results[1:]


def test_round_trip_from_targets_scores_100(coco_gt):
    # GT boxes in torchvision output format → COCO results → 100 mAP.
    outputs, ids = [], []
    for image_id in (1, 2, 3, 4):
        anns = [a for a in coco_gt.imgToAnns[image_id] if not a["iscrowd"]]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
        labels = torch.tensor([{1: 1, 5: 2}[a["category_id"]] for a in anns], dtype=torch.int64)
        outputs.append({"boxes": boxes.float(), "scores": torch.ones(len(anns)), "labels": labels})
        ids.append(image_id)
    results = detections_to_coco(outputs, ids, {1: 1, 2: 5})
    assert coco_metrics(coco_gt, results)["mAP"] == 100.0
