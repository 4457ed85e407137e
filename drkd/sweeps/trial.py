"""One Tune trial = one Ray Train DDP job (the function-trainable pattern Ray Train V2 supports)."""

from __future__ import annotations

import os
import posixpath
import time
from typing import Any

import ray
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from drkd.config import Config, ConfigError, apply_overrides, config_from_dict
from drkd.config.sweep_settings import SweepSettings
from drkd.config.trial_labels import LABEL_KEYS
from drkd.sweeps.ray_worker import MID_EPOCH_KEY, SCORE_KEY, train_loop_per_worker

TRAIN_RUNS_DIR = ".train"  # inside the experiment directory; not a trial directory
WORKER_GROUP_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"  # Ray Train V2's setting


class EpochReportCallback(TuneReportCallback):
    """Tune's bridge from Ray Train, less mid-epoch checkpoint reports: Tune, ASHA and the result
    files see one result per epoch; Ray Train still registers the checkpoint to resume from."""

    def after_report(self, run_context, metrics, checkpoint) -> None:  # noqa: ANN001 (Ray's signature)
        if metrics and metrics[0].get(MID_EPOCH_KEY):
            return
        super().after_report(run_context, metrics, checkpoint)


def trial_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """The dotted config overrides in a trial's flat parameter dict.

    None means "not set for this trial" (a search parameter its switches left unsampled, shown
    blank in the live table): the base config's value stays.
    """
    return {k: v for k, v in params.items() if k not in LABEL_KEYS and v is not None}


def check_every_epoch_evaluated(cfg: Config, source: str) -> None:
    """A sweep's trials evaluate after every epoch: ASHA, the live table and Ray Train's checkpoint
    ranking read mAP from each epoch's report.

    Raises:
        ConfigError: ``cfg.train.eval_every`` is not 1, naming ``source``.
    """
    if cfg.train.eval_every != 1:
        raise ConfigError(
            f"{source}: train.eval_every = {cfg.train.eval_every}: a sweep's trials must evaluate every "
            "epoch (ASHA and checkpoint ranking read mAP per epoch); set it to 1"
        )


def scaling_config(settings: SweepSettings) -> ScalingConfig:
    """The Ray Train ScalingConfig of one trial: its DDP workers and what each one holds.

    Args:
        settings: reads ``workers_per_trial`` (number of workers), ``cpus_per_worker``,
            ``gpus_per_worker`` (> 0: ``use_gpu`` and that many GPUs per worker; 0: CPU only) and
            ``placement_strategy``.
    """
    use_gpu = settings.gpus_per_worker > 0
    resources: dict[str, float] = {"CPU": settings.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = settings.gpus_per_worker
    return ScalingConfig(
        num_workers=settings.workers_per_trial,
        use_gpu=use_gpu,
        resources_per_worker=resources,
        placement_strategy=settings.placement_strategy,
    )


def run_trial(params: dict[str, Any], base: dict[str, Any], settings: dict[str, Any], experiment_path: str) -> None:
    """Tune function trainable: build this trial's config and run it as a Ray Train job.

    The Train run is named after the trial id and stored under the experiment, so a trial that
    Tune restores (``--resume``) or retries finds its run again and resumes from its last checkpoint.
    Workers use NCCL with GPUs, else gloo; each epoch's metrics reach Tune through
    ``TuneReportCallback``. Of the per-epoch checkpoints only the best by mAP and the latest stay
    on storage; the workers get ``settings.worker_start_timeout_s`` to start. Must run inside a Tune trial (it reads the trial id from Tune's context).

    Args:
        params: the trial's flat parameters from Tune: dotted config overrides
            (``distill.drkd.lambda_pr``, ...) plus label keys (``LABEL_KEYS``, e.g. ``cell``), which
            are not applied; ``None`` values leave the base config's value (:func:`trial_overrides`).
        base: the sweep's base config as a plain dict (``Config.to_dict()``, paths made absolute).
        settings: the sweep settings as a plain dict (``SweepSettings.to_dict()``).
        experiment_path: the experiment directory (local path or URI); the Train run is stored in
            ``<experiment_path>/.train/trial_<trial id>``.
    """
    sweep = SweepSettings(**settings)
    cfg = apply_overrides(config_from_dict(base, "sweep base config"), trial_overrides(params), "trial parameters")
    check_every_epoch_evaluated(cfg, "trial parameters")
    trial_id = tune.get_context().get_trial_id()
    # Read by the Train controller, to which Ray Train passes it on (its default of 60 s logs a
    # traceback every minute while an autoscaling cluster boots a GPU node for the workers).
    os.environ[WORKER_GROUP_START_TIMEOUT_ENV] = str(sweep.worker_start_timeout_s)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.to_dict(),
            "threads_per_worker": sweep.cpus_per_worker,
            "started_at": time.time(),  # the workers report seconds from here to their first iteration
            "driver_node": ray.get_runtime_context().get_node_id(),  # reported: where the trial's driver ran
        },
        torch_config=TorchConfig(backend="nccl" if sweep.gpus_per_worker > 0 else "gloo"),
        scaling_config=scaling_config(sweep),
        run_config=RunConfig(
            name=f"trial_{trial_id}",
            storage_path=posixpath.join(experiment_path, TRAIN_RUNS_DIR),
            callbacks=[EpochReportCallback()],
            failure_config=FailureConfig(max_failures=sweep.max_failures),
            # the best epoch by mAP and the latest (which Ray Train always keeps, to resume from)
            checkpoint_config=CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=SCORE_KEY, checkpoint_score_order="max"
            ),
        ),
    )
    trainer.fit()
