"""``--smoke-test``: the same sweep config with only its sizes cut, to check a setup in minutes.

Everything else stays as configured (data paths and format, detectors, methods, the search space
or grid, storage, failure handling), so a smoke test that passes on a cluster has read the data,
found the teachers, started DDP trials on the workers and written results where the real run will.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from drkd.config import Config
from drkd.config.sweep_settings import SweepSettings

SMOKE_DIR = "smoke_test"  # under the storage path: smoke results and teachers never mix with real ones
SMOKE_ITERATIONS = 2  # training iterations per worker and epoch
SMOKE_VAL_IMAGES = 8
SMOKE_MIN_SIZE, SMOKE_MAX_SIZE = 128, 192
SMOKE_TRIALS = 2
SMOKE_WORKERS = 2


def smoke_test(
    base: Config, settings: SweepSettings, storage: str, cluster_gpus: float, cluster_cpus: float = float("inf")
) -> tuple[Config, SweepSettings, list[str]]:
    """The smoke-test version of a sweep: returns the new base config and settings, and one line per
    change (``field: old -> new``) to print before launching.

    Cuts images per split (``SMOKE_ITERATIONS`` iterations per worker, ``SMOKE_VAL_IMAGES`` validation
    images), the image size (``SMOKE_MIN_SIZE``/``SMOKE_MAX_SIZE``), epochs (a 1x schedule of 1 epoch),
    trials (``SMOKE_TRIALS``, 1 seed), workers per trial (at most ``SMOKE_WORKERS``, 1 CPU each, at most
    2 trials at once) and moves the results to ``<storage>/smoke_test``.

    Args:
        base: the sweep's base config (not modified).
        settings: its ``sweep:`` section (not modified).
        storage: the results root the real run uses (``SweepPlan.storage``).
        cluster_gpus: GPUs the Ray cluster has now; with none, workers train on CPU (gloo), so the
            smoke test still runs where the configured GPUs are absent (a laptop, CI, a head node).
        cluster_cpus: CPUs the Ray cluster has now; a trial's workers and its driver (1 CPU each)
            must fit in them, so a 2-CPU node runs 1 worker per trial; default: no limit.
    """
    cfg, new = base.copy(), SweepSettings(**settings.to_dict())
    changes: list[str] = []
    change = _changer(changes)
    fits = max(1, int(min(cluster_cpus, 1e6)) - 1)  # workers of 1 CPU beside the trial's driver
    change(new, "workers_per_trial", min(settings.workers_per_trial, SMOKE_WORKERS, fits), "sweep.workers_per_trial")
    change(new, "cpus_per_worker", 1, "sweep.cpus_per_worker")
    if cluster_gpus <= 0:
        change(new, "gpus_per_worker", 0, "sweep.gpus_per_worker (no GPU in the cluster)")
    change(new, "max_concurrent_trials", min(settings.max_concurrent_trials, 2), "sweep.max_concurrent_trials")
    change(new, "num_trials", min(settings.num_trials, SMOKE_TRIALS), "sweep.num_trials")
    if new.random_trials is not None:
        change(new, "random_trials", min(new.random_trials, new.num_trials), "sweep.random_trials")
    change(new, "seeds", 1, "sweep.seeds")
    change(new, "grace_period", 1, "sweep.grace_period")
    change(new, "storage_path", posixpath.join(storage, SMOKE_DIR), "sweep.storage_path")
    changes += smoke_sizes(cfg, new.workers_per_trial)
    return cfg, new.validate("--smoke-test"), changes


def smoke_sizes(cfg: Config, workers: int = 1) -> list[str]:
    """Cut ``cfg``'s sizes in place as a smoke test does (images per split, image size, a 1-epoch
    schedule of a few iterations) and return one ``field: old -> new`` line per change.

    The few iterations are the start of the real schedule, so they run at the rate its warm-up
    starts from (``train.lr`` × ``train.warmup_factor``) with no ramp: a warm-up squeezed into two
    iterations would reach the full rate by the second epoch and, from random or barely trained
    weights on small images, can turn a loss into NaN (seen in the COCO rehearsal's Table 1 grid),
    which says nothing about the setup under test.

    Args:
        cfg: the config to cut (modified).
        workers: processes that share each training iteration's batch (``train_limit`` gives each
            ``SMOKE_ITERATIONS`` iterations).
    """
    changes: list[str] = []
    change = _changer(changes)
    d = cfg.data
    change(d, "train_limit", d.batch_size * workers * SMOKE_ITERATIONS, "data.train_limit")
    change(d, "val_limit", min(d.val_limit or SMOKE_VAL_IMAGES, SMOKE_VAL_IMAGES), "data.val_limit")
    change(d, "min_size", min(d.min_size, SMOKE_MIN_SIZE), "data.min_size")
    change(d, "max_size", min(d.max_size, SMOKE_MAX_SIZE), "data.max_size")
    t = cfg.train
    change(t, "epochs_1x", 1, "train.epochs_1x")
    change(t, "epochs", None, "train.epochs")
    change(t, "schedule", "1x", "train.schedule")
    change(
        t, "lr", t.lr * t.warmup_factor, "train.lr (the warm-up's starting rate: a smoke test runs first iterations)"
    )
    change(t, "warmup_iters", 0, "train.warmup_iters")
    return changes


def _changer(changes: list[str]) -> Callable[[object, str, object, str], None]:
    """``change(obj, field, value, label)``: set the field, recording ``label: old -> new`` if it changed."""

    def change(obj: object, field: str, value: object, label: str) -> None:
        old = getattr(obj, field)
        if old != value:
            setattr(obj, field, value)
            changes.append(f"{label}: {old} -> {value}")

    return change
