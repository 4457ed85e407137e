"""The one configuration object: nested dataclasses, each section validating itself.

Method sections (``distill.drkd``, ``distill.nld``, ...) are not defined here: each method
registers its parameter dataclass (:mod:`drkd.config.methods`) and :class:`DistillConfig` holds
one instance per registered method. Loading files is :mod:`drkd.config.files`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from drkd.config.coercion import build_dataclass, coerce
from drkd.config.errors import ConfigError
from drkd.config.methods import DEFAULT_METHOD, NO_DISTILLATION, MethodParams, method_names, method_spec, method_specs

ARCHS = ("retinanet", "fasterrcnn", "fcos")
TWO_STAGE_ARCHS = ("fasterrcnn",)
# the detector families the paper's tables split by (DetectorConfig.framework)
FRAMEWORKS = ("one_stage", "two_stage")
BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnext101_32x8d",
    "resnext101_64x4d",  # the paper's teachers (mmdetection RX101 64x4d)
    "mobilenet_v3_large",
)
HEAD_NORMS = ("none", "gn")
# student.init_from_teacher: which trained teacher parts the student starts from ("inheriting", as
# FGD's and MGD's RetinaNet students do); the backbone always keeps its own initialisation.
INHERIT_PARTS = ("none", "neck", "neck_head")
# DetectorConfig's Faster R-CNN sizes: RPN proposals kept at evaluation, all RPN proposal counts,
# and those plus the box head's sampling and the detections kept
TEST_PROPOSAL_FIELDS = ("rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test")
RPN_PROPOSAL_FIELDS = ("rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", *TEST_PROPOSAL_FIELDS)
FASTER_RCNN_SIZE_FIELDS = (*RPN_PROPOSAL_FIELDS, "roi_batch_size_per_image", "detections_per_img")
NORMS = ("bn", "frozen_bn")
SCHEDULES = {"1x": 1, "2x": 2}
MAX_TRAINABLE_BACKBONE_LAYERS = 5


@dataclass(frozen=True)
class TorchvisionDetector:
    """A torchvision COCO detector that ``teacher.weights`` may name.

    Its builder (``torchvision.models.detection.<builder>``) fixes the architecture, so the detector
    section must describe it: ``fixed()`` maps each section field to the value that does. ``None``
    marks a field drkd ignores for that arch (FCOS: ``head_norm``, ``anchor_scale``).
    """

    builder: str
    arch: str
    head_norm: str | None
    anchor_scale: float | None
    backbone: str = "resnet50"
    fpn_channels: int = 256

    def fixed(self) -> dict[str, Any]:
        """Section field -> the value the builder fixes (fields drkd ignores for the arch left out)."""
        values = {
            "arch": self.arch,
            "backbone": self.backbone,
            "fpn_channels": self.fpn_channels,
            "head_norm": self.head_norm,
            "anchor_scale": self.anchor_scale,
        }
        return {k: v for k, v in values.items() if v is not None}


# `*.weights` names (torchvision weights enum values, as `torchvision.models.get_weight` reads them).
# head_norm: v1 heads are torchvision's plain ones ("none"); the v2 heads normalise ("gn": RetinaNet v2
# uses GroupNorm; Faster R-CNN v2 has the 2-conv RPN and 4-conv box head of drkd's "gn", with BatchNorm).
# anchor_scale: RetinaNet's anchors are 4 x the stride (torchvision truncates the octave sizes to
# integers: 32, 40, 50 at P3), Faster R-CNN's 8 x (32 at P2); FCOS's are the stride itself.
TORCHVISION_DETECTORS: dict[str, TorchvisionDetector] = {
    "RetinaNet_ResNet50_FPN_Weights.COCO_V1": TorchvisionDetector("retinanet_resnet50_fpn", "retinanet", "none", 4.0),
    "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1": TorchvisionDetector(
        "retinanet_resnet50_fpn_v2", "retinanet", "gn", 4.0
    ),
    "FasterRCNN_ResNet50_FPN_Weights.COCO_V1": TorchvisionDetector(
        "fasterrcnn_resnet50_fpn", "fasterrcnn", "none", 8.0
    ),
    "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1": TorchvisionDetector(
        "fasterrcnn_resnet50_fpn_v2", "fasterrcnn", "gn", 8.0
    ),
    "FCOS_ResNet50_FPN_Weights.COCO_V1": TorchvisionDetector("fcos_resnet50_fpn", "fcos", None, None),
}


def check_choice(where: str, value: Any, choices: tuple | Mapping) -> None:
    """``value`` is one of ``choices``, else a ConfigError naming ``where`` and the choices."""
    if value not in choices:
        raise ConfigError(f"{where} = {value!r}: must be one of {', '.join(map(str, choices))}")


def check_positive(where: str, value: float | int | None, allow_zero: bool = False) -> None:
    """``value`` is > 0 (>= 0 with ``allow_zero``) or None, else a ConfigError naming ``where``."""
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where} = {value!r}: must be {'>= 0' if allow_zero else '> 0'}")


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

    def validate(self, where: str = "data") -> None:
        for name in (
            "min_size",
            "max_size",
            "batch_size",
            "synthetic_num_train",
            "synthetic_num_val",
            "synthetic_image_size",
        ):
            check_positive(f"{where}.{name}", getattr(self, name))
        check_positive(f"{where}.loader_workers", self.loader_workers, allow_zero=True)
        check_positive(f"{where}.train_limit", self.train_limit)
        check_positive(f"{where}.val_limit", self.val_limit)
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ConfigError(f"{where}.hflip_prob = {self.hflip_prob}: must be in [0, 1]")
        if self.max_size < self.min_size:
            raise ConfigError(f"{where}.max_size = {self.max_size}: must be >= {where}.min_size ({self.min_size})")


@dataclass
class DetectorConfig:
    """A torchvision detector built by name."""

    arch: str = "retinanet"
    backbone: str = "resnet18"
    fpn_channels: int = 64
    backbone_weights: str | None = None  # torchvision weights name, e.g. "IMAGENET1K_V1" (downloads!)
    # a backbone body saved by drkd's crop pretraining (drkd.train.backbone_pretrain), loaded into a
    # ResNet/ResNeXt body before training: the embedded default's stand-in for ImageNet weights
    backbone_checkpoint: str | None = None
    checkpoint: str | None = None  # local drkd or state-dict checkpoint to initialise from
    # teacher only: a torchvision COCO detector's weights (TORCHVISION_DETECTORS), e.g.
    # "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1": built by torchvision's builder, weights from the
    # torch hub cache (downloaded on first use); the section must describe that model
    weights: str | None = None
    anchor_scale: float = 4.0  # anchor size = anchor_scale × level stride (torchvision: 4)
    trainable_backbone_layers: int = 5
    head_norm: str = "none"  # "gn": GroupNorm in the heads (trains from scratch); "none": torchvision's v1 heads
    norm: str | None = None  # "bn" | "frozen_bn"; None: frozen_bn with backbone_weights, else bn
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    # at evaluation: torchvision's 1000/1000; Faster R-CNN's paper tested with 300 proposals
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    roi_batch_size_per_image: int = 512  # Faster R-CNN: ROIs sampled per image for the box head
    detections_per_img: int = 100
    # student only (INHERIT_PARTS): start from the teacher's FPN ("neck") or its FPN and heads
    # ("neck_head"); shapes must match the teacher's (same arch, fpn_channels, head_norm, classes)
    init_from_teacher: str = "none"

    @property
    def two_stage(self) -> bool:
        return self.arch in TWO_STAGE_ARCHS

    @property
    def framework(self) -> str:
        """``"two_stage"`` for Faster R-CNN, else ``"one_stage"`` (a FRAMEWORKS name)."""
        return "two_stage" if self.two_stage else "one_stage"

    def validate(self, where: str) -> None:
        check_choice(f"{where}.arch", self.arch, ARCHS)
        check_choice(f"{where}.backbone", self.backbone, BACKBONES)
        check_positive(f"{where}.fpn_channels", self.fpn_channels)
        check_positive(f"{where}.anchor_scale", self.anchor_scale)
        check_positive(f"{where}.roi_batch_size_per_image", self.roi_batch_size_per_image)
        for name in RPN_PROPOSAL_FIELDS:
            check_positive(f"{where}.{name}", getattr(self, name))
        if self.arch == "fcos" and self.fpn_channels % 32:
            raise ConfigError(
                f"{where}.fpn_channels = {self.fpn_channels}: FCOS's GroupNorm(32) head needs a multiple of 32"
            )
        if not 0 <= self.trainable_backbone_layers <= MAX_TRAINABLE_BACKBONE_LAYERS:
            raise ConfigError(
                f"{where}.trainable_backbone_layers = {self.trainable_backbone_layers}: "
                f"must be in 0..{MAX_TRAINABLE_BACKBONE_LAYERS}"
            )
        check_choice(f"{where}.head_norm", self.head_norm, HEAD_NORMS)
        check_choice(f"{where}.init_from_teacher", self.init_from_teacher, INHERIT_PARTS)
        if self.head_norm == "gn" and self.fpn_channels % 8:
            raise ConfigError(f"{where}.fpn_channels = {self.fpn_channels}: head_norm gn needs a multiple of 8")
        if self.norm is not None:
            check_choice(f"{where}.norm", self.norm, NORMS)
        if self.weights is not None:
            self._check_weights(where)
        if self.backbone_checkpoint is not None:
            if self.backbone_weights is not None:
                raise ConfigError(
                    f"{where}.backbone_checkpoint = {self.backbone_checkpoint!r}: give {where}.backbone_weights "
                    f"or {where}.backbone_checkpoint, not both"
                )
            if not self.backbone.startswith("res"):
                raise ConfigError(
                    f"{where}.backbone_checkpoint = {self.backbone_checkpoint!r}: only for the ResNet/ResNeXt "
                    f"backbones, not {where}.backbone = {self.backbone!r}"
                )

    def _check_weights(self, where: str) -> None:
        """``weights`` is a known torchvision COCO detector and the section describes that model."""
        check_choice(f"{where}.weights", self.weights, tuple(TORCHVISION_DETECTORS))
        model = TORCHVISION_DETECTORS[self.weights]
        named = f"{where}.weights = {self.weights!r} (torchvision's {model.builder})"
        for name, expected in model.fixed().items():
            value = getattr(self, name)
            if value != expected:
                raise ConfigError(f"{where}.{name} = {value!r}: {named} fixes it to {expected!r}")
        if self.checkpoint is not None:
            raise ConfigError(
                f"{where}.checkpoint = {self.checkpoint!r}: give {where}.weights or {where}.checkpoint, not both"
            )
        for name in ("backbone_weights", "backbone_checkpoint"):
            if getattr(self, name) is not None:
                raise ConfigError(
                    f"{where}.{name} = {getattr(self, name)!r}: {named} holds the whole detector, "
                    "backbone included; leave it unset"
                )
        if self.norm is not None:
            raise ConfigError(f"{where}.norm = {self.norm!r}: {named} picks its own norm layers; leave it unset")


# The widest backbone stage's channels: the FPN's lateral convolutions take them as input.
_BACKBONE_OUT_CHANNELS = {"resnet18": 512, "resnet34": 512, "mobilenet_v3_large": 960}


def inherit_mismatch(student: DetectorConfig, teacher: DetectorConfig, part: str) -> str | None:
    """Why ``student`` cannot inherit ``part`` (``neck`` | ``neck_head``) of ``teacher``, or ``None``.

    The neck (FPN) needs the same FPN width and backbone stage widths; the heads also need the
    same arch and head norm (the class count is checked on the built models).
    """
    names = ("fpn_channels", "backbone", "arch", "head_norm") if part == "neck_head" else ("fpn_channels", "backbone")
    for name in names:
        mine, theirs = getattr(student, name), getattr(teacher, name)
        if name == "backbone":
            mine, theirs = (_BACKBONE_OUT_CHANNELS.get(b, 2048) for b in (mine, theirs))
        if mine != theirs:
            what = "neck and heads" if part == "neck_head" else "neck"
            if name == "backbone":
                return (
                    f"student.backbone = {student.backbone!r} ({mine} channels) and teacher.backbone = "
                    f"{teacher.backbone!r} ({theirs}) feed FPNs of other input widths; inheriting the {what} needs the same shapes"
                )
            return f"student.{name} = {mine!r} but teacher.{name} = {theirs!r}; inheriting the {what} needs the same shapes"
    return None


def _default_method_params() -> dict[str, MethodParams]:
    return {spec.name: spec.params() for spec in method_specs()}


@dataclass
class DistillConfig:
    """Which distillation method, and its parameters.

    In files the section reads ``{method: drkd, weight_scale: {...}, drkd: {...}, nld: {...}}``:
    a key per registered method, each that method's parameter dataclass (missing ones take their
    defaults). ``cfg.distill.drkd`` reads and assigns ``cfg.distill.params["drkd"]``.
    """

    method: str = DEFAULT_METHOD
    # method -> factor on all of that method's loss weights (defaults or explicit): one number, or one
    # per framework ({one_stage: x, two_stage: y}); a method or framework left out: 1
    weight_scale: dict[str, float | dict[str, float]] = field(default_factory=dict)
    # a teacher with neither checkpoint, backbone_weights nor weights is an error unless this is set (benchmarks)
    allow_untrained_teacher: bool = False
    params: dict[str, MethodParams] = field(default_factory=_default_method_params)

    def __getattr__(self, name: str) -> MethodParams:
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or method section {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("params")
        if params is not None and name in params:
            params[name] = value
        else:
            object.__setattr__(self, name, value)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str) -> DistillConfig:
        """Build from a file's ``distill`` section (see the class docstring)."""
        own = {"method": str, "weight_scale": dict[str, float | dict[str, float]], "allow_untrained_teacher": bool}
        unknown = sorted(k for k in values if k not in own and k not in method_names())
        if unknown:
            known = ", ".join([*own, *method_names()])
            raise ConfigError(f"{where}.{unknown[0]}: unknown field (known: {known})")
        kwargs = {k: coerce(values[k], tp, f"{where}.{k}") for k, tp in own.items() if k in values}
        params = _default_method_params()
        for name in params:
            if name in values:
                section = values[name] if values[name] is not None else {}
                params[name] = coerce(section, method_spec(name).params, f"{where}.{name}")
        return cls(**kwargs, params=params)

    def to_dict(self) -> dict[str, Any]:
        """The file form: ``method``, ``weight_scale``, the selected method's section and any other
        section that differs from its defaults (so a process that has not registered some other
        method reads it back, and saved configs stay short)."""
        sections = {
            name: dataclasses.asdict(p)  # type: ignore[call-overload]
            for name, p in self.params.items()
            if name == self.method or p != type(p)()
        }
        return {
            "method": self.method,
            "weight_scale": {k: dict(v) if isinstance(v, Mapping) else v for k, v in self.weight_scale.items()},
            "allow_untrained_teacher": self.allow_untrained_teacher,
            **sections,
        }

    def scale_for(self, method: str, framework: str) -> float:
        """The factor ``weight_scale`` gives ``method``'s loss weights on a ``framework`` detector
        (a FRAMEWORKS name); 1 where it names neither the method nor, in a per-framework entry,
        the framework."""
        factor = self.weight_scale.get(method, 1.0)
        return factor.get(framework, 1.0) if isinstance(factor, Mapping) else factor

    def validate(self, where: str = "distill", has_teacher: bool = True) -> None:
        check_choice(f"{where}.method", self.method, method_names(with_none=True))
        if self.method != NO_DISTILLATION and not has_teacher:
            raise ConfigError(
                f"{where}.method = {self.method!r}: needs a `teacher` section (or use method: {NO_DISTILLATION})"
            )
        for name, factor in self.weight_scale.items():
            check_choice(f"{where}.weight_scale key", name, method_names())
            if isinstance(factor, Mapping):
                for framework, value in factor.items():
                    check_choice(f"{where}.weight_scale.{name} key", framework, FRAMEWORKS)
                    check_positive(f"{where}.weight_scale.{name}.{framework}", value)
            else:
                check_positive(f"{where}.weight_scale.{name}", factor)
        for name, params in self.params.items():
            params.validate(f"{where}.{name}")
        if self.method in self.params:
            self.params[self.method].check_active(f"{where}.{self.method}")


# autocast dtypes train.amp_dtype may name (drkd.train.precision maps them to torch dtypes)
AMP_DTYPES = ("float16", "bfloat16")


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
    amp: bool = True  # mixed precision: float16 on CUDA; bfloat16 (amp_dtype) also on CPU
    amp_dtype: str = "float16"  # float16 (CUDA only, with a GradScaler) | bfloat16 (CUDA or CPU, no scaler)
    channels_last: bool = True  # CUDA only: the models' weights channels-last (the batch follows them)
    seed: int = 0
    log_every: int = 20
    # evaluate the student after every eval_every-th epoch and always after the last; epochs in
    # between report losses only. Sweeps need 1 (ASHA and checkpoint ranking read mAP per epoch)
    eval_every: int = 1
    output_dir: str = "runs/train"
    device: str = "auto"
    # where spot-interruption notices come from: "aws" (EC2's metadata service), "off", or the
    # http(s):// address of a service answering EC2's paths; a notice triggers a mid-epoch checkpoint
    spot_notice: str = "aws"

    @property
    def total_epochs(self) -> int:
        return self.epochs if self.epochs is not None else self.epochs_1x * SCHEDULES[self.schedule]

    def evaluates_after(self, epoch: int) -> bool:
        """Whether the student is evaluated after 1-based ``epoch``: every ``eval_every``-th and the last."""
        return epoch % self.eval_every == 0 or epoch >= self.total_epochs

    def validate(self, where: str = "train") -> None:
        check_choice(f"{where}.schedule", self.schedule, tuple(SCHEDULES))
        check_choice(f"{where}.amp_dtype", self.amp_dtype, AMP_DTYPES)
        check_positive(f"{where}.epochs_1x", self.epochs_1x)
        check_positive(f"{where}.epochs", self.epochs)
        for name in ("lr", "warmup_factor"):
            check_positive(f"{where}.{name}", getattr(self, name))
        for name in ("momentum", "weight_decay", "warmup_iters"):
            check_positive(f"{where}.{name}", getattr(self, name), allow_zero=True)
        check_positive(f"{where}.grad_clip", self.grad_clip)
        check_positive(f"{where}.log_every", self.log_every)
        check_positive(f"{where}.eval_every", self.eval_every)
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"{where}.device = {self.device!r}: must be auto, cpu or cuda[:N]")
        if self.spot_notice not in ("aws", "off") and not self.spot_notice.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.spot_notice = {self.spot_notice!r}: must be aws, off or an http(s):// address")


@dataclass
class Config:
    """Everything one training job needs."""

    data: DataConfig = field(default_factory=DataConfig)
    student: DetectorConfig = field(default_factory=DetectorConfig)
    teacher: DetectorConfig | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainSettings = field(default_factory=TrainSettings)

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts in the file form (what :func:`~drkd.config.files.config_from_dict` reads back)."""

        def section(value: Any) -> Any:
            if value is None:
                return None
            return value.to_dict() if isinstance(value, DistillConfig) else dataclasses.asdict(value)

        return {f.name: section(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def copy(self) -> Config:
        return copy.deepcopy(self)

    @property
    def uses_teacher(self) -> bool:
        """The run builds the teacher: it distils, or its student inherits from it."""
        return self.teacher is not None and (
            self.distill.method != NO_DISTILLATION or self.student.init_from_teacher != "none"
        )

    def validate(self) -> Config:
        """Range and consistency checks that types alone do not catch; returns self."""
        self.student.validate("student")
        if self.student.weights is not None:
            raise ConfigError(
                f"student.weights = {self.student.weights!r}: torchvision COCO detector weights are for the "
                "teacher; initialise a student with student.backbone_weights or student.checkpoint"
            )
        if self.teacher is not None:
            self.teacher.validate("teacher")
        self._check_inheriting()
        self.data.validate("data")
        self.train.validate("train")
        self.distill.validate("distill", has_teacher=self.teacher is not None)
        return self

    def _check_inheriting(self) -> None:
        """``student.init_from_teacher`` needs a teacher of the same shapes; only the student inherits."""
        if self.teacher is not None and self.teacher.init_from_teacher != "none":
            raise ConfigError(
                f"teacher.init_from_teacher = {self.teacher.init_from_teacher!r}: only the student inherits; "
                "set student.init_from_teacher"
            )
        part = self.student.init_from_teacher
        if part == "none":
            return
        if self.teacher is None:
            raise ConfigError(f"student.init_from_teacher = {part!r}: needs a teacher section to inherit from")
        problem = inherit_mismatch(self.student, self.teacher, part)
        if problem:
            raise ConfigError(f"student.init_from_teacher = {part!r}: {problem}")


def validate(cfg: Config) -> Config:
    """``cfg.validate()``: every section's checks; returns ``cfg``."""
    return cfg.validate()


def build_config(values: Mapping[str, Any]) -> Config:
    """A Config from plain mappings, type-checked but not yet range-checked."""
    return build_dataclass(Config, values, "")
