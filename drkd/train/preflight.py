"""Checks a run's inputs before anything is launched: on the sweep driver, an error that no retry
can fix (a missing teacher or data file) costs one message, not 1 + max_failures Ray Train attempts
on every trial."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from drkd.config import Config, ConfigError
from drkd.config.storage import is_uri


def check_teacher(cfg: Config, source: str = "config") -> None:
    """A distillation run (or a student inheriting from its teacher) needs a trained teacher: ``teacher.checkpoint``, ``teacher.weights`` (a
    torchvision COCO detector) or at least ``teacher.backbone_weights``.

    The usual cause of "distillation gives no gain" is a teacher that was never loaded, so this is
    an error (naming ``source``) unless ``distill.allow_untrained_teacher`` (speed benchmarks).
    """
    if not cfg.uses_teacher:
        return
    t = cfg.teacher
    if not (t.checkpoint or t.weights or t.backbone_weights or cfg.distill.allow_untrained_teacher):
        raise ConfigError(
            f"{source}: teacher: neither checkpoint nor backbone_weights nor weights: distilling from an untrained "
            "teacher; set teacher.checkpoint or teacher.weights (a torchvision COCO detector, e.g. "
            "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1), or distill.allow_untrained_teacher: true for benchmarks"
        )


def check_inputs(cfg: Config, source: str = "config") -> None:
    """Everything a run reads exists where this process sees it (on a cluster, the driver sees the
    same shared storage as the workers): the teacher is trained (:func:`check_teacher`), the student
    and teacher checkpoint (and backbone_checkpoint) files exist, and so do the data's annotation files and image directories
    (unless ``data.synthetic``, which the run generates).

    Args:
        cfg: a validated Config.
        source: named in the error (``"table1 cell one_stage 1x drkd"``, a file name, ...).

    Raises:
        ConfigError: naming ``source``, the field and the missing path.
    """
    check_teacher(cfg, source)
    for role in ("student", "teacher"):
        section = getattr(cfg, role)
        if section is None or not section.checkpoint or is_uri(section.checkpoint):
            continue
        if role == "teacher" and not cfg.uses_teacher:
            continue
        if not Path(section.checkpoint).is_file():
            hint = " (train one with: python sweeps/ablations.py teacher --config ...)" if role == "teacher" else ""
            raise ConfigError(f"{source}: {role}.checkpoint: {section.checkpoint} not found{hint}")
    for role in ("student", "teacher"):
        section = getattr(cfg, role)
        if section is None or (role == "teacher" and not cfg.uses_teacher):
            continue
        path = section.backbone_checkpoint
        if path and not is_uri(path) and not Path(path).is_file():
            raise ConfigError(f"{source}: {role}.backbone_checkpoint: {path} not found")
    if not cfg.data.synthetic:
        check_data_files(cfg, source)


def check_data_files(cfg: Config, source: str | None = None, splits: Sequence[str] = ("train", "val")) -> None:
    """The annotation files and image directories of ``cfg.data`` exist under ``data.root``.

    Args:
        cfg: a validated Config; reads ``data.root`` and the splits' ``*_annotations``/``*_images``.
        source: named in the error; default none.
        splits: which splits to check, of ``"train"`` and ``"val"``; default both (evaluation
            checks ``("val",)`` only).

    Raises:
        ConfigError: naming ``source`` (when given), the field, the missing path and ``data.root``.
    """
    d = cfg.data
    root = Path(d.root)
    where = f"{source}: " if source else ""
    for name in (f"{split}_annotations" for split in splits):
        if not (root / getattr(d, name)).is_file():
            raise ConfigError(f"{where}data.{name}: {root / getattr(d, name)} not found (data.root = {str(root)!r})")
    for name in (f"{split}_images" for split in splits):
        if not (root / getattr(d, name)).is_dir():
            raise ConfigError(
                f"{where}data.{name}: {root / getattr(d, name)} is not a directory (data.root = {str(root)!r})"
            )
