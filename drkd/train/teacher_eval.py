"""The teacher's COCO metrics: evaluated once per teacher and validation set, cached, reported beside the student's.

"No gain after distillation" usually means the teacher was not what the user thought. A
distillation run therefore evaluates its teacher on the validation set before the first epoch and
adds its metrics to every epoch's report as ``teacher_<metric>``, so every trial records which
teacher it learned from and how good that teacher was, and the paper tables' teacher rows come from
the teacher the students actually used.

The result is cached in a JSON file keyed by a fingerprint of the teacher (checkpoint path, size and
modification time, or the torchvision weights name, and the detector section), of the ``data``
section and the validation annotation file (size, modification time), and of the device type and
autocast dtype:
beside a local checkpoint (``<checkpoint>.eval-<fingerprint>.json``), or beside the torch hub
cache's weights for ``teacher.weights``. A sweep's trials then evaluate the same teacher once; a
changed checkpoint or validation set is evaluated again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from drkd.config.schema import TEST_PROPOSAL_FIELDS, Config, DetectorConfig
from drkd.config.storage import is_uri
from drkd.data.atomic_file import atomic_write_bytes
from drkd.data.coco_eval import METRIC_KEYS, coco_metrics
from drkd.train.engine import predict
from drkd.train.precision import Precision
from drkd.train.run_context import RunContext

TEACHER_PREFIX = "teacher_"


def fingerprint(cfg: Config, device: str = "cpu", precision: str = "float32") -> str:
    """A hex digest of what decides the teacher's metrics: its weights and detector section, the whole
    ``data`` section (validation files, sizes, batch, synthetic generation), the validation annotation
    file's size and modification time, the device type and the autocast dtype (``precision``)."""
    assert cfg.teacher is not None
    teacher = asdict(cfg.teacher)
    for name in TEST_PROPOSAL_FIELDS:  # added later: left out where they change nothing, which
        # keeps the keys of earlier evaluations (one-stage, or torchvision's 1000) as they were
        if not cfg.teacher.two_stage or teacher[name] == getattr(DetectorConfig, name):
            del teacher[name]
    parts: dict[str, Any] = {"teacher": teacher, "data": asdict(cfg.data), "device": device}
    if precision != "float32":  # keeps the keys of float32 evaluations as they were
        parts["precision"] = precision
    files = {
        "checkpoint": cfg.teacher.checkpoint,
        "val_annotations": str(Path(cfg.data.root) / cfg.data.val_annotations),
    }
    for name, file in files.items():
        if file and not is_uri(file) and Path(file).is_file():
            stat = Path(file).stat()
            parts[name] = [str(Path(file).resolve()), stat.st_size, stat.st_mtime_ns]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_file(cfg: Config, device: str = "cpu", precision: str = "float32") -> Path | None:
    """Where the teacher's metrics are cached: beside a local checkpoint, beside the torch hub cache's
    weights for ``teacher.weights`` (both outside a Ray worker's per-trial working directory), else
    ``None``."""
    assert cfg.teacher is not None
    key = fingerprint(cfg, device, precision)
    checkpoint = cfg.teacher.checkpoint
    if checkpoint and not is_uri(checkpoint):
        return Path(checkpoint).with_name(f"{Path(checkpoint).name}.eval-{key}.json")
    if cfg.teacher.weights:
        return Path(torch.hub.get_dir()) / "checkpoints" / f"{cfg.teacher.weights}.eval-{key}.json"
    return None


def _read(path: Path | None) -> dict[str, float] | None:
    if path is None or not path.is_file():
        return None
    try:
        scores = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged cache is evaluated again
    return scores if isinstance(scores, dict) and all(k in scores for k in METRIC_KEYS) else None


def _write(path: Path, scores: dict[str, float]) -> None:
    """Atomically (:func:`~drkd.data.atomic_file.atomic_write_bytes`), so concurrent trials never read half a file."""
    try:
        atomic_write_bytes(path, json.dumps(scores, indent=1, sort_keys=True).encode())
    except OSError:
        pass  # a read-only checkpoint folder: the metrics are still reported, just not cached


def teacher_metrics(
    cfg: Config,
    teacher: nn.Module,
    val_loader: Any,
    val_ids: list[int],
    coco: Any,
    label_to_cat_id: dict[int, int],
    ctx: RunContext,
    precision: Precision | None = None,
) -> dict[str, float]:
    """The teacher's COCO metrics as ``teacher_<metric>`` (percent), from the cache or evaluated now.

    Every rank calls it; rank 0 reads and writes the cache and decides, the ranks evaluate their
    share of the validation set together when there is no cached result.

    Args:
        cfg: the run's Config (with a ``teacher`` section).
        teacher: the frozen teacher detector.
        val_loader, val_ids: this rank's validation loader and every validation image id
            (:func:`~drkd.train.job.validation_loader`).
        coco: the validation set's pycocotools ``COCO`` object.
        label_to_cat_id: the teacher's label -> COCO category id.
        ctx: the run context (rank, gather, broadcast).
        precision: as in training (:func:`~drkd.train.precision.precision_for`); ``None`` (default): float32.
    """
    precision = precision or Precision(ctx.device.type)
    path = cache_file(cfg, ctx.device.type, precision.name)
    cached = ctx.broadcast(_read(path) if ctx.rank == 0 else None)
    if cached is None:
        detections = ctx.gather(predict(teacher, val_loader, ctx.device, label_to_cat_id, precision))
        scores = coco_metrics(coco, detections, val_ids) if ctx.rank == 0 else None
        if ctx.rank == 0 and path is not None:
            _write(path, scores)
        cached = ctx.broadcast(scores)
        ctx.log(f"teacher evaluated: mAP {cached['mAP']:.2f}" + (f" (cached in {path})" if path else ""))
    else:
        ctx.log(f"teacher mAP {cached['mAP']:.2f} (cached evaluation {path})")
    return {f"{TEACHER_PREFIX}{k}": float(cached[k]) for k in METRIC_KEYS}
