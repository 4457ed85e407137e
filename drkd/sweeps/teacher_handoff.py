"""Where trained teachers go, so students find them without editing paths.

``python sweeps/ablations.py teacher --config C`` publishes each teacher it trained to
``<storage>/teachers/<arch>_<backbone>/checkpoint.pt`` (beside a ``teacher.json`` saying where it came
from); a sweep whose config names no teacher checkpoint distils from the one published there.
"""

from __future__ import annotations

import json
import logging
import posixpath
import shutil
from pathlib import Path
from typing import Any

from drkd.config import Config, ConfigError
from drkd.config.storage import is_uri
from drkd.config.trial_labels import CELL_KEY
from drkd.train.checkpoint import CHECKPOINT_NAME

log = logging.getLogger("drkd.sweeps")
TEACHERS_DIR = "teachers"
TEACHER_INFO = "teacher.json"


def published_teacher(storage: str, arch: str, backbone: str) -> str:
    """The checkpoint path a teacher of ``arch`` with ``backbone`` is published to under ``storage``."""
    return posixpath.join(storage, TEACHERS_DIR, f"{arch}_{backbone}", CHECKPOINT_NAME)


def publish_teachers(storage: str, results: Any) -> list[str]:
    """Copy each trained teacher's final checkpoint to its :func:`published_teacher` path.

    Of several seeds of one teacher the best by final mAP is published; diverged or errored trials
    never are. A teacher already published there is replaced (logged with what it was).

    Args:
        storage: the sweep's results root (``SweepPlan.storage``), a local path or shared mount.
        results: the teacher grid's Tune ResultGrid; each result's config holds ``student.arch`` and
            ``student.backbone`` (the teacher trained as a plain detector) and its metrics the last
            report's ``checkpoint_path``.

    Returns:
        One line per published teacher: ``<cell>: mAP <x> -> <path>``.

    Raises:
        ConfigError: ``storage`` is a URI (students read teachers from a path every node mounts).
    """
    best: dict[tuple[str, str], Any] = {}
    for result in results:
        metrics = result.metrics or {}
        if result.error is not None or metrics.get("diverged") or not metrics.get("checkpoint_path"):
            continue
        key = (result.config["student.arch"], result.config["student.backbone"])
        if key not in best or metrics["mAP"] > best[key].metrics["mAP"]:
            best[key] = result
    if best and is_uri(storage):
        raise ConfigError(
            f"sweep.storage_path = {storage!r}: teachers are published to a path every node mounts (EFS, NFS); "
            "set teacher.checkpoint to a copy on such a path"
        )
    lines = []
    for (arch, backbone), result in sorted(best.items()):
        target = Path(published_teacher(storage, arch, backbone))
        info_path = target.parent / TEACHER_INFO
        if info_path.is_file():
            log.info("replacing the %s_%s teacher published at %s: %s", arch, backbone, target, info_path.read_text())
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(Path(result.metrics["checkpoint_path"]) / CHECKPOINT_NAME, tmp)
        tmp.replace(target)
        info = {
            "cell": result.config.get(CELL_KEY),
            "seed": result.config.get("train.seed"),
            "epoch": result.metrics.get("epoch"),
            "mAP": result.metrics.get("mAP"),
            "source": result.metrics["checkpoint_path"],
        }
        info_path.write_text(json.dumps(info, indent=1, sort_keys=True))
        lines.append(f"{info['cell']}: mAP {info['mAP']:.2f} -> {target}")
    return lines


def with_published_teacher(cfg: Config, storage: str, source: str) -> Config:
    """``cfg`` with ``teacher.checkpoint`` set to the published teacher when the config names no
    trained teacher (no checkpoint, weights or backbone weights) and distils or inherits.

    Raises:
        ConfigError: no teacher is published there either; says how to publish one.
    """
    t = cfg.teacher
    if not cfg.uses_teacher or t is None or t.checkpoint or t.weights:
        return cfg
    path = published_teacher(storage, t.arch, t.backbone)
    if Path(path).is_file():
        log.info("%s: distilling from the teacher published at %s", source, path)
        cfg = cfg.copy()
        assert cfg.teacher is not None
        cfg.teacher.checkpoint = path
        return cfg
    if t.backbone_weights:
        return cfg  # an ImageNet-initialised teacher, which check_teacher accepts as chosen
    raise ConfigError(
        f"{source}: teacher.checkpoint is not set and no teacher is published at {path}: train and publish one "
        "with `python sweeps/ablations.py teacher --config <this config>` (same storage path), or set teacher.checkpoint"
    )
