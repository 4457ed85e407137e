"""The one configuration object: nested dataclasses, loaded from YAML/JSON, validated at load.

Errors name the file, the dotted field and the bad value, e.g.
``configs/x.yaml: distill.drkd.instance_size = 2: must be one of 1, 3, 5``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

ARCHS = ("retinanet", "fasterrcnn", "fcos")
TWO_STAGE_ARCHS = ("fasterrcnn",)
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x8d", "mobilenet_v3_large")
METHODS = ("none", "drkd", "nld", "mkd", "fitnet")
SCHEDULES = {"1x": 1, "2x": 2}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


@dataclass
class DataConfig:
    """Where the COCO-format data lives and how it is fed."""

    root: str = "data/synthetic"
    synthetic: bool = True  # generate the embedded dataset under `root` if it is missing
    synthetic_seed: int = 0
    synthetic_num_train: int = 400
    synthetic_num_val: int = 100
    synthetic_image_size: int = 160
    train_images: str = "train"
    train_annotations: str = "annotations/instances_train.json"
    val_images: str = "val"
    val_annotations: str = "annotations/instances_val.json"
    min_size: int = 160  # detector transform: shorter side
    max_size: int = 160  # detector transform: longer side cap
    hflip_prob: float = 0.5
    batch_size: int = 8  # per worker
    loader_workers: int = 0
    train_limit: int | None = None  # use only the first N training images
    val_limit: int | None = None


@dataclass
class DetectorConfig:
    """A torchvision detector built by name."""

    arch: str = "retinanet"
    backbone: str = "resnet18"
    fpn_channels: int = 64
    backbone_weights: str | None = None  # torchvision weights name, e.g. "IMAGENET1K_V1" (downloads!)
    checkpoint: str | None = None  # local drkd or state-dict checkpoint to initialise from
    anchor_scale: float = 4.0  # anchor size = anchor_scale × level stride (torchvision: 4)
    trainable_backbone_layers: int = 5
    head_norm: str = "none"  # "gn": GroupNorm in the heads (trains from scratch); "none": torchvision's v1 heads
    norm: str | None = None  # "bn" | "frozen_bn"; None: frozen_bn with pretrained weights, else bn
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    roi_batch_size_per_image: int = 512  # Faster R-CNN: ROIs sampled per image for the box head
    detections_per_img: int = 100

    @property
    def two_stage(self) -> bool:
        return self.arch in TWO_STAGE_ARCHS


@dataclass
class DRKDConfig:
    """DRKD's switches and weights (paper §3, §4.3–4.5)."""

    pr: bool = True
    ir: bool = True
    ins: bool = True
    lambda_pr: float | None = None  # None: paper default for the student's framework
    lambda_ir: float | None = None
    lambda_ins: float | None = None
    instance_size: int = 3
    relation_filter: bool = True
    instance_levels: list[int] = field(default_factory=lambda: [0, 1])
    pixel_module: str = "glore"
    teacher_embed_trainable: bool = False


@dataclass
class DistillConfig:
    """Which distillation method, and its parameters."""

    method: str = "drkd"
    drkd: DRKDConfig = field(default_factory=DRKDConfig)
    nld: dict[str, Any] = field(default_factory=dict)
    mkd: dict[str, Any] = field(default_factory=dict)
    fitnet: dict[str, Any] = field(default_factory=dict)
    # method -> factor on all of that method's loss weights (defaults or explicit); missing = 1
    weight_scale: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainSettings:
    """Optimisation, schedule and bookkeeping (paper §4.1)."""

    schedule: str = "1x"
    epochs_1x: int = 12  # epochs of a 1× schedule; 2× doubles it
    epochs: int | None = None  # explicit total; None: epochs_1x × schedule
    lr: float = 0.02  # at a total batch of 16, scaled linearly
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_factor: float = 0.001
    grad_clip: float | None = None
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    seed: int = 0
    log_every: int = 20
    output_dir: str = "runs/train"
    device: str = "auto"

    @property
    def total_epochs(self) -> int:
        return self.epochs if self.epochs is not None else self.epochs_1x * SCHEDULES[self.schedule]


@dataclass
class Config:
    """Everything one training job needs."""

    data: DataConfig = field(default_factory=DataConfig)
    student: DetectorConfig = field(default_factory=DetectorConfig)
    teacher: DetectorConfig | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainSettings = field(default_factory=TrainSettings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def copy(self) -> "Config":
        return copy.deepcopy(self)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting ints to floats where floats are due."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where} = {value!r}: has the wrong type")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} = {value!r}: must be a mapping")
        return _build(tp, value, where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r}: must be a list")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} = {value!r}: must be a mapping")
        _, value_tp = typing.get_args(tp)
        return {k: _coerce(v, value_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {value!r}: must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r}: must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r}: must be a string")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown field (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
    return cls(**kwargs)


def _check_choice(where: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{where} = {value!r}: must be one of {', '.join(map(str, choices))}")


def _check_positive(where: str, value: float | int | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where} = {value!r}: must be {'>= 0' if allow_zero else '> 0'}")


def _validate_detector(d: DetectorConfig, where: str) -> None:
    _check_choice(f"{where}.arch", d.arch, ARCHS)
    _check_choice(f"{where}.backbone", d.backbone, BACKBONES)
    _check_positive(f"{where}.fpn_channels", d.fpn_channels)
    _check_positive(f"{where}.anchor_scale", d.anchor_scale)
    _check_positive(f"{where}.roi_batch_size_per_image", d.roi_batch_size_per_image)
    if d.arch == "fcos" and d.fpn_channels % 32:
        raise ConfigError(f"{where}.fpn_channels = {d.fpn_channels}: FCOS's GroupNorm(32) head needs a multiple of 32")
    if not 0 <= d.trainable_backbone_layers <= 5:
        raise ConfigError(f"{where}.trainable_backbone_layers = {d.trainable_backbone_layers}: must be in 0..5")
    _check_choice(f"{where}.head_norm", d.head_norm, ("none", "gn"))
    if d.head_norm == "gn" and d.fpn_channels % 8:
        raise ConfigError(f"{where}.fpn_channels = {d.fpn_channels}: head_norm gn needs a multiple of 8")
    if d.norm is not None:
        _check_choice(f"{where}.norm", d.norm, ("bn", "frozen_bn"))


def validate(cfg: Config) -> Config:
    """Range and consistency checks that types alone do not catch; returns `cfg`."""
    _validate_detector(cfg.student, "student")
    if cfg.teacher is not None:
        _validate_detector(cfg.teacher, "teacher")
    d = cfg.data
    for name in ("min_size", "max_size", "batch_size", "synthetic_num_train", "synthetic_num_val", "synthetic_image_size"):
        _check_positive(f"data.{name}", getattr(d, name))
    _check_positive("data.loader_workers", d.loader_workers, allow_zero=True)
    _check_positive("data.train_limit", d.train_limit)
    _check_positive("data.val_limit", d.val_limit)
    if not 0.0 <= d.hflip_prob <= 1.0:
        raise ConfigError(f"data.hflip_prob = {d.hflip_prob}: must be in [0, 1]")
    if d.max_size < d.min_size:
        raise ConfigError(f"data.max_size = {d.max_size}: must be >= data.min_size ({d.min_size})")

    t = cfg.train
    _check_choice("train.schedule", t.schedule, tuple(SCHEDULES))
    _check_positive("train.epochs_1x", t.epochs_1x)
    _check_positive("train.epochs", t.epochs)
    for name in ("lr", "warmup_factor"):
        _check_positive(f"train.{name}", getattr(t, name))
    for name in ("momentum", "weight_decay", "warmup_iters"):
        _check_positive(f"train.{name}", getattr(t, name), allow_zero=True)
    _check_positive("train.grad_clip", t.grad_clip)
    _check_positive("train.log_every", t.log_every)
    if t.device not in ("auto", "cpu") and not t.device.startswith("cuda"):
        raise ConfigError(f"train.device = {t.device!r}: must be auto, cpu or cuda[:N]")

    m = cfg.distill
    _check_choice("distill.method", m.method, METHODS)
    if m.method != "none" and cfg.teacher is None:
        raise ConfigError(f"distill.method = {m.method!r}: needs a `teacher` section (or use method: none)")
    k = m.drkd
    for name in ("lambda_pr", "lambda_ir", "lambda_ins"):
        _check_positive(f"distill.drkd.{name}", getattr(k, name), allow_zero=True)
    _check_choice("distill.drkd.instance_size", k.instance_size, (1, 3, 5))
    _check_choice("distill.drkd.pixel_module", k.pixel_module, ("glore", "non_local"))
    if not k.instance_levels:
        raise ConfigError("distill.drkd.instance_levels = []: needs at least one FPN level index")
    for i, level in enumerate(k.instance_levels):
        if not 0 <= level <= 4:
            raise ConfigError(f"distill.drkd.instance_levels[{i}] = {level}: must be an FPN level index in 0..4")
    if m.method == "drkd" and not (k.pr or k.ir or k.ins):
        raise ConfigError("distill.drkd: pr, ir and ins are all off; use distill.method: none for a baseline")
    for name, factor in m.weight_scale.items():
        _check_choice("distill.weight_scale key", name, tuple(x for x in METHODS if x != "none"))
        _check_positive(f"distill.weight_scale.{name}", factor)
    if m.method in ("nld", "mkd", "fitnet"):
        from drkd.distill_methods import check_method_params

        try:
            check_method_params(m.method, getattr(m, m.method))
        except ValueError as err:
            raise ConfigError(f"distill.{m.method}: {err}") from None
    return cfg


def config_from_dict(values: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Build and validate a Config; errors are prefixed with `source`."""
    try:
        return validate(_build(Config, values, ""))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def apply_overrides(cfg: Config, overrides: Mapping[str, Any], source: str = "overrides") -> Config:
    """Return a validated copy of `cfg` with dotted keys (``distill.drkd.lambda_pr``) replaced."""
    values = cfg.to_dict()
    for key, value in overrides.items():
        parts = key.split(".")
        node = values
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is None and part == "teacher":
                node[part] = dataclasses.asdict(DetectorConfig())
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{source}: {'.'.join(parts[: i + 1])}: unknown section in key {key!r}")
            node = node[part]
        node[parts[-1]] = value
    return config_from_dict(values, source)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON config file's top-level sections, unvalidated; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(values).__name__}")
    return values


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Load a YAML or JSON config file, apply dotted overrides, validate (a `sweep:` section is ignored)."""
    values = read_config_file(path)
    values.pop("sweep", None)  # a sweep config is a training config plus its `sweep:` section
    cfg = config_from_dict(values, str(path))
    return apply_overrides(cfg, overrides, str(path)) if overrides else cfg


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write `cfg` as YAML that :func:`load_config` reads back to an equal Config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


def resolved_lambdas(cfg: Config) -> tuple[float, float, float]:
    """(λ1, λ2, λ3) with the paper's defaults (§4.5) filled in for the student's framework."""
    from drkd.drkd_distiller import paper_lambdas

    default = paper_lambdas(cfg.student.two_stage)
    k = cfg.distill.drkd
    given = (k.lambda_pr, k.lambda_ir, k.lambda_ins)
    return tuple(g if g is not None else d for g, d in zip(given, default))  # type: ignore[return-value]
