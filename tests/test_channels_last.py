"""The channels-last path a CUDA run takes (`train.channels_last`, the default), run on the CPU.

`run_training` makes the models' weights channels-last on CUDA; the images are 3-D and keep their
layout (until 2026-12-07 the engine asked each 3-D image for a channels-last copy, which torch
refuses: every CUDA run with the default settings stopped at its first iteration). Here the same
models are made channels-last on the CPU: every method's terms equal the contiguous model's, a
training step runs through the engine, and evaluation runs.
"""

from __future__ import annotations

import pytest
import torch

from drkd.data.coco_dataset import collate_detection
from drkd.train.engine import predict, train_one_epoch
from drkd.train.job import build_datasets, build_models, seed_everything

CPU = torch.device("cpu")
DETECTION_TERMS = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_det", "loss_total"}


def forward_terms(model, images, targets) -> dict[str, float]:
    torch.manual_seed(1)  # the distillers' own draws (MGD's mask) and the ROI sampling match
    _, terms = model(images, targets)
    return {k: float(v) for k, v in terms.items()}


@pytest.mark.parametrize("arch", ["retinanet", "fasterrcnn"])
def test_every_method_gives_the_same_terms_with_channels_last_weights(every_method_batch, arch: str) -> None:
    for method, cfg, num_classes, images, targets in every_method_batch(arch):
        terms = {}
        for layout in (torch.contiguous_format, torch.channels_last):
            seed_everything(0)
            model = build_models(cfg, num_classes).to(memory_format=layout)
            model.train()
            terms[layout] = forward_terms(model, images, targets)
        # the teacher is no submodule, but DistillationModel's `.to()` reaches it as run_training relies on
        for detector in (model.student, model.teacher):
            assert detector.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last), method
        full, last = terms[torch.contiguous_format], terms[torch.channels_last]
        # Faster R-CNN samples its ROIs by proposal score: rounding can reorder ties (as in test_precision)
        compared = set(full) - (DETECTION_TERMS if arch == "fasterrcnn" else set())
        assert compared, method
        for term in compared:
            assert last[term] == pytest.approx(full[term], rel=1e-4, abs=1e-6), (method, term)


def test_a_channels_last_model_trains_and_evaluates_through_the_engine(tiny_config, teacher_ckpt: str) -> None:
    cfg = tiny_config("drkd", teacher_ckpt=teacher_ckpt)
    data = build_datasets(cfg)
    batch = collate_detection([data.train[i] for i in range(cfg.data.batch_size)])
    seed_everything(0)
    model = build_models(cfg, data.num_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    means = train_one_epoch(model, optimizer, scheduler, [batch, batch], epoch=1, device=CPU)
    assert means["loss_total"] > 0 and means["loss_pr"] >= 0
    val = [collate_detection([data.val[i] for i in range(2)])]
    detections = predict(model.student, val, CPU, data.val.label_to_cat_id)
    assert all(d["image_id"] in {int(t["image_id"]) for t in val[0][1]} for d in detections)
