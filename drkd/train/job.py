"""One training job from a config: the function `drkd train` and every Ray Train worker call."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from drkd.config import Config, ConfigError
from drkd.config.methods import NO_DISTILLATION, method_spec
from drkd.data.coco_dataset import CocoDetection, collate_detection
from drkd.data.coco_eval import METRIC_KEYS, coco_metrics
from drkd.data.seeded_samples import EpochSeededSamples, SkippingSampler, sample_seed
from drkd.data.synthetic import ensure_synthetic_coco
from drkd.data.transforms import build_transforms
from drkd.distill.registry import build_distiller
from drkd.models.detectors import build_detector
from drkd.models.distillation_model import DistillationModel
from drkd.models.feature_taps import fpn_channels
from drkd.models.inherit import inherit_from_teacher
from drkd.train.engine import EpochProgress, NonFiniteLossError, predict, train_one_epoch
from drkd.train.lr_schedule import build_scheduler, scaled_lr
from drkd.train.precision import precision_for
from drkd.train.preflight import check_data_files, check_teacher
from drkd.train.run_context import LocalContext, RunContext
from drkd.train.spot_notice import start_spot_notice
from drkd.train.teacher_eval import teacher_metrics

log = logging.getLogger("drkd.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_step(seed: int, epoch: int, iteration: int, rank: int) -> None:
    """Seed torch's global RNG (the detectors' own sampling, e.g. Faster R-CNN's proposal sampler)
    from where training is, before every iteration, so that a run resumed at any iteration (from a
    mid-epoch checkpoint) draws exactly what the uninterrupted run drew."""
    torch.manual_seed(sample_seed(seed * 65_537 + rank, epoch, iteration))


def prepare_data(cfg: Config, splits: Sequence[str] = ("train", "val")) -> Path:
    """The data root; the embedded synthetic dataset is generated there if missing.

    Args:
        cfg: a validated Config (its ``data`` section).
        splits: the splits whose files must exist (:func:`~drkd.train.preflight.check_data_files`);
            default both.

    Raises:
        ConfigError: a file of those splits is missing.
    """
    root = Path(cfg.data.root)
    d = cfg.data
    if d.synthetic:
        ensure_synthetic_coco(
            root,
            seed=d.synthetic_seed,
            num_train=d.synthetic_num_train,
            num_val=d.synthetic_num_val,
            image_size=d.synthetic_image_size,
        )
    check_data_files(cfg, splits=splits)
    return root


@dataclass
class Datasets:
    train: CocoDetection
    val: CocoDetection

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


def build_datasets(cfg: Config) -> Datasets:
    """The training and validation :class:`~drkd.data.coco_dataset.CocoDetection` sets of ``cfg.data``.

    Generates the synthetic dataset first if configured and missing (:func:`prepare_data`). Training
    samples get a random horizontal flip (``data.hflip_prob``), validation samples no transform.

    Args:
        cfg: a validated Config; reads the ``data`` section (root, image dirs, annotation files).

    Returns:
        ``Datasets(train, val)``; ``num_classes`` counts the background.

    Raises:
        ConfigError: an annotation file is missing, or train and val list different categories.
        DatasetError: an annotation file or image is malformed (:class:`~drkd.data.coco_dataset.CocoDetection`).
    """
    root = prepare_data(cfg)
    d = cfg.data
    train = CocoDetection(
        root / d.train_images, root / d.train_annotations, build_transforms(True, d.hflip_prob), train=True
    )
    val = _validation_set(cfg, root)
    if train.cat_id_to_label != val.cat_id_to_label:
        raise ConfigError(f"data: train and val annotation files list different categories ({root})")
    return Datasets(train, val)


def _validation_set(cfg: Config, root: Path) -> CocoDetection:
    d = cfg.data
    return CocoDetection(root / d.val_images, root / d.val_annotations, build_transforms(False), train=False)


def build_validation_set(cfg: Config) -> CocoDetection:
    """The validation set of ``cfg.data`` alone (no transform): what evaluating a trained model needs,
    without the training split's files.

    Generates the synthetic dataset first if configured and missing.

    Raises:
        ConfigError: the validation annotation file or image directory is missing.
        DatasetError: the annotation file or an image is malformed.
    """
    return _validation_set(cfg, prepare_data(cfg, splits=("val",)))


def _limit(ds: CocoDetection, n: int | None) -> Any:
    return Subset(ds, range(min(n, len(ds)))) if n else ds


def validation_loader(
    val: CocoDetection, cfg: Config, rank: int = 0, world_size: int = 1
) -> tuple[DataLoader, list[int]]:
    """This process's share of the validation images (every world_size-th one), and the ids of all
    evaluated images, for scoring on rank 0.

    Args:
        val: the validation set (``build_datasets(cfg).val`` or :func:`build_validation_set`).
        cfg: reads ``data.val_limit`` (evaluate only the first N images), ``data.batch_size`` and
            ``data.loader_workers``.
        rank: this process's rank; it gets images rank, rank + world_size, ... (default 0).
        world_size: number of processes (default 1).

    Returns:
        (loader yielding (images, targets) lists, in order, unshuffled; the image ids of all evaluated
        images across the ranks).
    """
    val_ds = _limit(val, cfg.data.val_limit)
    loader = DataLoader(
        Subset(val_ds, range(rank, len(val_ds), world_size)),
        batch_size=cfg.data.batch_size,
        collate_fn=collate_detection,
        num_workers=cfg.data.loader_workers,
    )
    return loader, [val.image_ids[i] for i in range(len(val_ds))]


def build_models(cfg: Config, num_classes: int, category_names: Sequence[str] | None = None) -> DistillationModel:
    """Student (seeded), frozen teacher and the configured distiller, as one trainable module.

    Distillers see only the teacher's backbone + FPN features (the
    :class:`~drkd.distill.base.Distiller` interface; :class:`~drkd.models.distillation_model.DistillationModel`
    never runs the teacher's heads), so a torchvision COCO teacher (``teacher.weights``) needs no
    class mapping for any method (drkd, fitnet, nld, mkd): by default it keeps its 91
    COCO class outputs (label = COCO category id). ``category_names`` (the dataset's, in label order)
    cuts them down to the dataset's categories, matched by name (``ConfigError`` when one is not a
    COCO category), for whoever wants the teacher's predictions in the student's labels.

    ``student.init_from_teacher`` (``neck`` | ``neck_head``) copies the trained teacher's FPN (and
    heads) into the seeded student before training (:func:`~drkd.models.inherit.inherit_from_teacher`);
    with ``distill.method: none`` the teacher is then dropped (inheriting alone, the control row).
    """
    student = build_detector(cfg.student, num_classes, cfg.data)
    if not cfg.uses_teacher:
        return DistillationModel(student)
    assert cfg.teacher is not None  # validated
    check_teacher(cfg)
    teacher = build_detector(cfg.teacher, num_classes, cfg.data, category_names=category_names)
    inherit_from_teacher(student, teacher, cfg.student.init_from_teacher)
    if cfg.distill.method == NO_DISTILLATION:  # inheriting alone: the teacher's part is a starting point
        return DistillationModel(student)
    # the FPN's own levels plus its extra ones: P6, P7 (one-stage) or the max-pooled P6 (Faster R-CNN)
    num_levels = len(student.backbone.fpn.layer_blocks) + (1 if cfg.student.two_stage else 2)
    distiller = build_distiller(cfg, fpn_channels(teacher), fpn_channels(student), num_levels)
    return DistillationModel(student, distiller, teacher)


def _models_for_training(cfg: Config, data: Datasets, ctx: RunContext) -> tuple[DistillationModel, bool]:
    """The models, and whether the teacher can be scored on this validation set: a torchvision COCO
    teacher (``teacher.weights``) predicts COCO's categories, so its classes are cut to the dataset's
    by name; where the dataset's names are not COCO's it still teaches (features only) but is not scored."""
    if cfg.teacher is None or not cfg.teacher.weights or not cfg.uses_teacher:
        return build_models(cfg, data.num_classes), True
    try:
        return build_models(cfg, data.num_classes, data.val.category_names), True
    except ConfigError as err:
        ctx.log(f"the teacher is not evaluated on this dataset: {err}")
        return build_models(cfg, data.num_classes), False


def training_state(
    model: DistillationModel,
    optimizer,
    scheduler,
    scaler,
    epoch: int,
    cfg: Config,
    num_classes: int,
    partial: tuple[int, EpochProgress] | None = None,
    categories: Sequence[Sequence[int | str]] = (),
) -> dict[str, Any]:
    """Everything needed to resume exactly: weights, optimiser, schedule, scaler, epoch, config.

    Args:
        model: the (unwrapped) DistillationModel; its student and distiller state dicts are saved.
        optimizer, scheduler: their state dicts are saved.
        scaler: the ``GradScaler``, or ``None`` (saved as ``{}``).
        epoch: the 0-based index of the epoch just finished; a resumed run starts at ``epoch + 1``.
        cfg: the run's Config, saved as a plain dict (``cfg.to_dict()``).
        num_classes: classes including the background, to rebuild the detectors.
        partial: for a mid-epoch checkpoint, ``(epoch in progress, its EpochProgress)``; ``epoch`` is
            then the one before it. ``None`` (default): the checkpoint of a finished epoch.
        categories: ``[category id, name]`` of labels 1..C (the training set's ``categories``), so
            that an evaluation can check its annotation file means the same classes; default none.

    Returns:
        A dict with keys ``num_classes``, ``categories``, ``student``, ``distiller`` (``{}`` without one), ``optimizer``,
        ``scheduler``, ``scaler``, ``epoch``, ``config`` and ``partial`` (``None``, or
        ``{"epoch", "iterations", "sums"}``).
    """
    return {
        "num_classes": num_classes,
        "categories": [list(c) for c in categories],
        "student": model.student.state_dict(),
        "distiller": model.distiller.state_dict() if model.distiller is not None else {},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "epoch": epoch,
        "config": cfg.to_dict(),
        "partial": None
        if partial is None
        else {"epoch": partial[0], "iterations": partial[1].iterations, "sums": partial[1].sums},
    }


def diverged_metrics(epoch: int, reason: str, teacher_scores: dict[str, float], seconds: float) -> dict[str, Any]:
    """The final report of a run whose loss became NaN or infinite in (1-based) ``epoch``.

    Every COCO AP key is 0.0, so a search ranks the configuration last and ASHA and Optuna take it
    as the worst outcome, and ``diverged`` is 1.0 with the error as ``diverged_reason``, so the
    tables leave the trial out and say why.
    """
    return {
        "epoch": epoch,
        **dict.fromkeys(METRIC_KEYS, 0.0),
        **teacher_scores,
        "diverged": 1.0,
        "diverged_reason": reason,
        "epoch_time_s": seconds,
    }


def run_training(cfg: Config, ctx: RunContext | None = None) -> dict[str, Any]:
    """Train (and distil) for cfg.train.total_epochs, reporting every epoch.

    Returns the last epoch's metrics. Resumes from `ctx.restore()` when it gives a checkpoint;
    the run then continues exactly as if it had not stopped. SGD on every trainable parameter
    (student and distiller), lr scaled by :func:`~drkd.train.lr_schedule.scaled_lr` to the total
    batch, the per-iteration schedule of :func:`~drkd.train.lr_schedule.build_scheduler`; mixed
    precision and channels-last only on CUDA. After each epoch the student is evaluated on the
    validation set (COCO bbox AP) if ``cfg.train.evaluates_after`` that epoch (every
    ``train.eval_every``-th and the last) and ``ctx.report(metrics, training_state(...))`` is called.

    Args:
        cfg: a validated Config (``data``, ``student``, ``teacher``, ``distill``, ``train``).
        ctx: where the job runs (rank, device, collectives, checkpoints); ``None`` (default): a
            :class:`~drkd.train.run_context.LocalContext` writing to ``cfg.train.output_dir`` on
            ``cfg.train.device``, which does not resume.

    Returns:
        The last epoch's metrics: ``epoch`` (1-based), the COCO AP keys of
        :data:`~drkd.data.coco_eval.METRIC_KEYS` (in percent; absent from the reports of epochs
        not evaluated, never from the last), for a distillation run the teacher's as
        ``teacher_<key>`` (evaluated once, cached: :mod:`drkd.train.teacher_eval`), the epoch's mean
        loss terms and ``lr`` (:func:`~drkd.train.engine.train_one_epoch`) and ``epoch_time_s``; the first
        epoch this process trains also has ``startup_s``, the seconds from ``ctx.started_at`` (the
        trial's start in a sweep, else this call) to its first iteration. ``{}`` when the restored
        checkpoint had already finished every epoch. A run whose loss became NaN or infinite ends
        early with :func:`diverged_metrics` (reported without a checkpoint), not an exception.

    Raises:
        ConfigError: missing data files, or a batch size larger than a worker's share of the training set.
    """
    ctx = ctx or LocalContext(cfg.train.output_dir, cfg.train.device)
    started = ctx.started_at if ctx.started_at is not None else time.time()
    t = cfg.train
    seed_everything(t.seed)
    if cfg.data.synthetic:  # rank 0 generates the data if it has to; the others wait, then read it
        data = build_datasets(cfg) if ctx.rank == 0 else None
        ctx.barrier()
        data = data or build_datasets(cfg)
    else:  # every rank reads its own copy at once
        data = build_datasets(cfg)
    train_ds = EpochSeededSamples(_limit(data.train, cfg.data.train_limit), t.seed)
    sampler = SkippingSampler(
        DistributedSampler(
            train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=t.seed, drop_last=True
        )
    )
    loader = DataLoader(
        train_ds,
        batch_size=cfg.data.batch_size,
        sampler=sampler,
        collate_fn=collate_detection,
        num_workers=cfg.data.loader_workers,
        drop_last=True,
        # the workers' base seed from the loader's own generator, not the global RNG (whose
        # draws are seed_step's); augmentation is seeded per sample (EpochSeededSamples)
        generator=torch.Generator().manual_seed(t.seed),
    )
    val_loader, val_ids = validation_loader(data.val, cfg, ctx.rank, ctx.world_size)
    if len(loader) == 0:
        raise ConfigError(
            f"data.batch_size = {cfg.data.batch_size}: larger than the {len(train_ds) // ctx.world_size} training images per worker"
        )

    model, teacher_evaluable = _models_for_training(cfg, data, ctx)
    model = model.to(ctx.device)
    cuda = ctx.device.type == "cuda"
    if t.channels_last and cuda:
        model = model.to(memory_format=torch.channels_last)
    trainable = [p for p in model.parameters() if p.requires_grad]
    lr = scaled_lr(t.lr, cfg.data.batch_size * ctx.world_size)
    optimizer = torch.optim.SGD(trainable, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)
    total_epochs = t.total_epochs
    scheduler = build_scheduler(optimizer, total_epochs, len(loader), t.warmup_iters, t.warmup_factor)
    precision = precision_for(t, ctx.device)
    scaler = precision.grad_scaler()

    start_epoch, progress = 0, None
    state = ctx.restore()
    if state is not None:
        model.student.load_state_dict(state["student"])
        if model.distiller is not None:
            model.distiller.load_state_dict(state["distiller"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        if state.get("partial"):  # a mid-epoch (spot-interruption) checkpoint
            progress = EpochProgress(int(state["partial"]["iterations"]), dict(state["partial"]["sums"]))
            ctx.log(f"resuming epoch {start_epoch + 1} at iteration {progress.iterations + 1}")
    needs_search = cfg.distill.method != NO_DISTILLATION and method_spec(cfg.distill.method).ddp_find_unused_parameters
    wrapped = ctx.wrap(model, find_unused_parameters=needs_search)

    teacher_scores: dict[str, float] = {}
    if model.teacher is not None and teacher_evaluable:
        teacher_scores = teacher_metrics(
            cfg,
            model.teacher,
            val_loader,
            val_ids,
            data.val.coco,
            data.val.label_to_cat_id,
            ctx,
            precision,
        )
    ctx.log(
        f"training {cfg.student.arch}/{cfg.student.backbone} with distill.method={cfg.distill.method} "
        f"for {total_epochs} epochs ({len(loader)} iterations/epoch, lr {lr:.4g}) on {ctx.device} x{ctx.world_size} in {precision.name}"
    )
    startup: dict[str, Any] = {"startup_s": time.time() - started}  # reported once per attempt
    if progress is not None:
        startup["resumed_iteration"] = progress.iterations
    ctx.log(f"starting to train {startup['startup_s']:.1f} s after the run started")
    notice = start_spot_notice(t.spot_notice, log.warning)

    def checkpoint_mid_epoch(epoch: int, done: EpochProgress) -> None:
        # the notice gave about two minutes: save now, then train on until the machine goes
        ctx.checkpoint(
            training_state(
                model,
                optimizer,
                scheduler,
                scaler,
                epoch - 1,
                cfg,
                data.num_classes,
                (epoch, done),
                data.train.categories,
            )
        )
        if notice is not None:
            notice.acknowledge()

    metrics: dict[str, Any] = {}
    try:
        for epoch in range(start_epoch, total_epochs):
            start = time.perf_counter()
            skip = progress.iterations if progress is not None else 0
            sampler.set_epoch(epoch, skip=skip * cfg.data.batch_size)
            train_ds.set_epoch(epoch)
            try:
                losses = train_one_epoch(
                    wrapped,
                    optimizer,
                    scheduler,
                    loader,
                    epoch=epoch + 1,
                    device=ctx.device,
                    precision=precision,
                    scaler=scaler,
                    grad_clip=t.grad_clip,
                    log_every=t.log_every,
                    on_log=ctx.log,
                    any_rank=ctx.any_rank if ctx.world_size > 1 else None,
                    progress=progress,
                    checkpoint_requested=(lambda: notice.pending) if notice is not None else None,
                    on_checkpoint=lambda done, epoch=epoch: checkpoint_mid_epoch(epoch, done),
                    seed_iteration=lambda it, epoch=epoch: seed_step(t.seed, epoch, it, ctx.rank),
                )
            except NonFiniteLossError as err:
                # Every rank agreed (any_rank): end the run with a final report rather than an error,
                # which Ray Train and Tune would retry although a rerun diverges the same way.
                ctx.log(f"diverged: {err}")
                metrics = diverged_metrics(epoch + 1, str(err), teacher_scores, time.perf_counter() - start)
                ctx.report(metrics, None)
                return metrics
            progress = None
            scores: dict[str, float] = {}
            if t.evaluates_after(epoch + 1):
                detections = ctx.gather(
                    predict(model.student, val_loader, ctx.device, data.val.label_to_cat_id, precision)
                )
                scores = ctx.broadcast(coco_metrics(data.val.coco, detections, val_ids) if ctx.rank == 0 else None)
            metrics = {
                "epoch": epoch + 1,
                **scores,
                **teacher_scores,
                **losses,
                "epoch_time_s": time.perf_counter() - start,
                **startup,
            }
            startup = {}
            ctx.report(
                metrics,
                training_state(
                    model, optimizer, scheduler, scaler, epoch, cfg, data.num_classes, categories=data.train.categories
                ),
            )
    finally:
        if notice is not None:
            notice.stop()
    return metrics
