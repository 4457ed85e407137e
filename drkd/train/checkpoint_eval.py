"""COCO metrics of a checkpoint's student, on the validation set its config (or another) names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drkd.config import ConfigError, apply_overrides, config_from_dict, load_config
from drkd.data.coco_dataset import CocoDetection
from drkd.data.coco_eval import coco_metrics
from drkd.models.detectors import build_detector
from drkd.train.checkpoint import load_checkpoint
from drkd.train.engine import predict
from drkd.train.job import build_validation_set, validation_loader
from drkd.train.precision import precision_for
from drkd.train.run_context import resolve_device


def evaluate_checkpoint(
    checkpoint: str | Path, config: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """Evaluate the student saved in ``checkpoint`` (``drkd train``'s full checkpoint).

    Args:
        checkpoint: path of the checkpoint.
        config: a config file to evaluate with; default ``None``: the config saved in the checkpoint.
        overrides: dotted ``key: value`` changes to that config (as ``--set``), e.g.
            ``{"data.synthetic_num_val": 1000, "data.root": "data/synthetic_val1000"}``; default none.
            The embedded synthetic dataset is generated at ``data.root`` if it is missing there.

    Only the validation split is read (``data.val_annotations``, ``data.val_images``): the training
    files need not exist where a checkpoint is evaluated.

    Returns:
        The COCO metrics (mAP, AP50, AP75, AP_S, AP_M, AP_L, in percent).

    Raises:
        ConfigError: the validation files are missing, or their classes are not the ones the
            checkpoint's student was trained for (:func:`check_categories`).
    """
    state = load_checkpoint(checkpoint)
    cfg = load_config(config) if config else config_from_dict(state["config"], f"{checkpoint}:config")
    if overrides:
        cfg = apply_overrides(cfg, dict(overrides))
    val = build_validation_set(cfg)
    num_classes = int(state["num_classes"])
    check_categories(
        val, num_classes, state.get("categories"), f"{Path(cfg.data.root) / cfg.data.val_annotations}", checkpoint
    )
    device = resolve_device(cfg.train.device)
    student = build_detector(cfg.student, num_classes, cfg.data)
    student.load_state_dict(state["student"])
    student.to(device)
    loader, image_ids = validation_loader(val, cfg)
    detections = predict(student, loader, device, val.label_to_cat_id, precision=precision_for(cfg.train, device))
    return coco_metrics(val.coco, detections, image_ids)


def check_categories(
    val: CocoDetection,
    num_classes: int,
    trained: Sequence[Sequence[int | str]] | None,
    annotation_file: str,
    checkpoint: str | Path,
) -> None:
    """The evaluation set's classes are the ones the student was trained for.

    Labels are the categories in ascending id order, so a file with the same number of categories
    but other ids or names would score every detection against the wrong class without an error.

    Args:
        val: the evaluation set.
        num_classes: the checkpoint's ``num_classes`` (background included).
        trained: the checkpoint's ``categories`` (``[id, name]`` of labels 1..C); ``None`` or empty
            for checkpoints written before it was saved: then only the count is checked.
        annotation_file, checkpoint: named in the error.

    Raises:
        ConfigError: naming the annotation file, the checkpoint and the first difference.
    """
    if val.num_classes != num_classes:
        raise ConfigError(
            f"data.val_annotations: {annotation_file} lists {val.num_classes - 1} categories; "
            f"the student of {checkpoint} was trained for {num_classes - 1}"
        )
    for label, (want, got) in enumerate(zip(trained or [], val.categories), start=1):
        if list(want) != list(got):
            raise ConfigError(
                f"data.val_annotations: {annotation_file}: class {label} is category {got[0]} {got[1]!r}; "
                f"the student of {checkpoint} was trained with category {want[0]} {want[1]!r} there"
            )
