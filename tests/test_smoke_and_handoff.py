"""`--smoke-test` changes only sizes; a sweep without a teacher checkpoint finds the published one;
its relative paths reach the trials absolute."""

from __future__ import annotations

from pathlib import Path

import pytest

from drkd.config import ConfigError
from drkd.config.presets import tiny_student_config
from drkd.config.sweep_settings import load_sweep_config
from drkd.sweeps.commands import _teacher_checkpoints
from drkd.sweeps.smoke_test import smoke_test
from drkd.sweeps.teacher_handoff import published_teacher, with_published_teacher

REPO = Path(__file__).resolve().parents[1]


def test_smoke_test_cuts_sizes_and_nothing_else() -> None:
    base, settings = load_sweep_config(REPO / "configs" / "coco_retinanet.yaml")
    cfg, new, changes = smoke_test(base, settings, "/mnt/drkd-results", cluster_gpus=0)
    assert base.data.min_size == 800 and settings.workers_per_trial == 8  # the inputs are not modified
    assert (cfg.data.min_size, cfg.data.max_size, cfg.data.val_limit) == (128, 192, 8)
    assert cfg.data.train_limit == 2 * 2 * 2  # batch 2 x 2 workers x 2 iterations
    assert cfg.train.total_epochs == 1 and new.num_trials == 2 and new.seeds == 1
    assert (new.workers_per_trial, new.cpus_per_worker, new.gpus_per_worker) == (2, 1, 0)
    assert new.storage_path == "/mnt/drkd-results/smoke_test"
    assert (
        "data.min_size: 800 -> 128" in changes and "sweep.gpus_per_worker (no GPU in the cluster): 1.0 -> 0" in changes
    )
    # everything that is not a size is as configured
    for section in ("student", "teacher", "distill"):
        assert getattr(cfg, section) == getattr(base, section), section
    assert (cfg.data.root, cfg.data.train_annotations) == (base.data.root, base.data.train_annotations)
    # the few iterations run where the real schedule starts: the warm-up's first rate, no ramp
    assert cfg.train.lr == pytest.approx(base.train.lr * base.train.warmup_factor) and cfg.train.warmup_iters == 0
    assert (
        f"train.lr (the warm-up's starting rate: a smoke test runs first iterations): {base.train.lr} -> "
        in "\n".join(changes)
    )
    assert (new.placement_strategy, new.max_failures, new.optuna_storage) == (
        settings.placement_strategy,
        settings.max_failures,
        settings.optuna_storage,
    )
    # with GPUs in the cluster the smoke test trains on them
    assert smoke_test(base, settings, "/r", cluster_gpus=8)[1].gpus_per_worker == 1
    # a trial's workers fit beside its driver: a 2-CPU node runs one worker per trial
    _, small, lines = smoke_test(base, settings, "/r", cluster_gpus=0, cluster_cpus=2)
    assert small.workers_per_trial == 1 and "sweep.workers_per_trial: 8 -> 1" in lines
    assert smoke_test(base, settings, "/r", cluster_gpus=0, cluster_cpus=3)[1].workers_per_trial == 2


def test_a_sweep_without_teacher_checkpoint_uses_the_published_teacher(tmp_path: Path) -> None:
    base, settings = load_sweep_config(REPO / "configs" / "coco_faster_rcnn.yaml")
    storage = str(tmp_path)
    settings.storage_path = storage
    assert base.teacher is not None and base.teacher.checkpoint is None
    path = Path(published_teacher(storage, "fasterrcnn", "resnext101_64x4d"))
    with pytest.raises(ConfigError, match=f"no teacher is published at {path}: train and publish one"):
        with_published_teacher(base, storage, "lambda_search")
    with pytest.raises(ConfigError, match=r"no trained teacher for one_stage, two_stage: .* nor published at"):
        _teacher_checkpoints(
            "table1", base, settings, [{"student.arch": "retinanet"}, {"student.arch": "fasterrcnn"}], True
        )
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert with_published_teacher(base, storage, "lambda_search").teacher.checkpoint == str(path)
    assert base.teacher.checkpoint is None  # not modified
    # a configured checkpoint wins over the published one
    base.teacher.checkpoint = str(tmp_path / "mine.pt")
    assert with_published_teacher(base, storage, "x").teacher.checkpoint == str(tmp_path / "mine.pt")
    base.teacher.checkpoint = None
    assert _teacher_checkpoints("table1", base, settings, [{"student.arch": "fasterrcnn"}], True) == {
        "two_stage": str(path)
    }


def test_a_sweeps_relative_paths_reach_its_trials_absolute_and_uris_unchanged(tmp_path: Path, monkeypatch) -> None:
    """Ray runs trials in other working directories: the relative backbone file of configs/tiny_*.yaml
    failed there ('file not found') before absolute_paths resolved it."""
    from drkd.analysis.paper_tables.cells import teacher
    from drkd.sweeps.tuner import absolute_paths

    monkeypatch.chdir(tmp_path)
    cfg = tiny_student_config("one_stage", "drkd", teacher_checkpoint="s3://bucket/teacher.pt")
    cfg.student.backbone_checkpoint = "results/cache/backbone.pt"
    assert cfg.teacher is not None
    cfg.teacher.backbone_checkpoint = "cache/teacher_body.pt"
    out = absolute_paths(cfg)
    assert out.data.root == str(tmp_path / "data" / "synthetic")
    assert out.student.backbone_checkpoint == str(tmp_path / "results" / "cache" / "backbone.pt")
    assert out.teacher is not None and out.teacher.backbone_checkpoint == str(tmp_path / "cache" / "teacher_body.pt")
    assert out.teacher.checkpoint == "s3://bucket/teacher.pt"
    assert cfg.student.backbone_checkpoint == "results/cache/backbone.pt"  # the plan's config is not changed
    # the teacher grid's cell carries the teacher's backbone as a trial override, which absolute_paths does not see
    assert teacher("one_stage", cfg)["student.backbone_checkpoint"] == str(tmp_path / "cache" / "teacher_body.pt")
    cfg.teacher.rpn_post_nms_top_n_test = 77  # the teacher is trained and evaluated as its section says
    assert teacher("two_stage", cfg)["student.rpn_post_nms_top_n_test"] == 77
