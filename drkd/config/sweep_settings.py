"""Sweep settings: how many trials, how each trial is scaled, where results go.

A sweep config file is a training config (sections data/student/teacher/distill/train) with one
more section, `sweep`, read into :class:`SweepSettings`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from drkd.config.coercion import build_dataclass
from drkd.config.errors import ConfigError
from drkd.config.files import config_from_dict, read_config_file
from drkd.config.presets import FRAMEWORK_ARCH
from drkd.config.schema import Config

PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray placement groups


@dataclass
class SweepSettings:
    """Ray Tune / Ray Train settings of a sweep (the `sweep:` section)."""

    name: str | None = None  # experiment directory name; default: the sweep kind
    storage_path: str | None = None  # local dir, NFS/EFS mount or s3://...; default: the results dir
    num_trials: int = 8
    max_concurrent_trials: int = 1
    workers_per_trial: int = 2  # DDP workers (Ray Train) per trial
    cpus_per_worker: int = 1
    gpus_per_worker: float = 0  # 0: CPU training with gloo; >0: use_gpu with NCCL
    placement_strategy: str = "PACK"  # PACK | SPREAD | STRICT_PACK | STRICT_SPREAD
    max_failures: int = 2  # worker failures a trial recovers from (from its last checkpoint)
    seed: int = 0  # Optuna TPE seed
    random_trials: int | None = None  # TPE's random start; None: a third of num_trials, within 2..10
    grace_period: int = 1  # ASHA: epochs every trial runs before it may be stopped
    reduction_factor: int = 2  # ASHA
    optuna_storage: str | None = None  # SQLAlchemy URL; default: sqlite in the experiment directory
    worker_start_timeout_s: float = 600.0  # how long a trial waits for its workers (a GPU node booting)
    driver_resource: str = "drkd_driver"  # custom resource of the nodes that host trial drivers
    seeds: int = 1  # ablations: repeats of each cell
    teacher_checkpoints: dict[str, str] = field(default_factory=dict)  # ablations: one_stage/two_stage -> checkpoint

    def validate(self, source: str = "sweep") -> SweepSettings:
        for name in (
            "num_trials",
            "max_concurrent_trials",
            "workers_per_trial",
            "cpus_per_worker",
            "grace_period",
            "seeds",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{source}: sweep.{name} = {getattr(self, name)}: must be >= 1")
        if self.random_trials is not None and not 1 <= self.random_trials <= self.num_trials:
            raise ConfigError(
                f"{source}: sweep.random_trials = {self.random_trials}: must be in 1..sweep.num_trials ({self.num_trials})"
            )
        if self.seed < 0:
            raise ConfigError(f"{source}: sweep.seed = {self.seed}: must be >= 0 (it seeds Optuna's sampler)")
        if self.gpus_per_worker < 0:
            raise ConfigError(f"{source}: sweep.gpus_per_worker = {self.gpus_per_worker}: must be >= 0")
        if self.max_failures < -1:
            raise ConfigError(f"{source}: sweep.max_failures = {self.max_failures}: must be >= -1 (-1: retry forever)")
        if self.worker_start_timeout_s <= 0:
            raise ConfigError(f"{source}: sweep.worker_start_timeout_s = {self.worker_start_timeout_s}: must be > 0")
        if self.reduction_factor < 2:
            raise ConfigError(f"{source}: sweep.reduction_factor = {self.reduction_factor}: must be >= 2")
        for key in self.teacher_checkpoints:
            if key not in FRAMEWORK_ARCH:
                raise ConfigError(
                    f"{source}: sweep.teacher_checkpoints.{key}: unknown framework ({', '.join(FRAMEWORK_ARCH)})"
                )
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise ConfigError(
                f"{source}: sweep.placement_strategy = {self.placement_strategy!r}: must be one of {', '.join(PLACEMENT_STRATEGIES)}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_sweep_config(path: str | Path) -> tuple[Config, SweepSettings]:
    """Read a sweep config file: the training sections and the `sweep` section, both validated."""
    values = read_config_file(path)
    sweep_values = values.pop("sweep", None) or {}
    cfg = config_from_dict(values, str(path))
    try:
        settings = build_dataclass(SweepSettings, sweep_values, "sweep")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return cfg, settings.validate(str(path))
