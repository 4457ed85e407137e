"""Sanity checks a user runs when distillation shows no gain: the distiller must be inert at zero
weight, and a teacher must really be loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from drkd.config import ConfigError
from drkd.train.job import build_models, run_training
from drkd.train.run_context import LocalContext


def _short(cfg):
    cfg.train.epochs = 1
    cfg.data.train_limit = 8
    cfg.data.val_limit = 2
    return cfg


def test_zero_distillation_weights_train_the_student_as_without_distillation(tiny_config, teacher_ckpt: str) -> None:
    """Same seed, λ1 = λ2 = λ3 = 0: the student's weights equal those of a method-none run, bit for bit."""
    plain = _short(tiny_config("none", out="plain"))
    zero = _short(tiny_config("drkd", teacher_ckpt=teacher_ckpt, out="zero"))
    zero.distill.drkd.lambda_pr = zero.distill.drkd.lambda_ir = zero.distill.drkd.lambda_ins = 0.0
    run_training(plain, LocalContext(plain.train.output_dir))
    last = run_training(zero, LocalContext(zero.train.output_dir))
    assert last["loss_pr"] > 0 and last["loss_ir"] >= 0 and last["loss_ins"] > 0  # the terms were computed
    a = torch.load(Path(plain.train.output_dir) / "checkpoint.pt", weights_only=False)["student"]
    b = torch.load(Path(zero.train.output_dir) / "checkpoint.pt", weights_only=False)["student"]
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert not changed, f"student weights differ: {changed[:5]}"


def test_distilling_from_an_untrained_teacher_is_an_error_unless_allowed(tiny_config) -> None:
    cfg = tiny_config("drkd")  # a teacher section with neither checkpoint nor backbone_weights
    with pytest.raises(ConfigError, match=r"teacher: neither checkpoint nor backbone_weights.*allow_untrained_teacher"):
        build_models(cfg, 7)
    cfg.distill.allow_untrained_teacher = True
    assert build_models(cfg, 7).teacher is not None


def test_a_sweep_with_an_untrained_teacher_fails_before_any_trial(tiny_config, tmp_path: Path) -> None:
    from drkd.config.sweep_settings import SweepSettings
    from drkd.sweeps.tuner import SweepPlan, run_sweep

    base = tiny_config("drkd")  # no teacher checkpoint
    settings = SweepSettings(name="untrained", storage_path=str(tmp_path / "results"))
    grid = [{"cell": "one", "distill.method": "drkd"}]
    with pytest.raises(ConfigError, match=r"cells cell one: teacher: neither checkpoint"):
        run_sweep(SweepPlan("cells", base, settings, grid=grid))
    with pytest.raises(ConfigError, match=r"search base config: teacher: neither checkpoint"):
        run_sweep(SweepPlan("search", base, settings, space=lambda trial: {}))
    assert not (tmp_path / "results").exists()  # nothing started, nothing written


@pytest.mark.parametrize(
    "method,arch,options",
    [
        ("drkd", "retinanet", {}),
        ("drkd", "fasterrcnn", {"pixel_module": "non_local"}),
        ("drkd", "retinanet", {"ir_target": "features", "teacher_embed_trainable": True, "teacher_filter": "shared"}),
        ("nld", "retinanet", {}),
        ("mkd", "retinanet", {}),
        ("fitnet", "retinanet", {}),
        ("pkd", "fasterrcnn", {}),
        ("cwd", "retinanet", {"always_adapt": True}),
        ("mgd", "retinanet", {}),
        ("fgd", "fasterrcnn", {}),
    ],
)
def test_every_trainable_parameter_gets_a_gradient_even_on_an_image_without_objects(
    tiny_config, method: str, arch: str, options: dict
) -> None:
    """What lets DDP run with find_unused_parameters=False (drkd.sweeps.ray_worker): one training step
    reaches every trainable parameter of student and distiller, also when an image has no GT box."""
    from drkd.data.coco_dataset import collate_detection
    from drkd.train.job import build_datasets

    cfg = tiny_config(method, arch=arch)
    cfg.distill.allow_untrained_teacher = True
    for key, value in options.items():
        setattr(cfg.distill.drkd, key, value)
    data = build_datasets(cfg)
    images, targets = collate_detection([data.train[0], data.train[1]])
    targets[1] = {**targets[1], "boxes": targets[1]["boxes"][:0], "labels": targets[1]["labels"][:0]}
    torch.manual_seed(0)
    model = build_models(cfg, data.num_classes)
    model.train()
    loss, _ = model(list(images), targets)
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"{method}: parameters without a gradient: {unused[:5]}"
