"""What one distillation training step costs beyond training the student and running the teacher.

    python bench/step_overhead.py [--reps 20] [--warmup 3] [--quick] [--only cpu|gpu]
                                  [--methods drkd,nld,mkd,fitnet]

For each setting, these are timed side by side in one process, interleaved per repetition (plain
student step, teacher forward, one distilled step per method; then again), and their medians are
reported:

* plain student step: one `drkd.train.engine.train_one_epoch` iteration of `distill.method: none`
  (host→device copy, forward, loss, backward, SGD step, LR-scheduler step);
* teacher forward: `drkd.models.feature_taps.teacher_features` (backbone + FPN under no_grad, in the
  autocast the distilled step runs it in) on the transformed batch tensor a distilled step feeds the teacher;
* distilled step, per method (DRKD, NLD, MKD, FitNet by default): the same `train_one_epoch`
  iteration with `distill.method` set to it (student, teacher backbone + FPN, the method's losses
  and their backward),

and ratio = distilled step / (plain student step + teacher forward): how much the method's
modules add over the unavoidable work (1.0 = nothing). Models come from drkd's own builders
(`drkd.train.job.build_models`), optimiser, scheduler and GradScaler are set up as
`run_training` does, and every step goes through `train_one_epoch`, so the timed path is the
training path. Warm-up repetitions are not timed; on CUDA every timing is bracketed by
`torch.cuda.synchronize()`. A few extra, separately run distilled steps time the teacher's and the
distiller's forward inside the step (optional breakdown, `--breakdown-reps`).

Settings:
* cpu: the embedded default (`drkd.config.presets.tiny_student_config`: RetinaNet, ResNet-18 student
  with a 64-channel FPN, ResNet-18 teacher with a 128-channel FPN, GroupNorm heads), a batch of 8
  160-px images of the synthetic dataset, generated into a temporary directory; fp32.
* gpu (when CUDA is available): RetinaNet, ResNet-50 student and ResNeXt-101 64x4d teacher,
  256-channel FPNs, batch 2 of 1333×800 random images with 8 random boxes each (80 classes),
  AMP (autocast + GradScaler) and channels_last. Weights are random (nothing is downloaded);
  the backbones use frozen BatchNorm, as a run from ImageNet weights does.

Timings are per step, in milliseconds, on whatever else the machine is doing: run it on an idle
machine for numbers worth quoting. Use OMP_NUM_THREADS / torch's defaults to choose CPU threads.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from drkd.config import Config, DataConfig, DetectorConfig, DistillConfig, TrainSettings, validate
from drkd.config.methods import method_names
from drkd.config.presets import tiny_student_config
from drkd.data.coco_dataset import collate_detection
from drkd.models.distillation_model import DistillationModel
from drkd.models.feature_taps import teacher_features
from drkd.train.engine import train_one_epoch
from drkd.train.job import build_datasets, build_models, seed_everything
from drkd.train.lr_schedule import build_scheduler, scaled_lr
from drkd.train.precision import Precision, precision_for

Batch = tuple[list[torch.Tensor], list[dict]]
# The scheduler is built for this many iterations per epoch, so every timed step is in warm-up
# (tiny learning rates: randomly initialised models stay finite) and none crosses a decay step.
SCHEDULE_ITERS_PER_EPOCH = 10_000
DEFAULT_METHODS = ("drkd", "nld", "mkd", "fitnet")  # the ones the speed issue holds to ratio <= 1.10


@dataclass
class Setting:
    """One setting: a distillation config (its student is also the plain student; ``distill.method``
    is set per timed method) and a batch."""

    name: str
    cfg: Config
    num_classes: int
    batch: Batch
    device: torch.device


def tiny_cpu_setting(root: Path) -> Setting:
    """The embedded default on the synthetic dataset (a batch's worth of images, generated in `root`)."""
    cfg = tiny_student_config("one_stage", "drkd", teacher_checkpoint=None, root=root)
    cfg.distill.allow_untrained_teacher = True  # a speed benchmark: the teacher's weights do not matter
    cfg.data.synthetic_num_train = cfg.data.batch_size
    cfg.data.synthetic_num_val = 2
    cfg.train.device = "cpu"
    data = build_datasets(cfg)
    batch = collate_detection([data.train[i] for i in range(cfg.data.batch_size)])
    return Setting("tiny R18/FPN-64 ← R18/FPN-128, 160 px, batch 8", cfg, data.num_classes, batch, torch.device("cpu"))


def random_batch(
    batch_size: int, height: int, width: int, boxes_per_image: int, num_classes: int, seed: int = 0
) -> Batch:
    """Images in [0, 1] and boxes of 16–400 px (clipped to the image) with random labels."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch_size):
        images.append(torch.rand(3, height, width, generator=g))
        wh = 16 + torch.rand(boxes_per_image, 2, generator=g) * 384
        xy = torch.rand(boxes_per_image, 2, generator=g) * (torch.tensor([width, height]) - wh).clamp_min(1)
        boxes = torch.cat([xy, xy + wh], dim=1).clamp_max(torch.tensor([width, height] * 2, dtype=torch.float32))
        labels = torch.randint(1, num_classes, (boxes_per_image,), generator=g)
        targets.append({"boxes": boxes, "labels": labels})
    return images, targets


def paper_gpu_setting(device: torch.device, height: int = 800, width: int = 1333, batch_size: int = 2) -> Setting:
    """The paper's RetinaNet pair (R50 student, X101-64x4d teacher, FPN 256) at COCO resolution."""

    def detector(backbone: str) -> DetectorConfig:
        return DetectorConfig(arch="retinanet", backbone=backbone, fpn_channels=256, norm="frozen_bn")

    cfg = validate(
        Config(
            data=DataConfig(
                root="unused",
                synthetic=False,
                min_size=min(height, width),
                max_size=max(height, width),
                batch_size=batch_size,
            ),
            student=detector("resnet50"),
            teacher=detector("resnext101_64x4d"),
            # a speed benchmark: the teacher's weights do not matter
            distill=DistillConfig(method="drkd", allow_untrained_teacher=True),
            train=TrainSettings(amp=True, channels_last=True, device=str(device)),
        )
    )
    num_classes = 81  # COCO's 80 categories + background, as drkd's CocoDetection numbers them
    batch = random_batch(batch_size, height, width, boxes_per_image=8, num_classes=num_classes)
    name = f"paper R50/FPN-256 ← X101-64x4d/FPN-256, {width}×{height}, batch {batch_size}, AMP"
    return Setting(name, cfg, num_classes, batch, device)


@dataclass
class Trainer:
    """A model with its optimiser, scheduler and scaler as `run_training` sets them up (one process)."""

    model: DistillationModel
    cfg: Config
    device: torch.device
    optimizer: torch.optim.Optimizer = field(init=False)
    scheduler: torch.optim.lr_scheduler.LRScheduler = field(init=False)
    precision: Precision = field(init=False)
    scaler: torch.amp.GradScaler | None = field(init=False)
    skipped_steps: int = 0  # AMP steps the GradScaler skipped (inf/NaN gradients): cheaper than real ones

    def __post_init__(self) -> None:
        t, cuda = self.cfg.train, self.device.type == "cuda"
        fmt = torch.channels_last if t.channels_last and cuda else torch.preserve_format
        # DistillationModel's `.to()` reaches its teacher too, though the teacher is no submodule
        self.model = self.model.to(self.device, memory_format=fmt)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        lr = scaled_lr(t.lr, self.cfg.data.batch_size)
        self.optimizer = torch.optim.SGD(trainable, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)
        self.scheduler = build_scheduler(
            self.optimizer, t.total_epochs, SCHEDULE_ITERS_PER_EPOCH, t.warmup_iters, t.warmup_factor
        )
        self.precision = precision_for(t, self.device)
        self.scaler = self.precision.grad_scaler()

    def step(self, batch: Batch) -> None:
        """One training iteration, through the engine's own loop."""
        scale = self.scaler.get_scale() if self.scaler is not None else None
        train_one_epoch(
            self.model,
            self.optimizer,
            self.scheduler,
            [batch],
            epoch=1,
            device=self.device,
            precision=self.precision,
            scaler=self.scaler,
            grad_clip=self.cfg.train.grad_clip,
        )
        if self.scaler is not None and self.scaler.get_scale() < scale:
            self.skipped_steps += 1


def teacher_forward(teacher: nn.Module, batch_tensor: torch.Tensor, precision: Precision) -> list[torch.Tensor]:
    """The teacher's part of a distilled step, under the autocast the training step runs it in."""
    with precision.autocast():
        return teacher_features(teacher, batch_tensor)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


class ForwardTimer:
    """Synchronised wall time of a module's forward calls, through hooks (for the breakdown only)."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []
        self._start = 0.0
        self._handles = [module.register_forward_pre_hook(self._before), module.register_forward_hook(self._after)]

    def _before(self, *_: object) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def _after(self, *_: object) -> None:
        synchronize(self.device)
        self.times.append((time.perf_counter() - self._start) * 1e3)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


@dataclass
class Result:
    setting: Setting
    device_name: str
    student_ms: list[float]
    teacher_ms: list[float]
    method_ms: dict[str, list[float]]  # distilled step times, per method
    breakdown: dict[str, dict[str, float]]  # per method: medians of its instrumented steps
    skipped_steps: int

    def ratio(self, method: str) -> float:
        """Median distilled step / (median plain student step + median teacher forward)."""
        floor = statistics.median(self.student_ms) + statistics.median(self.teacher_ms)
        return statistics.median(self.method_ms[method]) / floor


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu, threads: {torch.get_num_threads()}"


def with_method(cfg: Config, method: str) -> Config:
    """``cfg`` with ``distill.method`` set to ``method`` (``none``: no teacher), validated."""
    out = cfg.copy()
    out.distill.method = method
    if method == "none":
        out.teacher = None
    return validate(out)


def breakdown_of(trainer: Trainer, batch: Batch, device: torch.device, reps: int) -> dict[str, float]:
    """Medians over ``reps`` extra, instrumented steps: the step, and the teacher's and distiller's forward in it."""
    assert trainer.model.teacher is not None and trainer.model.distiller is not None
    timers = {
        "teacher forward in step": ForwardTimer(trainer.model.teacher.backbone, device),
        "distiller forward in step": ForwardTimer(trainer.model.distiller, device),
    }
    steps = [time_ms(lambda: trainer.step(batch), device) for _ in range(reps)]
    for timer in timers.values():
        timer.remove()
    return {
        "step (instrumented)": statistics.median(steps),
        **{k: statistics.median(t.times) for k, t in timers.items()},
    }


def measure(setting: Setting, methods: list[str], reps: int, warmup: int, breakdown_reps: int) -> Result:
    """Time the plain student step, the teacher forward and each method's step, interleaved per repetition."""
    device = setting.device
    trainers: dict[str, Trainer] = {}
    for method in ["none", *methods]:
        cfg = with_method(setting.cfg, method)
        seed_everything(cfg.train.seed)  # the same student (and teacher) initialisation for every method
        trainers[method] = Trainer(build_models(cfg, setting.num_classes), cfg, device)
    plain, first = trainers.pop("none"), trainers[methods[0]]
    teacher = first.model.teacher
    assert teacher is not None

    # The tensor a distilled step hands the teacher: the student's transform of the batch.
    images = [img.to(device) for img in setting.batch[0]]
    with torch.no_grad():
        batch_tensor = first.model.student.transform(images)[0].tensors

    student_ms: list[float] = []
    teacher_ms: list[float] = []
    method_ms: dict[str, list[float]] = {m: [] for m in methods}
    for rep in range(warmup + reps):
        times = {
            "none": time_ms(lambda: plain.step(setting.batch), device),
            "teacher": time_ms(lambda: teacher_forward(teacher, batch_tensor, first.precision), device),
        }
        for method, trainer in trainers.items():
            times[method] = time_ms(lambda: trainer.step(setting.batch), device)  # noqa: B023 (called at once)
        if rep == warmup - 1:
            for trainer in (plain, *trainers.values()):
                trainer.skipped_steps = 0
        if rep >= warmup:
            student_ms.append(times["none"])
            teacher_ms.append(times["teacher"])
            for method in methods:
                method_ms[method].append(times[method])

    skipped = plain.skipped_steps + sum(t.skipped_steps for t in trainers.values())
    breakdown = (
        {m: breakdown_of(t, setting.batch, device, breakdown_reps) for m, t in trainers.items()}
        if breakdown_reps > 0
        else {}
    )
    return Result(setting, device_name(device), student_ms, teacher_ms, method_ms, breakdown, skipped)


def print_table(results: list[Result], reps: int, warmup: int) -> None:
    print(f"\nMedians of {reps} interleaved repetitions (after {warmup} untimed warm-up repetitions).\n")
    print(
        "| setting | device | method | plain student step (ms) | teacher forward (ms) | distilled step (ms) "
        "| ratio distilled / (student + teacher) |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for r in results:
        s, t = statistics.median(r.student_ms), statistics.median(r.teacher_ms)
        for method, times in r.method_ms.items():
            d = statistics.median(times)
            print(
                f"| {r.setting.name} | {r.device_name} | {method} | {s:.1f} | {t:.1f} | {d:.1f} | {r.ratio(method):.3f} |"
            )
    for r in results:
        timed = {"student": r.student_ms, "teacher": r.teacher_ms, **r.method_ms}
        spread = ", ".join(f"{name} {min(x):.1f}–{max(x):.1f}" for name, x in timed.items())
        print(f"\n{r.setting.name}: range (ms) {spread}")
        for method, parts in r.breakdown.items():
            print(
                f"  {method} breakdown (separate instrumented steps, medians): "
                + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items())
            )
        if r.skipped_steps:
            print(f"  note: the GradScaler skipped {r.skipped_steps} timed steps (inf gradients); raise --warmup")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions of each measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    parser.add_argument(
        "--breakdown-reps", type=int, default=3, help="instrumented DRKD steps for the breakdown (0: none)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 repetitions, 1 warm-up, 1 breakdown step: checks that it runs"
    )
    parser.add_argument("--only", choices=("cpu", "gpu"), help="run one setting only")
    parser.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help="comma-separated distillation methods to time"
    )
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(method_names()))
    if not methods or unknown:
        parser.error(
            f"--methods {args.methods!r}: unknown {unknown or 'none given'}; choose from {', '.join(method_names())}"
        )
    if args.quick:
        args.reps, args.warmup, args.breakdown_reps = 3, 1, 1
    if args.reps < 1 or args.warmup < 0 or args.breakdown_reps < 0:
        parser.error("--reps must be >= 1, --warmup and --breakdown-reps >= 0")
    if args.only == "gpu" and not torch.cuda.is_available():
        parser.error("--only gpu: CUDA is not available")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("drkd.train").setLevel(logging.ERROR)  # "distilling from an untrained teacher" is intended

    results: list[Result] = []
    if args.only != "gpu":
        with tempfile.TemporaryDirectory(prefix="drkd_step_overhead_") as tmp:
            setting = tiny_cpu_setting(Path(tmp))
        print(f"measuring: {setting.name} on cpu", flush=True)
        results.append(measure(setting, methods, args.reps, args.warmup, args.breakdown_reps))
    if args.only != "cpu" and torch.cuda.is_available():
        setting = paper_gpu_setting(torch.device("cuda"))
        print(f"measuring: {setting.name} on cuda", flush=True)
        results.append(measure(setting, methods, args.reps, args.warmup, args.breakdown_reps))
    elif args.only is None:
        print("CUDA not available: skipping the GPU setting")
    print_table(results, args.reps, args.warmup)


if __name__ == "__main__":
    main()
