"""The embedded default: small detectors on the synthetic dataset, sized for a 2-core CPU.

Teacher RetinaNet/Faster R-CNN on ResNet-18 with a 128-channel FPN trained on a 2× schedule (once,
then cached); students on ResNet-18 with a 64-channel FPN on the 1× schedule of
`STUDENT_EPOCHS_1X` epochs; 160-px images; GroupNorm heads.
"""

from __future__ import annotations

from pathlib import Path

from drkd.config.methods import DEFAULT_METHOD, NO_DISTILLATION, method_specs
from drkd.config.schema import Config, DataConfig, DetectorConfig, DistillConfig, TrainSettings, validate

FRAMEWORK_ARCH = {"one_stage": "retinanet", "two_stage": "fasterrcnn"}
STUDENT_EPOCHS_1X = 12
TEACHER_EPOCHS_1X = 12
# Only a teacher's final mAP is used; evaluating after epochs 8, 16 and 24 instead of all 24 skips
# 21 evaluations (~86 s each for the two-stage teacher here with 1000 test proposals, ~35 s with
# 300) and still shows its progress.
TEACHER_EVAL_EVERY = 8
DEFAULT_DATA_ROOT = "data/synthetic"


def tiny_detector(framework: str, role: str, backbone_checkpoint: str | Path | None = None) -> DetectorConfig:
    """Teacher: ResNet-18 with a 128-channel FPN; student: ResNet-18 with a 64-channel FPN.

    ``backbone_checkpoint``: a crop-pretrained ResNet-18 body (``detector.backbone_checkpoint``,
    :func:`drkd.train.backbone_pretrain.ensure_pretrained_backbone`); default ``None``: random init.

    Anchors are sized for 10–130 px objects. From random initialisation and a few hundred
    iterations, a deeper teacher backbone (ResNet-34/50) learns *slower* than the student and ends
    weaker (measured: R34 1.7 vs R18 3.1 mAP after 12 epochs), so the teacher is the wider model
    trained twice as long instead.
    """
    if framework not in FRAMEWORK_ARCH:
        raise ValueError(f"framework = {framework!r}: must be one of {', '.join(FRAMEWORK_ARCH)}")
    big = role == "teacher"
    return DetectorConfig(
        arch=FRAMEWORK_ARCH[framework],
        backbone="resnet18",
        fpn_channels=128 if big else 64,
        anchor_scale=2.0,
        head_norm="gn",
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        # as in training: on 160 px images with a handful of objects, torchvision's 1000 test
        # proposals made evaluation ~2x slower for +0.35 mAP (two-stage teacher, 100 val images)
        rpn_pre_nms_top_n_test=600,
        rpn_post_nms_top_n_test=300,
        roi_batch_size_per_image=128,
        backbone_checkpoint=str(backbone_checkpoint) if backbone_checkpoint else None,
    )


# 4× the paper's 0.02: trained from scratch for a few hundred iterations, the small detectors need it.
TINY_LR = 0.08


def tiny_data(root: str | Path = DEFAULT_DATA_ROOT) -> DataConfig:
    return DataConfig(root=str(root), min_size=160, max_size=160, batch_size=8)


def tiny_train(schedule: str, epochs_1x: int, seed: int, output_dir: str, eval_every: int = 1) -> TrainSettings:
    """The embedded default's optimisation: lr ``TINY_LR``, 100 warm-up iterations, a log line every 10,
    evaluation after every ``eval_every``-th epoch and the last (default 1: every epoch)."""
    return TrainSettings(
        schedule=schedule,
        epochs_1x=epochs_1x,
        lr=TINY_LR,
        warmup_iters=100,
        seed=seed,
        log_every=10,
        eval_every=eval_every,
        output_dir=output_dir,
    )


def tiny_teacher_config(
    framework: str = "one_stage",
    root: str | Path = DEFAULT_DATA_ROOT,
    seed: int = 0,
    backbone_checkpoint: str | Path | None = None,
) -> Config:
    """Training the embedded default's teacher: a plain (method none) run of the big detector.

    The teacher detector of :func:`tiny_detector` on the 2× schedule (2 × ``TEACHER_EPOCHS_1X``
    epochs), lr ``TINY_LR``, 100 warm-up iterations, evaluated after every ``TEACHER_EVAL_EVERY``-th
    epoch and the last, writing to ``runs/tiny_<framework>_teacher``.

    Args:
        framework: ``"one_stage"`` (RetinaNet, default) or ``"two_stage"`` (Faster R-CNN); anything
            else raises ValueError.
        root: the data root (the synthetic dataset); default ``DEFAULT_DATA_ROOT``.
        seed: ``train.seed``; default 0.
        backbone_checkpoint: a crop-pretrained body to start from; default ``None`` (random init).

    Returns:
        A validated Config.
    """
    return validate(
        Config(
            data=tiny_data(root),
            student=tiny_detector(framework, "teacher", backbone_checkpoint),
            distill=DistillConfig(method=NO_DISTILLATION),
            train=tiny_train("2x", TEACHER_EPOCHS_1X, seed, f"runs/tiny_{framework}_teacher", TEACHER_EVAL_EVERY),
        )
    )


# The peers' paper weights were set for their own loss magnitudes on COCO at lr 0.01-0.02. On the
# embedded default (4x lr) they make the distillation loss 1.7x (FitNet) to 255x (MKD) the detection
# loss at the start of training on the one-stage pair, and 0.6x (MGD) to 590x (MKD) on the two-stage
# pair, where DRKD's paper lambdas give 0.63x and 0.34x; NLD and MKD diverge (NaN within the first
# epoch). So `distill.weight_scale` multiplies each peer's weights by the one factor per framework
# that gives it DRKD's ratio on that framework's pair, keeping their proportions (NLD's
# alpha:beta:gamma). Each method states its factors (MethodParams.embedded_weight_scale), measured by
# bench/loss_balance.py; the balance differs by framework by up to 4x, so one factor cannot serve both.
def tiny_weight_scale() -> dict[str, dict[str, float]]:
    """Method -> framework -> the embedded default's factor on its loss weights (methods that have one)."""
    return {
        spec.name: dict(spec.params.embedded_weight_scale)
        for spec in method_specs()
        if spec.params.embedded_weight_scale
    }


def tiny_student_config(
    framework: str = "one_stage",
    method: str = DEFAULT_METHOD,
    teacher_checkpoint: str | Path | None = None,
    root: str | Path = DEFAULT_DATA_ROOT,
    seed: int = 0,
    default_weights: bool = False,
    backbone_checkpoint: str | Path | None = None,
) -> Config:
    """A student run of the embedded default; `method: none` is the undistilled baseline.

    Peers' weights are scaled by :func:`tiny_weight_scale` unless ``default_weights`` (their paper values).
    The student detector of :func:`tiny_detector` on the 1× schedule (``STUDENT_EPOCHS_1X`` epochs),
    lr ``TINY_LR``, 100 warm-up iterations, writing to ``runs/tiny_<framework>_<method>``.

    Args:
        framework: ``"one_stage"`` (RetinaNet, default) or ``"two_stage"`` (Faster R-CNN); anything
            else raises ValueError.
        method: ``distill.method``, a registered method or ``"none"``; default ``DEFAULT_METHOD`` (drkd).
        teacher_checkpoint: checkpoint of the trained teacher (``teacher.checkpoint``); ``None``
            (default): none, so the teacher would be untrained. Ignored for ``method: none``, which
            gets no teacher section.
        root: the data root (the synthetic dataset); default ``DEFAULT_DATA_ROOT``.
        seed: ``train.seed``; default 0.
        default_weights: keep every method's own loss weights (``weight_scale`` empty); default False.
        backbone_checkpoint: a crop-pretrained body the student starts from; default ``None``
            (random init). The teacher's comes with its checkpoint.

    Returns:
        A validated Config (ConfigError if ``method`` is unknown).
    """
    distill = DistillConfig(method=method, weight_scale={} if default_weights else tiny_weight_scale())
    teacher = None
    if method != NO_DISTILLATION:
        teacher = tiny_detector(framework, "teacher")
        teacher.checkpoint = str(teacher_checkpoint) if teacher_checkpoint else None
    return validate(
        Config(
            data=tiny_data(root),
            student=tiny_detector(framework, "student", backbone_checkpoint),
            teacher=teacher,
            distill=distill,
            train=tiny_train("1x", STUDENT_EPOCHS_1X, seed, f"runs/tiny_{framework}_{method}"),
        )
    )
