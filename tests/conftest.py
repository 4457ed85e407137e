"""Shared fixtures: a tiny synthetic dataset and tiny configs that train in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from drkd.config import Config, DataConfig, DetectorConfig, DistillConfig, TrainSettings, validate
from drkd.data.synthetic import make_synthetic_coco

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session", autouse=True)
def annotation_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parsed-annotation cache in a temporary directory (not the user's ~/.cache); Ray workers
    started by the tests inherit it."""
    path = tmp_path_factory.mktemp("drkd_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRKD_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session", autouse=True)
def private_ray() -> None:
    """Every Ray the tests start, in-process or through a command, is a private local instance:
    never a cluster another run left on this machine (RAY_ADDRESS, /tmp/ray/ray_current_cluster).
    Tests that mean a cluster pass its address explicitly."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_ADDRESS", "local")
        yield


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_coco(root, seed=0, num_train=16, num_val=8, image_size=128)
    return root


def make_tiny_config(
    root: Path, out: Path, method: str = "none", arch: str = "retinanet", teacher_ckpt: str | None = None
) -> Config:
    """A two-epoch run on 16 images of 128 px with 32-channel FPNs (teacher 48 channels)."""
    det = dict(
        arch=arch,
        backbone="resnet18",
        anchor_scale=2.0,
        head_norm="gn",
        rpn_pre_nms_top_n_train=200,
        rpn_post_nms_top_n_train=100,
    )
    teacher = DetectorConfig(fpn_channels=48, checkpoint=teacher_ckpt, **det) if method != "none" else None
    return validate(
        Config(
            data=DataConfig(root=str(root), synthetic=False, min_size=128, max_size=128, batch_size=4),
            student=DetectorConfig(fpn_channels=32, **det),
            teacher=teacher,
            distill=DistillConfig(method=method),
            train=TrainSettings(epochs=2, warmup_iters=2, log_every=1, output_dir=str(out), seed=3),
        )
    )


@pytest.fixture
def tiny_config(tiny_root: Path, tmp_path: Path):
    def factory(
        method: str = "none", arch: str = "retinanet", teacher_ckpt: str | None = None, out: str = "run"
    ) -> Config:
        return make_tiny_config(tiny_root, tmp_path / out, method, arch, teacher_ckpt)

    return factory


def _train_tiny_teacher(root: Path, out: Path, arch: str) -> str:
    """A one-epoch teacher (48-channel FPN, as make_tiny_config's teacher section expects)."""
    from drkd.train.job import run_training
    from drkd.train.run_context import LocalContext

    cfg = make_tiny_config(root, out, "none", arch=arch)
    cfg.student.fpn_channels = 48
    cfg.train.epochs = 1
    run_training(cfg, LocalContext(out))
    return str(out / "checkpoint.pt")


@pytest.fixture(scope="session")
def teacher_ckpt(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A one-epoch RetinaNet teacher for the tiny configs' distillation runs."""
    return _train_tiny_teacher(tiny_root, tmp_path_factory.mktemp("teacher"), "retinanet")


@pytest.fixture(scope="session")
def two_stage_teacher_ckpt(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A one-epoch Faster R-CNN teacher for the tiny two-stage distillation runs."""
    return _train_tiny_teacher(tiny_root, tmp_path_factory.mktemp("frcnn_teacher"), "fasterrcnn")


@pytest.fixture
def every_method_batch(tiny_config, teacher_ckpt: str, two_stage_teacher_ckpt: str):
    """``factory(arch)`` yields ``(method, cfg, num_classes, images, targets)`` for every shipped method:
    the tiny config distilling from the trained tiny teacher of ``arch`` ("retinanet" or
    "fasterrcnn"), at 96 px rather than 128 (bfloat16 convolutions take torch's slow reference
    kernels on a CPU without bfloat16 instructions: 2.5-3.3 s a step at 128 px, 1.2-2.0 s at 96),
    and the first two training images."""
    from drkd.config.methods import method_names
    from drkd.data.coco_dataset import collate_detection
    from drkd.train.job import build_datasets

    def factory(arch: str):
        ckpt = teacher_ckpt if arch == "retinanet" else two_stage_teacher_ckpt
        for method in method_names():
            cfg = tiny_config(method, arch=arch, teacher_ckpt=ckpt)
            cfg.data.min_size = cfg.data.max_size = 96
            data = build_datasets(cfg)
            images, targets = collate_detection([data.train[i] for i in range(2)])
            yield method, cfg, data.num_classes, images, targets

    return factory
