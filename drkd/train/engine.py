"""One epoch of training, and prediction for COCO evaluation (torchvision references' split)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from drkd.data.coco_eval import detections_to_coco
from drkd.train.precision import Precision

log = logging.getLogger("drkd.train.engine")


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite: training stops rather than corrupting the weights."""


@dataclass
class EpochProgress:
    """How far an epoch got: iterations done and the sums of their loss terms (what a mid-epoch
    checkpoint keeps so that the resumed epoch reports the same means as an uninterrupted one)."""

    iterations: int = 0
    sums: dict[str, float] = field(default_factory=dict)


def _to_device(images: list[torch.Tensor], targets: list[dict], device: torch.device):
    # The images are (3, H, W), which have no channels-last layout; a channels-last model's first
    # convolution makes the detector's padded batch channels-last itself.
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [
        {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
    ]
    return images, targets


def check_finite(terms: dict[str, float], epoch: int, iteration: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the first NaN or infinite term (and where it happened).

    Args:
        terms: loss terms by name, Python floats (or scalar tensors, each read with a device sync).
        epoch, iteration: where training is, for the error message only.
    """
    for name, value in terms.items():
        if not math.isfinite(float(value)):
            raise NonFiniteLossError(f"{name} = {float(value)} at epoch {epoch}, iteration {iteration}: stopping")


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loader: Iterable,
    *,
    epoch: int,
    device: torch.device,
    precision: Precision | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
    log_every: int = 20,
    on_log: Callable[[str], None] | None = None,
    any_rank: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: EpochProgress | None = None,
    checkpoint_requested: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[EpochProgress], None] | None = None,
    seed_iteration: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train for one pass over `loader`; returns the mean of every loss term, and the last lr.

    `model(images, targets)` returns (loss, terms) as :class:`DistillationModel` does (DDP-wrapped or not).
    Per iteration: forward, backward, the terms to the host in one transfer and :func:`check_finite`
    (so a NaN stops training before the optimiser step; with ``any_rank`` every DDP rank stops at
    the same iteration, none stepping on gradients averaged with a NaN), optional gradient clipping,
    optimizer step, then ``scheduler.step()`` (the schedule is per iteration). When
    ``checkpoint_requested()`` is true on any rank (agreed in the same collective as the NaN check),
    every rank calls ``on_checkpoint`` after that step, then trains on.

    Args:
        model: the trainable module; set to train mode here.
        optimizer: optimiser of its trainable parameters; its first param group's lr is logged and returned.
        scheduler: per-iteration LR scheduler (:func:`~drkd.train.lr_schedule.build_scheduler`).
        loader: yields (images, targets): lists of (3, H_i, W_i) tensors and torchvision target dicts.
        epoch: the epoch number, for logs and error messages only.
        device: where images and the targets' tensors are moved.
        precision: the forward passes' autocast dtype (:func:`~drkd.train.precision.precision_for`);
            ``None`` (default): float32.
        scaler: a ``GradScaler`` scaling the loss before backward (float16 autocast needs one);
            ``None`` (default): no scaling.
        grad_clip: maximum total gradient norm over the optimiser's parameters; ``None`` (default) or 0: no clipping.
        log_every: call ``on_log`` at iterations 0, log_every, 2·log_every, ... and the last; default 20.
        on_log: receives one progress line (loss, detection loss, lr, it/s); ``None`` (default): no logging.
        any_rank: ``flag -> flag`` reduced with max over every rank (one element, on ``device``), so that
            all ranks agree that some rank saw a non-finite term or a checkpoint request; ``None``
            (default): this process only.
        progress: the part of this epoch trained before a mid-epoch checkpoint, when resuming from
            one (``loader`` then yields only the remaining batches); ``None`` (default): a whole epoch.
        checkpoint_requested: polled once per iteration (a spot-interruption notice); ``None``
            (default): never.
        on_checkpoint: called with the epoch's progress after the step at which a request was
            agreed; it saves a mid-epoch checkpoint (and acknowledges the request).
        seed_iteration: called with the (0-based) iteration before its forward pass, to seed the
            global RNG from where training is, so a run resumed at any iteration draws what an
            uninterrupted one did; ``None`` (default): the RNG runs on.

    Returns:
        ``{term: mean over the epoch's iterations}`` for every key of ``terms`` (``loss_total``,
        ``loss_det``, ...) plus ``lr``, the first param group's learning rate after the last scheduler step.

    Raises:
        NonFiniteLossError: a term became NaN or infinite.
        ValueError: the loader yielded no batch.
    """
    model.train()
    done = progress or EpochProgress()
    sums, n = dict(done.sums), done.iterations
    start = time.perf_counter()
    num_iters = n + len(loader) if hasattr(loader, "__len__") else None
    params = [p for g in optimizer.param_groups for p in g["params"]]
    precision = precision or Precision(device.type)
    for it, (images, targets) in enumerate(loader, start=n):
        images, targets = _to_device(images, targets, device)
        if seed_iteration is not None:
            seed_iteration(it)
        with precision.autocast():
            loss, terms = model(images, targets)
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        # One host sync per step, once backward is queued and before any weight changes: every term
        # to the host in one transfer, checked, and reused for the epoch means and the log line.
        stacked = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
        requested = checkpoint_requested is not None and checkpoint_requested()
        if any_rank is None:
            values = dict(zip(terms, stacked.tolist()))
        else:  # a two-element collective, read back in the same transfer as the terms
            flags = torch.stack([(~torch.isfinite(stacked)).any().float(), stacked.new_tensor(float(requested))])
            *host, elsewhere, requested = torch.cat([stacked, any_rank(flags)]).tolist()
            values = dict(zip(terms, host))
            if elsewhere:
                check_finite(values, epoch, it)  # names this rank's own term when it has one
                raise NonFiniteLossError(f"a loss term on another rank is not finite at epoch {epoch}, iteration {it}")
        check_finite(values, epoch, it)
        if scaler is not None:
            if grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
        scheduler.step()
        n += 1
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        if requested and on_checkpoint is not None:
            on_checkpoint(EpochProgress(n, dict(sums)))
        if on_log is not None and (it % log_every == 0 or it + 1 == num_iters):
            rate = (n - done.iterations) / (time.perf_counter() - start)
            on_log(
                f"epoch {epoch} [{it + 1}/{num_iters or '?'}] loss {values['loss_total']:.4f} "
                f"det {values['loss_det']:.4f} lr {optimizer.param_groups[0]['lr']:.5f} {rate:.2f} it/s"
            )
    if n == 0:
        raise ValueError("the training loader yielded no batches (empty dataset or train_limit too small?)")
    means = {k: v / n for k, v in sums.items()}
    means["lr"] = optimizer.param_groups[0]["lr"]
    return means


@torch.no_grad()
def predict(
    detector: nn.Module,
    loader: Iterable,
    device: torch.device,
    label_to_cat_id: dict[int, int],
    precision: Precision | None = None,
) -> list[dict]:
    """COCO-format detections for this process's share of the images (JSON-able, to be gathered).

    Runs ``detector`` in eval mode under no_grad (and autocast when ``precision`` says so).

    Args:
        detector: the torchvision detector to evaluate (the bare student, not the DistillationModel).
        loader: yields (images, targets); each target needs its ``image_id``.
        device: where the images are moved.
        label_to_cat_id: contiguous label -> COCO category id (``CocoDetection.label_to_cat_id``).
        precision: the forward passes' autocast dtype; ``None`` (default): float32.

    Returns:
        :func:`~drkd.data.coco_eval.detections_to_coco` dicts ``{image_id, category_id, bbox, score}``
        for every detection, in loader order.
    """
    detector.eval()
    detections: list[dict] = []
    precision = precision or Precision(device.type)
    for images, targets in loader:
        images, _ = _to_device(images, [], device)
        with precision.autocast():
            outputs = detector(images)
        outputs = [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in o.items()} for o in outputs]
        detections.extend(detections_to_coco(outputs, [int(t["image_id"]) for t in targets], label_to_cat_id))
    return detections
