"""torchvision's COCO detectors as teachers (`teacher.weights`), with no download: every test puts a
same-architecture state dict where torch hub's cache would keep the real file, and the download
function is replaced by one that fails, so a test that would download fails instead."""

from __future__ import annotations

import dataclasses
import os
import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from drkd.config import ConfigError, DataConfig, DetectorConfig, load_config
from drkd.config.schema import TORCHVISION_DETECTORS
from drkd.models.detectors import build_detector, hub_cache_path, level_strides
from drkd.models.feature_taps import fpn_channels, freeze, teacher_features
from drkd.train.job import run_training
from drkd.train.preflight import check_teacher
from drkd.train.run_context import LocalContext

REPO = Path(__file__).resolve().parents[1]
DATA = DataConfig(min_size=64, max_size=96)
NAMES = list(TORCHVISION_DETECTORS)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache under tmp_path, and no downloads."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def offline(url: str, dst: str, *args, **kwargs) -> None:
        raise urllib.error.URLError(f"tests never download ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert Path(torch.hub.get_dir()) == home / "hub"
    return home


def teacher_section(name: str) -> DetectorConfig:
    cfg = DetectorConfig(**TORCHVISION_DETECTORS[name].fixed(), weights=name)
    cfg.validate("teacher")
    return cfg


def cache_weights(name: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """A randomly initialised state dict of the architecture torchvision's builder makes for ``name``,
    saved where torch hub looks for the real weights file; returns it."""
    torch.manual_seed(seed)
    builder = torchvision.models.get_model_builder(TORCHVISION_DETECTORS[name].builder)
    state = builder(weights=None, weights_backbone=None, num_classes=91).state_dict()
    for key, value in state.items():  # running statistics away from their initial values, so loading shows
        if key.endswith("running_mean"):
            value.normal_(0.0, 0.1)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
    path = hub_cache_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_every_name_is_a_torchvision_coco_detector_of_its_builder() -> None:
    for name, model in TORCHVISION_DETECTORS.items():
        weights = torchvision.models.get_weight(name)
        assert weights in list(torchvision.models.get_model_weights(model.builder)), name
        assert len(weights.meta["categories"]) == 91 and weights.meta["categories"][1] == "person", name


def test_cache_path_is_torch_hubs(torch_home: Path) -> None:
    for name in NAMES:
        url = torchvision.models.get_weight(name).url
        expected = torch_home / "hub" / "checkpoints" / os.path.basename(urlparse(url).path)
        assert hub_cache_path(name) == expected and expected.name.endswith(".pth")


@pytest.mark.parametrize("name", NAMES)
def test_teacher_is_torchvisions_model_with_every_key_loaded(torch_home: Path, name: str) -> None:
    saved = cache_weights(name, seed=1)
    torch.manual_seed(2)  # a fresh initialisation would differ from the saved one
    teacher = build_detector(teacher_section(name), 7, DATA)  # num_classes: unused without category names
    got = teacher.state_dict()
    # FrozenBatchNorm2d has no step counter: the only keys of the file it does not hold
    assert set(saved) - set(got) == {k for k in saved if k.endswith("num_batches_tracked")} - set(got)
    assert set(got) <= set(saved)
    for key, value in got.items():
        assert torch.equal(value, saved[key]), key
    spec = TORCHVISION_DETECTORS[name]
    builder_class = {"retinanet": "RetinaNet", "fasterrcnn": "FasterRCNN", "fcos": "FCOS"}[spec.arch]
    assert type(teacher) is getattr(torchvision.models.detection, builder_class)
    frozen = [m for m in teacher.modules() if isinstance(m, FrozenBatchNorm2d)]
    if name in ("RetinaNet_ResNet50_FPN_Weights.COCO_V1", "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"):
        assert frozen and all(m.eps == 0.0 for m in frozen)  # torchvision's builder set eps as these were trained

    # the FPN the distillers read: 5 levels of 256 channels at the arch's strides
    x = torch.rand(2, 3, 64, 96)
    feats = teacher_features(freeze(teacher), x)
    assert fpn_channels(teacher) == 256 and len(feats) == 5
    for f, stride in zip(feats, level_strides(spec.arch)):
        assert f.shape[:2] == (2, 256) and f.dtype == torch.float32 and not f.requires_grad
        assert tuple(f.shape[-2:]) == (-(-64 // stride), -(-96 // stride)), stride


def test_shipped_pair_runs_a_distillation_iteration(torch_home: Path, tiny_root: Path, tmp_path: Path) -> None:
    """configs/coco_retinanet_tv_r18.yaml on the tiny dataset: one DRKD step and one evaluation."""
    _run_shipped(REPO / "configs" / "coco_retinanet_tv_r18.yaml", tiny_root, tmp_path)


@pytest.mark.parametrize(
    "name", ["coco_faster_rcnn_tv_r18.yaml", "coco_fcos_tv_r18.yaml", "coco_retinanet_tv_mobilenet_v3.yaml"]
)
def test_every_shipped_pair_runs_a_distillation_iteration(
    torch_home: Path, tiny_root: Path, tmp_path: Path, name: str
) -> None:
    _run_shipped(REPO / "configs" / name, tiny_root, tmp_path)


def _run_shipped(path: Path, tiny_root: Path, tmp_path: Path) -> None:
    data = DataConfig(root=str(tiny_root), synthetic=False, min_size=64, max_size=64, batch_size=2)
    overrides = {f"data.{k}": v for k, v in dataclasses.asdict(data).items()}
    overrides.update(
        {
            "data.train_limit": 2,  # one iteration
            "data.val_limit": 1,
            "student.backbone_weights": None,  # ImageNet weights would download
            "train.epochs": 1,
            "train.warmup_iters": 1,
            "train.output_dir": str(tmp_path / "run"),
            "train.device": "cpu",
        }
    )
    cfg = load_config(path, overrides)
    assert cfg.teacher.weights and not cfg.distill.allow_untrained_teacher
    check_teacher(cfg)  # a torchvision COCO teacher counts as trained
    cache_weights(cfg.teacher.weights)
    last = run_training(cfg, LocalContext(cfg.train.output_dir))
    assert {"loss_pr", "loss_ir", "loss_ins", "loss_det", "mAP"} <= set(last)
    assert all(torch.isfinite(torch.tensor(last[k])) for k in ("loss_pr", "loss_ir", "loss_ins", "loss_total"))
    assert last["loss_pr"] > 0 and last["loss_ins"] > 0


@pytest.mark.parametrize(
    "name", ["RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1", "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"]
)
def test_class_outputs_line_up_with_a_datasets_categories(torch_home: Path, name: str) -> None:
    """category_names: label i of the cut-down model is the dataset's label i, with COCO's logits."""
    cache_weights(name)
    cfg = teacher_section(name)
    full = build_detector(cfg, 91, DATA).eval()
    names = ["dog", "person", "car"]  # COCO category ids 18, 1, 3; the dataset's labels 1, 2, 3
    cut = build_detector(cfg, 4, DATA, category_names=names).eval()
    keep = [0, 18, 1, 3]
    torch.manual_seed(0)
    if TORCHVISION_DETECTORS[name].arch == "fasterrcnn":
        x = torch.randn(5, 1024)
        a_cls, a_box = full.roi_heads.box_predictor(x)
        b_cls, b_box = cut.roi_heads.box_predictor(x)
        assert torch.allclose(b_cls, a_cls[:, keep], atol=1e-6)  # (a matmul of another width: not bit for bit)
        assert torch.allclose(b_box, a_box.view(5, 91, 4)[:, keep].reshape(5, -1), atol=1e-6)
    else:
        feats = [torch.randn(1, 256, 4, 4), torch.randn(1, 256, 2, 2)]
        with torch.no_grad():
            a = full.head.classification_head(feats)
            b = cut.head.classification_head(feats)
        assert b.shape[-1] == 4 and torch.allclose(b, a[..., keep], atol=1e-6)
    with torch.no_grad():
        out = cut([torch.rand(3, 64, 80)])[0]
    assert out["labels"].numel() == 0 or int(out["labels"].max()) <= 3

    with pytest.raises(ConfigError, match=r"weights = .*the dataset's category 'unicorn' is not one of its 80 COCO"):
        build_detector(cfg, 3, DATA, category_names=["person", "unicorn"])
    with pytest.raises(ValueError, match="num_classes = 7: 3 category names"):
        build_detector(cfg, 7, DATA, category_names=names)


def test_missing_weights_file_without_network_is_a_clear_error(torch_home: Path) -> None:
    name = "FCOS_ResNet50_FPN_Weights.COCO_V1"
    cached = hub_cache_path(name)
    url = torchvision.models.get_weight(name).url
    with pytest.raises(ConfigError) as err:
        build_detector(teacher_section(name), 7, DATA)
    message = str(err.value)
    assert f"weights = '{name}'" in message and str(cached) in message and url in message
    assert "not in the torch hub cache" in message and "copy it to" in message and "TORCH_HOME" in message
    assert not cached.exists()


def test_a_cached_file_that_does_not_load_is_named(torch_home: Path) -> None:
    name = "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1"
    cached = hub_cache_path(name)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a checkpoint")
    with pytest.raises(
        ConfigError, match=rf"weights = '{name}': the cached file .*{cached.name} does not load .*delete it"
    ):
        build_detector(teacher_section(name), 7, DATA)
    # the v1 model's weights under the v2 file name: the strict load refuses them
    torch.save(cache_weights("RetinaNet_ResNet50_FPN_Weights.COCO_V1"), cached)
    with pytest.raises(ConfigError, match=r"does not load \(Error\(s\) in loading state_dict for RetinaNet"):
        build_detector(teacher_section(name), 7, DATA)
