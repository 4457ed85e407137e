import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from drkd.data.coco_dataset import CocoDetection, DatasetError, collate_detection
from drkd.data.synthetic import make_synthetic_coco
from drkd.data.transforms import build_transforms

CATS = [{"id": 10, "name": "ten"}, {"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]


def _ann(ann_id, image_id, cat, bbox, iscrowd=0):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": iscrowd,
    }


def _write(tmp_path: Path, images, annotations, categories=CATS, image_modes=None) -> Path:
    """Write an annotation file and a plain image for every entry of ``images``."""
    (tmp_path / "img").mkdir(exist_ok=True)
    for img in images:
        mode = (image_modes or {}).get(img["id"], "RGB")
        size = (img.get("width", 40), img.get("height", 30))
        Image.new(mode, size, 128).save(tmp_path / "img" / img["file_name"])
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _img(image_id, w=40, h=30):
    return {"id": image_id, "file_name": f"{image_id}.png", "width": w, "height": h}


def test_label_remapping_round_trip(tmp_path):
    anns = [_ann(1, 1, 10, [1, 2, 10, 10]), _ann(2, 1, 3, [5, 5, 8, 6]), _ann(3, 2, 7, [0, 0, 4, 4])]
    ds = CocoDetection(tmp_path / "img", _write(tmp_path, [_img(1), _img(2)], anns))
    assert ds.cat_id_to_label == {3: 1, 7: 2, 10: 3}
    assert ds.label_to_cat_id == {1: 3, 2: 7, 3: 10}
    assert ds.category_names == ["three", "seven", "ten"]
    assert ds.num_classes == 4 and ds.image_ids == [1, 2] and len(ds) == 2
    image, target = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.float32
    assert image.shape == (3, 30, 40)
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
    assert tuple(target["boxes"].canvas_size) == (30, 40)
    assert target["boxes"].tolist() == [[1, 2, 11, 12], [5, 5, 13, 11]]
    assert [ds.label_to_cat_id[int(label)] for label in target["labels"]] == [10, 3]
    assert target["labels"].dtype == torch.int64 and target["image_id"] == 1
    assert target["area"].dtype == torch.float32 and target["area"].tolist() == [100, 48]
    assert ds.coco.getImgIds() == [1, 2]


def test_crowd_excluded_from_training_targets(tmp_path):
    anns = [_ann(1, 1, 3, [1, 1, 10, 10]), _ann(2, 1, 7, [15, 5, 20, 20], iscrowd=1)]
    path = _write(tmp_path, [_img(1)], anns)
    _, train_target = CocoDetection(tmp_path / "img", path, train=True)[0]
    assert train_target["labels"].tolist() == [1] and train_target["iscrowd"].tolist() == [0]
    eval_ds = CocoDetection(tmp_path / "img", path, train=False)
    _, eval_target = eval_ds[0]
    assert eval_target["labels"].tolist() == [1, 2] and eval_target["iscrowd"].tolist() == [0, 1]
    assert len(eval_ds.coco.getAnnIds(iscrowd=None)) == 2  # evaluation still sees the crowd region


def test_empty_image_and_collate(tmp_path):
    path = _write(tmp_path, [_img(1), _img(2)], [_ann(1, 2, 3, [1, 1, 10, 10])])
    ds = CocoDetection(tmp_path / "img", path, transforms=build_transforms(True, resize_scales=[20]))
    _, target = ds[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_detection)
    images, targets = next(iter(loader))
    assert isinstance(images, list) and len(images) == 2 and len(targets) == 2
    assert [len(t["boxes"]) for t in targets] == [0, 1]
    assert images[0].shape[:2] == (3, 20)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA"])
def test_non_rgb_images_converted(tmp_path, mode):
    path = _write(tmp_path, [_img(1)], [], image_modes={1: mode})
    image, _ = CocoDetection(tmp_path / "img", path)[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_grayscale_values_replicated(tmp_path):
    path = _write(tmp_path, [_img(1)], [], image_modes={1: "L"})
    image, _ = CocoDetection(tmp_path / "img", path)[0]
    assert torch.allclose(image, torch.full_like(image, 128 / 255))


def test_degenerate_boxes_dropped_and_counted(tmp_path, caplog):
    anns = [
        _ann(1, 1, 3, [1, 1, 10, 10]),  # fine
        _ann(2, 1, 3, [5, 5, 0.5, 10]),  # too narrow
        _ann(3, 1, 3, [5, 5, 10, 0]),  # zero height
        _ann(4, 1, 3, [50, 5, 10, 10]),  # wholly right of the 40-px-wide image
        _ann(5, 1, 3, [-5, 20, 10, 20]),  # partly outside: clipped, kept
    ]
    with caplog.at_level(logging.WARNING, logger="drkd.data"):
        ds = CocoDetection(tmp_path / "img", _write(tmp_path, [_img(1)], anns))
    assert ds.num_dropped_boxes == 3
    assert sum("dropped 3 degenerate boxes" in r.getMessage() for r in caplog.records) == 1
    _, target = ds[0]
    assert target["boxes"].tolist() == [[1, 1, 11, 11], [0, 20, 5, 30]]


def test_missing_image_file(tmp_path):
    path = _write(tmp_path, [_img(1)], [])
    (tmp_path / "img" / "1.png").unlink()
    with pytest.raises(DatasetError) as err:
        CocoDetection(tmp_path / "img", path)
    assert "ann.json" in str(err.value) and str(tmp_path / "img" / "1.png") in str(err.value)


def test_malformed_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [], "annotations": [\n  {"id": 1,}\n]}')
    with pytest.raises(DatasetError) as err:
        CocoDetection(tmp_path, path)
    assert "broken.json" in str(err.value) and "line 2" in str(err.value)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DatasetError, match="nope.json"):
        CocoDetection(tmp_path, tmp_path / "nope.json")


@pytest.mark.parametrize(
    "breakage, field",
    [
        (lambda d: d["annotations"][1].pop("bbox"), "annotations[1].bbox"),
        (lambda d: d["images"][0].pop("file_name"), "images[0].file_name"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "annotations[0].bbox"),
        (lambda d: d["annotations"][0].update(category_id=99), "annotations[0].category_id"),
        (lambda d: d["annotations"][0].update(image_id=42), "annotations[0].image_id"),
        (lambda d: d["categories"][0].pop("id"), "categories[0].id"),
        (lambda d: d.pop("annotations"), "annotations"),
    ],
)
def test_invalid_fields_named(tmp_path, breakage, field):
    path = _write(tmp_path, [_img(1)], [_ann(1, 1, 3, [1, 1, 5, 5]), _ann(2, 1, 7, [2, 2, 5, 5])])
    data = json.loads(path.read_text())
    breakage(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as err:
        CocoDetection(tmp_path / "img", path)
    assert "ann.json" in str(err.value) and field in str(err.value)


def test_defaults_filled_for_area_and_iscrowd(tmp_path):
    ann = {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 5]}
    ds = CocoDetection(tmp_path / "img", _write(tmp_path, [_img(1)], [ann]))
    assert ds.coco.anns[1]["area"] == 20 and ds.coco.anns[1]["iscrowd"] == 0


def _sample(width=100, height=50):
    image = tv_tensors.Image(torch.rand(3, height, width))
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor([[10.0, 5.0, 30.0, 25.0], [60.0, 0.0, 61.5, 50.0]]), format="XYXY", canvas_size=(height, width)
        ),
        "labels": torch.tensor([1, 2]),
        "image_id": 7,
        "area": torch.tensor([400.0, 75.0]),
        "iscrowd": torch.tensor([0, 0]),
    }
    return image, target


def test_flip_moves_boxes_exactly():
    image, target = _sample()
    out_image, out = build_transforms(True, hflip_prob=1.0)(image, target)
    assert torch.equal(out_image, image.flip(-1))
    assert out["boxes"].tolist() == [[70, 5, 90, 25], [38.5, 0, 40, 50]]
    assert out["labels"].tolist() == [1, 2] and out["image_id"] == 7


def test_resize_then_sanitize_keeps_per_box_keys_consistent():
    image, target = _sample()
    # Shortest side 50 -> 25: the 1.5-px-wide box becomes 0.75 px and is removed with its labels.
    out_image, out = build_transforms(True, hflip_prob=1.0, resize_scales=[25], max_size=1000)(image, target)
    assert out_image.shape == (3, 25, 50)
    assert out["boxes"].tolist() == [[35, 2.5, 45, 12.5]]
    assert out["labels"].tolist() == [1] and out["area"].tolist() == [400] and out["iscrowd"].tolist() == [0]


def test_eval_transforms_are_identity():
    image, target = _sample()
    out_image, out = build_transforms(False)(image, target)
    assert torch.equal(out_image, image) and torch.equal(out["boxes"], target["boxes"])


def test_loads_synthetic_dataset(tmp_path):
    root = make_synthetic_coco(tmp_path, seed=0, num_train=4, num_val=2, image_size=96)
    ds = CocoDetection(root / "train", root / "annotations" / "instances_train.json", transforms=build_transforms(True))
    assert ds.num_classes == 7 and ds.num_dropped_boxes == 0
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 96, 96)
        assert len(target["labels"]) > 0 and 1 <= target["labels"].min() and target["labels"].max() <= 6


def test_file_names_with_directories_are_checked_one_by_one(tmp_path):
    """COCO's plain file names are checked against one directory listing; names with a directory in
    them (some datasets use them) against the file itself, and a missing one is still named."""
    (tmp_path / "img" / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), 128).save(tmp_path / "img" / "sub" / "1.png")
    images = [{"id": 1, "file_name": "sub/1.png", "width": 40, "height": 30}]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": CATS}))
    assert len(CocoDetection(tmp_path / "img", path)) == 1
    images.append({"id": 2, "file_name": "sub/2.png", "width": 40, "height": 30})
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": CATS}))
    with pytest.raises(DatasetError, match=r"images\[1\]\.file_name: image file .*sub/2\.png does not exist"):
        CocoDetection(tmp_path / "img", path)


def test_parsed_annotations_are_cached_per_file_version(tmp_path, annotation_cache):
    """The second dataset on a file reads the node's cache instead of the JSON; an edited file is
    parsed again. Shown by planting a changed category name in the cache entry."""
    import pickle

    path = _write(tmp_path, [_img(1)], [_ann(1, 1, 3, [1, 2, 10, 10])])
    assert CocoDetection(tmp_path / "img", path).category_names == ["three", "seven", "ten"]
    entries = {p for p in (annotation_cache / "annotations").glob("*.pkl") if p.stat().st_mtime >= path.stat().st_mtime}
    (entry,) = [e for e in entries if pickle.loads(e.read_bytes())["images"] == [_img(1)]]
    planted = pickle.loads(entry.read_bytes())
    assert all("segmentation" not in a for a in planted["annotations"])  # boxes only
    next(c for c in planted["categories"] if c["id"] == 3)["name"] = "planted"
    entry.write_bytes(pickle.dumps(planted))
    assert CocoDetection(tmp_path / "img", path).category_names[0] == "planted"  # read from the cache
    data = json.loads(path.read_text())
    next(c for c in data["categories"] if c["id"] == 3)["name"] = "three!"
    path.write_text(json.dumps(data))
    assert CocoDetection(tmp_path / "img", path).category_names[0] == "three!"  # edited: parsed again
