"""A backbone pretrained on the dataset's own object crops: the miniature's stand-in for ImageNet.

Every COCO run starts its detectors from ImageNet-pretrained backbones. The embedded default has no
such backbone for its synthetic shapes, so ``pretrain_backbone`` trains the torchvision ResNet as a
classifier of the training split's object crops (:func:`~drkd.data.object_crops.object_crops`: the
shape classes plus background) and saves its body; ``detector.backbone_checkpoint`` loads it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import Subset

from drkd.config import DataConfig
from drkd.data.atomic_file import atomic_write_bytes
from drkd.data.coco_dataset import CocoDetection
from drkd.data.object_crops import object_crops
from drkd.train.checkpoint import save_atomic

log = logging.getLogger("drkd.pretrain")

BACKBONE_FILE = "backbone.pt"
# torchvision's detectors normalise their input with ImageNet's statistics
# (GeneralizedRCNNTransform): the classifier sees its crops the same way, so the body it hands the
# detector is trained on the input distribution it will get.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass
class PretrainSettings:
    """How the crop classifier trains (defaults: ResNet-18 reached 91 % on the embedded default's
    validation crops in 8 epochs)."""

    epochs: int = 8
    crop_size: int = 64
    batch_size: int = 64
    lr: float = 0.02  # SGD, momentum 0.9, linear warm-up over the first epoch, then cosine decay to 0
    weight_decay: float = 5e-4
    seed: int = 0


def _split(data: DataConfig, train: bool) -> CocoDetection:
    root = Path(data.root)
    images, annotations = (
        (data.train_images, data.train_annotations) if train else (data.val_images, data.val_annotations)
    )
    return CocoDetection(root / images, root / annotations, train=True)


def _first(dataset: CocoDetection, limit: int | None) -> CocoDetection | Subset:
    return Subset(dataset, range(min(limit, len(dataset)))) if limit else dataset


def _normalise(crops: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (crops.float() / 255 - mean) / std


def _accuracy(model: nn.Module, crops: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch):
            logits = model(_normalise(crops[start : start + batch]))
            correct += int((logits.argmax(1) == labels[start : start + batch]).sum())
    return correct / max(1, len(labels))


def pretrain_backbone(
    data: DataConfig, backbone: str, out_file: Path, settings: PretrainSettings | None = None
) -> dict:
    """Train ``backbone`` as a classifier of ``data``'s object crops and save its body to ``out_file``.

    Minimises the cross-entropy over C + 1 classes (the dataset's categories and background) of the
    torchvision model ``backbone`` (BatchNorm, random initialisation) on the training split's crops,
    each flipped horizontally at random; reports the accuracy on the validation split's crops per epoch.

    Args:
        data: the data section; its training split (the first ``train_limit`` images) is the
            pretraining set, its validation split (``val_limit``) only measures; the files must
            exist (generate the synthetic set first).
        backbone: a torchvision ResNet/ResNeXt name (``detector.backbone``).
        out_file: where the result goes, written atomically: ``{"backbone": name, "body": state dict
            without the classifier ``fc``, "val_accuracy", "history", "settings"}``.
        settings: epochs, crop size, batch size, lr, weight decay, seed; default
            :class:`PretrainSettings`.

    Returns:
        ``{"val_accuracy": last epoch's, "history": [{"epoch", "loss", "val_accuracy", "time_s"}], ...}``.
    """
    if not backbone.startswith("res"):
        raise ValueError(f"backbone = {backbone!r}: pretraining on crops supports the ResNet/ResNeXt backbones")
    s = settings or PretrainSettings()
    torch.manual_seed(s.seed)
    train_set = _split(data, train=True)
    crops, labels = object_crops(_first(train_set, data.train_limit), s.crop_size, seed=s.seed)
    val_set = _first(_split(data, train=False), data.val_limit)
    val_crops, val_labels = object_crops(val_set, s.crop_size, seed=s.seed + 1)
    num_classes = train_set.num_classes  # the categories and the background (label 0)
    log.info(
        "pretraining %s on %d object crops of %s (%d classes with background; %d val crops), %d epochs",
        backbone, len(labels), data.root, num_classes, len(val_labels), s.epochs,
    )  # fmt: skip
    model = getattr(torchvision.models, backbone)(weights=None, num_classes=num_classes)
    optimiser = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=0.9, weight_decay=s.weight_decay)
    per_epoch = math.ceil(len(labels) / s.batch_size)
    steps = s.epochs * per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda i: min(1.0, (i + 1) / per_epoch) * 0.5 * (1 + math.cos(math.pi * i / steps))
    )
    generator = torch.Generator().manual_seed(s.seed)
    history = []
    for epoch in range(1, s.epochs + 1):
        start, total, seen = time.perf_counter(), 0.0, 0
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        for first in range(0, len(order), s.batch_size):
            idx = order[first : first + s.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            batch = _normalise(crops[idx])
            flip = torch.rand(len(idx), generator=generator) < 0.5
            batch[flip] = batch[flip].flip(-1)
            loss = nn.functional.cross_entropy(model(batch), labels[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
        accuracy = _accuracy(model, val_crops, val_labels, s.batch_size)
        history.append(
            {
                "epoch": epoch,
                "loss": total / max(1, seen),
                "val_accuracy": accuracy,
                "time_s": time.perf_counter() - start,
            }
        )
        log.info("pretrain epoch %d/%d: loss %.3f, val accuracy %.3f", epoch, s.epochs, total / max(1, seen), accuracy)
    body = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    result = {
        "backbone": backbone,
        "body": body,
        "val_accuracy": history[-1]["val_accuracy"] if history else None,
        "history": history,
        "settings": asdict(s),
        "num_classes": num_classes,
    }
    save_atomic(result, out_file)
    atomic_write_bytes(
        out_file.parent / "pretrain.json",
        json.dumps({k: v for k, v in result.items() if k != "body"}, indent=1).encode(),
    )
    return result


def ensure_pretrained_backbone(
    cache_dir: Path, data: DataConfig, backbone: str = "resnet18", settings: PretrainSettings | None = None
) -> Path:
    """The crop-pretrained ``backbone`` for ``data``, trained once into ``cache_dir`` and reused.

    Args:
        cache_dir: the backbone lives in ``<cache_dir>/backbone_<backbone>/backbone.pt``
            (the embedded default: ``<results>/cache``, beside the default teacher).
        data: the data section (its files must exist).
        backbone: a ResNet/ResNeXt name; default ``resnet18`` (the embedded default's).
        settings: how it trains if it is not cached; default :class:`PretrainSettings`.
    """
    path = cache_dir / f"backbone_{backbone}" / BACKBONE_FILE
    if path.is_file():
        log.info("using the cached crop-pretrained %s at %s", backbone, path)
        return path
    pretrain_backbone(data, backbone, path, settings)
    return path
