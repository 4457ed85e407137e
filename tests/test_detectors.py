"""Detectors built by name, and feature taps that see exactly what the detector saw."""

from __future__ import annotations

import pytest
import torch

from drkd.config import DataConfig, DetectorConfig
from drkd.models.detectors import build_detector, export_state_dict
from drkd.models.feature_taps import FeatureTap, freeze, teacher_features

DATA = DataConfig(min_size=96, max_size=128)


def _batch() -> tuple[list[torch.Tensor], list[dict]]:
    images = [torch.rand(3, 80, 100), torch.rand(3, 90, 70)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 40.0, 50.0], [50.0, 20.0, 90.0, 70.0]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[5.0, 5.0, 30.0, 25.0]]), "labels": torch.tensor([3])},
    ]
    return images, targets


@pytest.mark.parametrize(
    "arch, backbone, levels",
    [
        ("retinanet", "resnet18", 5),
        ("fasterrcnn", "resnet18", 5),
        ("fcos", "resnet34", 5),
        ("retinanet", "mobilenet_v3_large", 5),
        ("fasterrcnn", "mobilenet_v3_large", 5),
        ("retinanet", "resnext101_64x4d", 5),  # the paper's teacher backbone
    ],
)
def test_build_train_and_tap(arch: str, backbone: str, levels: int) -> None:
    torch.manual_seed(0)
    channels = 32 if arch == "fcos" else 24  # FCOS's head uses GroupNorm(32)
    model = build_detector(
        DetectorConfig(arch=arch, backbone=backbone, fpn_channels=channels, anchor_scale=2.0), 4, DATA
    )
    tap = FeatureTap(model)
    images, targets = _batch()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert len(tap.features) == levels and all(f.shape[1] == channels for f in tap.features)
    h, w = tap.image_shape
    assert h % 32 == 0 and w % 32 == 0  # padded batch
    # highest resolution first, strides doubling
    widths = [f.shape[-1] for f in tap.features]
    assert widths == sorted(widths, reverse=True)
    # GT boxes come back in the transformed coordinates: scaled by the transform's resize factor
    scale = tap.images.image_sizes[0][0] / images[0].shape[-2]
    assert torch.allclose(tap.boxes[0], targets[0]["boxes"] * scale, atol=1e-3)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) >= {"boxes", "scores", "labels"}


def test_teacher_runs_backbone_only_frozen() -> None:
    teacher = freeze(build_detector(DetectorConfig(backbone="resnet18", fpn_channels=16), 3, DATA))
    calls = []
    teacher.head.register_forward_hook(lambda *a: calls.append("head"))
    x = torch.rand(2, 3, 96, 128, requires_grad=True)
    feats = teacher_features(teacher, x)
    assert len(feats) == 5 and not calls
    assert not any(f.requires_grad for f in feats)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_bad_checkpoint_is_named(tmp_path) -> None:
    from drkd.config import ConfigError

    with pytest.raises(ConfigError, match="missing.pt"):
        build_detector(DetectorConfig(checkpoint=str(tmp_path / "missing.pt")), 3, DATA)
    other = tmp_path / "other.pt"
    torch.save(build_detector(DetectorConfig(fpn_channels=16), 3, DATA).state_dict(), other)
    with pytest.raises(ConfigError, match="does not fit"):
        build_detector(DetectorConfig(fpn_channels=32, checkpoint=str(other)), 3, DATA)


def test_export_loads_into_plain_torchvision() -> None:
    """The R50/256 RetinaNet export loads, strict, into torchvision's own builder and predicts the same."""
    import torchvision

    torch.manual_seed(0)
    ours = build_detector(
        DetectorConfig(backbone="resnet50", fpn_channels=256), 5, DataConfig(min_size=128, max_size=128)
    )
    ours.eval()
    plain = torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=5, min_size=128, max_size=128
    )
    plain.load_state_dict(export_state_dict(ours), strict=True)
    plain.eval()
    x = [torch.rand(3, 128, 128)]
    with torch.no_grad():
        a, b = ours(x)[0], plain(x)[0]
    assert torch.allclose(a["scores"], b["scores"], atol=1e-5) and torch.allclose(a["boxes"], b["boxes"], atol=1e-3)


def test_checkpoint_key_mismatch_names_every_missing_and_unexpected_key(tmp_path) -> None:
    from drkd.config import ConfigError

    state = build_detector(DetectorConfig(fpn_channels=16), 3, DATA).state_dict()
    state["head.extra.weight"] = torch.zeros(1)
    dropped = [k for k in state if k.startswith("head.regression_head.bbox_reg")]
    for k in dropped:
        del state[k]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(ConfigError) as err:
        build_detector(DetectorConfig(fpn_channels=16, checkpoint=str(path)), 3, DATA)
    message = str(err.value)
    assert f"missing {len(dropped)} keys: {', '.join(dropped)}" in message
    assert "unexpected 1 key: head.extra.weight" in message


def test_faster_rcnn_keeps_the_configured_proposals_in_training_and_at_evaluation() -> None:
    torch.manual_seed(0)
    cfg = DetectorConfig(
        arch="fasterrcnn",
        fpn_channels=24,
        rpn_pre_nms_top_n_train=40,
        rpn_post_nms_top_n_train=11,
        rpn_pre_nms_top_n_test=30,
        rpn_post_nms_top_n_test=5,
    )
    model = build_detector(cfg, 4, DATA)
    kept: list[int] = []
    model.rpn.register_forward_hook(lambda module, args, out: kept.extend(len(b) for b in out[0]))
    images, targets = _batch()
    model(images, targets)
    assert max(kept) == 11  # a random RPN keeps far more than 11 boxes after NMS
    kept.clear()
    model.eval()
    with torch.no_grad():
        model(images)
    assert max(kept) == 5
