"""The embedded default's teacher: trained once, cached under the results directory, reused."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from drkd.config import Config
from drkd.config.presets import tiny_teacher_config
from drkd.train.checkpoint import CHECKPOINT_NAME
from drkd.train.job import prepare_data, run_training
from drkd.train.run_context import LocalContext

log = logging.getLogger("drkd.default")


def teacher_dir(results_dir: Path, framework: str) -> Path:
    return results_dir / "cache" / f"teacher_{framework}"


def ensure_default_teacher(
    results_dir: Path, framework: str = "one_stage", cut: Callable[[Config], object] | None = None
) -> Path:
    """Checkpoint of the default teacher; generates the data and trains the teacher if needed.

    An interrupted teacher run resumes from its last epoch.

    Args:
        results_dir: the results root; the teacher lives in ``<results_dir>/cache/teacher_<framework>``.
        framework: ``one_stage`` (RetinaNet) or ``two_stage`` (Faster R-CNN).
        cut: applied to the teacher's config before training (``--smoke-test`` passes its size cut,
            with a ``results_dir`` of its own so the full-size teacher's cache is never replaced);
            default: the config as shipped.
    """
    cfg = tiny_teacher_config(framework)
    if cut is not None:
        cut(cfg)
    out = teacher_dir(results_dir, framework)
    ctx = LocalContext(out, cfg.train.device, resume=True)
    history = ctx.history()
    if history and history[-1]["epoch"] >= cfg.train.total_epochs:
        log.info("using the cached %s teacher (mAP %.1f) at %s", framework, history[-1]["mAP"], out)
        return out / CHECKPOINT_NAME
    prepare_data(cfg)
    log.info("training the default %s teacher into %s (once; later sweeps reuse it)", framework, out)
    cfg.train.output_dir = str(out)
    run_training(cfg, ctx)
    return out / CHECKPOINT_NAME
