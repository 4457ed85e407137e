"""The embedded default's teacher: trained once, cached under the results directory, reused."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from drkd.config import Config
from drkd.config.presets import tiny_teacher_config
from drkd.train.backbone_pretrain import ensure_pretrained_backbone
from drkd.train.checkpoint import CHECKPOINT_NAME
from drkd.train.job import prepare_data, run_training
from drkd.train.run_context import LocalContext

log = logging.getLogger("drkd.default")


def teacher_dir(results_dir: Path, framework: str) -> Path:
    # "_pretrained": teachers cached before the crop-pretrained backbone started from random
    # initialisation; a new name keeps them from being reused as today's
    return results_dir / "cache" / f"teacher_{framework}_pretrained"


def _teacher_config(framework: str, cut: Callable[[Config], object] | None) -> Config:
    cfg = tiny_teacher_config(framework)
    if cut is not None:
        cut(cfg)
    return cfg


def ensure_default_backbone(results_dir: Path, cut: Callable[[Config], object] | None = None) -> Path:
    """The embedded default's crop-pretrained ResNet-18 (teacher's and students' starting body).

    Generates the data if needed and pretrains once (:func:`~drkd.train.backbone_pretrain.pretrain_backbone`,
    8 epochs: 536 s of epochs measured with other jobs sharing 2 cores) into
    ``<results_dir>/cache/backbone_resnet18/``.

    Args:
        results_dir: the results root.
        cut: the smoke test's size cut, applied to the data it pretrains on (with a ``results_dir``
            of its own); default: none.
    """
    cfg = _teacher_config("one_stage", cut)
    prepare_data(cfg)
    return ensure_pretrained_backbone(results_dir / "cache", cfg.data, cfg.student.backbone)


def ensure_default_teacher(
    results_dir: Path, framework: str = "one_stage", cut: Callable[[Config], object] | None = None
) -> Path:
    """Checkpoint of the default teacher; generates the data, pretrains the backbone
    (:func:`ensure_default_backbone`) and trains the teacher from it if needed.

    An interrupted teacher run resumes from its last epoch.

    Args:
        results_dir: the results root; the teacher lives in
            ``<results_dir>/cache/teacher_<framework>_pretrained``.
        framework: ``one_stage`` (RetinaNet) or ``two_stage`` (Faster R-CNN).
        cut: applied to the teacher's config before training (``--smoke-test`` passes its size cut,
            with a ``results_dir`` of its own so the full-size teacher's cache is never replaced);
            default: the config as shipped.
    """
    cfg = _teacher_config(framework, cut)
    out = teacher_dir(results_dir, framework)
    ctx = LocalContext(out, cfg.train.device, resume=True)
    history = ctx.history()
    if history and history[-1]["epoch"] >= cfg.train.total_epochs:
        mAP = history[-1].get("mAP", float("nan"))  # absent if a longer run there stopped early
        log.info("using the cached %s teacher (mAP %.1f) at %s", framework, mAP, out)
        return out / CHECKPOINT_NAME
    cfg.student.backbone_checkpoint = str(ensure_default_backbone(results_dir, cut))
    log.info("training the default %s teacher into %s (once; later sweeps reuse it)", framework, out)
    cfg.train.output_dir = str(out)
    run_training(cfg, ctx)
    return out / CHECKPOINT_NAME
