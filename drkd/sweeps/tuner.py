"""Ray Tune experiments: an Optuna search or an explicit grid, each trial a Ray Train DDP job."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import CLIReporter
from ray.tune.schedulers import FIFOScheduler

from drkd.analysis.experiment_store import EXPERIMENT_FILE
from drkd.config import Config, ConfigError, apply_overrides, save_config
from drkd.config.storage import absolute_location, default_results_dir, is_uri
from drkd.config.sweep_settings import SweepSettings
from drkd.sweeps.grid_searcher import ExplicitGridSearcher
from drkd.sweeps.optuna_storage import open_optuna_storage, redacted_url
from drkd.sweeps.ray_instance import join_ray, start_private_ray
from drkd.sweeps.search_objective import METRIC, MODE, asha_scheduler
from drkd.sweeps.trial import check_every_epoch_evaluated, run_trial, trial_overrides
from drkd.sweeps.trial_progress import TrialProgress
from drkd.train.preflight import check_inputs

log = logging.getLogger("drkd.sweeps")


@dataclass
class SweepPlan:
    """What to run: a base config plus either a search space or an explicit list of trials.

    Args:
        kind: the experiment kind, recorded for the analysis: ``lambda_search``, ``table1`` ..
            ``table6``, ``teacher`` or ``baseline``; also the default experiment name.
        base: the config every trial starts from.
        settings: the ``sweep:`` section (trial count, scaling, storage, ...).
        space: an Optuna define-by-run function ``(trial) -> {dotted key: value} | None`` for a
            search (Optuna TPE + ASHA); ``None`` (default): run ``grid``.
        grid: the explicit trials (FIFO, each run to the end), one flat dict of dotted overrides
            (plus label keys such as ``cell``) each; default empty.

    ``name`` is ``settings.name`` or ``kind``, ``storage`` ``settings.storage_path`` or the results
    directory, ``path`` the experiment directory ``<storage>/<name>``.
    """

    kind: str  # lambda_search | table1..table6 | teacher | baseline (the analysis reads it)
    base: Config
    settings: SweepSettings
    space: Callable[[Any], dict[str, Any] | None] | None = None  # Optuna define-by-run
    grid: list[dict[str, Any]] = field(default_factory=list)  # flat dotted trial params

    @property
    def is_search(self) -> bool:
        """An Optuna search (trials sampled from ``space``) rather than an explicit grid."""
        return self.space is not None

    @property
    def name(self) -> str:
        return self.settings.name or self.kind

    @property
    def storage(self) -> str:
        return results_root(self.settings)

    @property
    def path(self) -> str:
        return posixpath.join(self.storage, self.name)


def results_root(settings: SweepSettings) -> str:
    """Where a sweep's experiments go: ``sweep.storage_path``, else the local results directory."""
    return settings.storage_path or str(default_results_dir().resolve())


def absolute_paths(cfg: Config) -> Config:
    """Tune runs trials in their own directories: make every local file path in the config
    absolute (the data root, each detector's checkpoint and crop-pretrained backbone); URIs stay."""
    cfg = cfg.copy()
    cfg.data.root = absolute_location(cfg.data.root)
    for det in (cfg.student, cfg.teacher):
        if det is None:
            continue
        if det.checkpoint:
            det.checkpoint = absolute_location(det.checkpoint)
        if det.backbone_checkpoint:
            det.backbone_checkpoint = absolute_location(det.backbone_checkpoint)
    return cfg


def init_ray(settings: SweepSettings, verbose: bool = False) -> None:
    """Join the running cluster (RAY_ADDRESS, or one started with `ray start`/`ray up` on this
    node); else, or where ``RAY_ADDRESS=local``, start a private local Ray sized for the trials
    (each trial's driver holds 1 CPU besides its workers' CPUs) that advertises
    ``settings.driver_resource``.

    Args:
        settings: the sweep settings (trial sizes, driver resource).
        verbose: stream every Ray worker's and actor's output (the Train workers' logs, pycocotools,
            Ray Train's report lines) to this terminal; default False: it stays in Ray's log files
            (``<session>/logs``, printed), and the terminal shows the live table and one line per
            trial per epoch (:class:`~drkd.sweeps.trial_progress.TrialProgress`).
    """
    if ray.is_initialized():
        return
    quiet = {"log_to_driver": verbose}
    address = os.environ.get("RAY_ADDRESS")
    if address != "local":  # "local": a private instance, never another run's cluster
        try:
            join_ray(address or "auto", **quiet)
            _say_where_logs_are(verbose)
            return
        except ConnectionError:
            if address:
                raise
    needed = settings.max_concurrent_trials * (1 + settings.workers_per_trial * settings.cpus_per_worker)
    start_private_ray(num_cpus=max(needed, os.cpu_count() or 1), resources={settings.driver_resource: 1}, **quiet)
    _say_where_logs_are(verbose)


def _say_where_logs_are(verbose: bool) -> None:
    if not verbose:
        log.info(
            "the trials' worker output goes to Ray's log files (/tmp/ray/session_latest/logs on each node); "
            "--verbose shows it here"
        )


DRIVER_SHARE = 0.001  # of the driver resource per trial: a node advertising 1 hosts up to 1000 drivers


def driver_resources(settings: SweepSettings) -> dict[str, float]:
    """What each trial's driver (the Tune trainable, beside which Ray Train puts its controller)
    holds: 1 CPU, plus a sliver of ``settings.driver_resource`` where some node advertises it, so
    drivers live on the head (or a dedicated driver node), never on a spot GPU node that may vanish.
    A cluster without that resource (an older one) gets a warning, not trials that wait forever."""
    if ray.cluster_resources().get(settings.driver_resource, 0) > 0:
        return {"CPU": 1, settings.driver_resource: DRIVER_SHARE}
    log.warning(
        "no node advertises the custom resource %r (sweep.driver_resource): trial drivers may land on any "
        "node, spot GPU nodes included; give the head `resources: {%r: 1}` (cluster.yaml does)",
        settings.driver_resource,
        settings.driver_resource,
    )
    return {"CPU": 1}


def _write_experiment_file(plan: SweepPlan, command: str) -> None:
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(plan.path) if is_uri(plan.path) else (pafs.LocalFileSystem(), plan.path)
    fs.create_dir(path, recursive=True)
    target = posixpath.join(path, EXPERIMENT_FILE)
    meta = {
        "kind": plan.kind,
        "name": plan.name,
        "metric": METRIC,
        "mode": MODE,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "settings": {**plan.settings.to_dict(), "optuna_storage": _stored_url(plan.settings.optuna_storage)},
        # the config each trial's overrides apply to: the tables need it to tell apart runs whose
        # overrides match but whose base configs did not (e.g. another distill.weight_scale)
        "base_config": plan.base.to_dict(),
    }
    with fs.open_output_stream(target) as f:
        f.write(json.dumps(meta, indent=1, sort_keys=True).encode())


def _reporter(plan: SweepPlan) -> CLIReporter:
    if plan.grid:
        short = {"cell": "cell"} | ({"train.seed": "seed"} if all("train.seed" in t for t in plan.grid) else {})
    else:
        short = {k: k.split(".")[-1] for k in getattr(plan.space, "columns", ())} or None
    # Tune looks every column up in every trial's config: only keys all trials have.
    return CLIReporter(
        metric_columns={"epoch": "epoch", "mAP": "mAP", "AP_S": "AP_S", "loss_total": "loss"},
        parameter_columns=short,
        max_report_frequency=30,
        sort_by_metric=True,
    )


def _searcher(plan: SweepPlan):
    if not plan.is_search:
        return ExplicitGridSearcher(plan.grid, METRIC, MODE)
    import optuna

    from drkd.sweeps.optuna_searcher import PrunedAwareOptunaSearch, startup_trials

    url = plan.settings.optuna_storage or f"sqlite:///{Path(plan.path) / 'optuna.db'}"
    if url.startswith("sqlite:///") and is_uri(plan.path):
        raise ConfigError(f"sweep.optuna_storage: needed (e.g. a PostgreSQL URL) when storage_path is {plan.storage!r}")
    storage = open_optuna_storage(url)
    if plan.name in optuna.study.get_all_study_names(storage):
        # a new experiment must not silently add its trials to an old study in a shared database
        raise ConfigError(
            f"sweep.optuna_storage: a study named {plan.name!r} already exists in {redacted_url(url)}: "
            "pass --resume to continue that experiment, or --name for a new one"
        )
    random_start = startup_trials(plan.settings.num_trials, plan.settings.random_trials)
    return PrunedAwareOptunaSearch(
        space=plan.space,
        metric=METRIC,
        mode=MODE,
        sampler=optuna.samplers.TPESampler(seed=plan.settings.seed, n_startup_trials=random_start),
        storage=storage,
        study_name=plan.name,
        total_epochs=plan.base.train.total_epochs,
    )


def _scheduler(plan: SweepPlan):
    if not plan.is_search:
        return FIFOScheduler()
    return asha_scheduler(plan.base.train.total_epochs, plan.settings.grace_period, plan.settings.reduction_factor)


def _check_trial_config(cfg: Config, where: str) -> None:
    """What a trial config must satisfy before any trial starts, errors naming ``where``."""
    check_every_epoch_evaluated(cfg, where)
    check_inputs(cfg, where)


def build_tuner(plan: SweepPlan, resume: bool = False) -> tune.Tuner:
    """A new Tuner for `plan`, or the restored one with `resume` (finished trials are not rerun).

    Each trial runs :func:`~drkd.sweeps.trial.run_trial` (its driver holds :func:`driver_resources`,
    its Train workers their own); all maximise ``mAP``. A search samples ``settings.num_trials`` trials with Optuna's
    TPE (seeded by ``settings.seed``, studies stored in ``settings.optuna_storage`` or SQLite in the
    experiment directory) under an ASHA scheduler over epochs; a grid runs each of its trials once, FIFO.

    Args:
        plan: what to run; its base config's file paths are made absolute for the trials.
        resume: restore the experiment at ``plan.path``, rerunning unfinished and errored trials
            (default False).

    Raises:
        ConfigError: ``resume`` without an experiment at ``plan.path``, a new run where one exists,
            or SQLite Optuna storage with a remote ``storage_path``.
    """
    base = absolute_paths(plan.base)
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial, base=base.to_dict(), settings=plan.settings.to_dict(), experiment_path=plan.path
        ),
        driver_resources(plan.settings),
    )
    exists = tune.Tuner.can_restore(plan.path)
    if resume:
        if not exists:
            raise ConfigError(f"--resume: no experiment to resume at {plan.path}")
        log.info("resuming %s", plan.path)
        return tune.Tuner.restore(plan.path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    if exists:
        raise ConfigError(f"experiment {plan.path} exists: pass --resume to continue it, or --name for a new one")
    num_samples = plan.settings.num_trials if plan.is_search else len(plan.grid)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=_searcher(plan),
            scheduler=_scheduler(plan),
            num_samples=num_samples,
            max_concurrent_trials=plan.settings.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=plan.name,
            storage_path=plan.storage,
            progress_reporter=_reporter(plan),
            verbose=1,  # the live trial table, not every result dict
            callbacks=[TrialProgress(plan.base.train.total_epochs)],
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )


def run_sweep(
    plan: SweepPlan, resume: bool = False, command: str | None = None, verbose: bool = False
) -> tune.ResultGrid:
    """Run (or resume) the experiment; returns Tune's ResultGrid.

    Validates ``plan.settings`` and every grid cell's overrides before any trial starts, joins or
    starts Ray (:func:`init_ray`), writes the experiment file (new runs only), then fits the
    :func:`build_tuner` Tuner.

    Args:
        plan: what to run.
        resume: continue the existing experiment at ``plan.path`` (default False).
        command: the command line recorded in the experiment file; ``None`` (default): this process's.
        verbose: the workers' output on this terminal too (:func:`init_ray`); default False.

    Raises:
        ConfigError: invalid settings or grid cell, nothing to run, or see :func:`build_tuner`.
    """
    plan.settings.validate()
    if not plan.is_search and not plan.grid:
        raise ConfigError(f"{plan.kind}: nothing to run (no search space and an empty grid)")
    for trial in plan.grid:  # fail before any trial starts, naming the bad cell
        where = f"{plan.kind} cell {trial.get('cell', trial)}"
        _check_trial_config(apply_overrides(plan.base, trial_overrides(trial), where), where)
    if plan.is_search:
        _check_trial_config(plan.base, f"{plan.kind} base config")
    init_ray(plan.settings, verbose)
    if not resume:
        _write_experiment_file(plan, command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    tuner = build_tuner(plan, resume)
    log.info("experiment directory: %s", plan.path)
    # The classic reporter prints the live table with our columns; Ray's newer output ignores it.
    with _env_default("RAY_AIR_NEW_OUTPUT", "0"):
        return tuner.fit()


@contextlib.contextmanager
def _env_default(name: str, value: str) -> Iterator[None]:
    """``$name`` set to ``value`` (unless the user set it) for the duration, then as it was."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


def write_best_config(plan: SweepPlan, results: tune.ResultGrid) -> tuple[dict[str, Any], Path]:
    """Best trial by last-epoch mAP among those that ran all epochs (diverged ones never count); its
    full config as a YAML file that `drkd train --config` accepts, written into the experiment directory."""
    scored = [r for r in results if r.metrics and METRIC in r.metrics and not r.metrics.get("diverged")]
    finished = [r for r in scored if r.metrics.get("epoch") == plan.base.train.total_epochs]
    pool = finished or scored
    if not pool:
        raise RuntimeError(f"no trial of {plan.path} reported {METRIC} without diverging; see the trial errors above")
    best = max(pool, key=lambda r: r.metrics[METRIC])
    cfg = apply_overrides(absolute_paths(plan.base), trial_overrides(best.config), "best trial")
    cfg.train.output_dir = str(Path("runs") / f"{plan.name}_best")
    # with remote storage, the file a user passes to `drkd train` goes to the local results directory
    local = default_results_dir() / plan.name if is_uri(plan.path) else Path(plan.path)
    path = save_config(cfg, local / "best_config.yaml")
    return best.metrics | {"config": best.config}, path


def startup_overhead(results: tune.ResultGrid) -> tuple[float, float]:
    """(seconds of trial time not spent in epochs, total trial seconds): what starting and
    reporting the Ray Train jobs cost, from every trial's reported history."""
    overhead = total = 0.0
    for result in results:
        frame = result.metrics_dataframe
        if frame is None or frame.empty or "epoch_time_s" not in frame:
            continue
        trial_total = float(frame["time_total_s"].iloc[-1])
        total += trial_total
        overhead += trial_total - float(frame["epoch_time_s"].sum())
    return overhead, total


def seconds_to_first_iteration(results: tune.ResultGrid) -> dict[str, float]:
    """Each trial's seconds from its start to its first training iteration (``startup_s`` of its
    first report), by trial id; trials that never reported are left out."""
    out = {}
    for result in results:
        frame = result.metrics_dataframe
        if frame is None or frame.empty or "startup_s" not in frame:
            continue
        first = frame["startup_s"].dropna()
        if not first.empty:
            out[str(result.metrics.get("trial_id", result.path))] = float(first.iloc[0])
    return out


def epoch_histories(results: tune.ResultGrid) -> dict[str, dict[int, float]]:
    """Each trial's mAP by epoch, by trial id, from its reported history (trials that never
    reported are left out)."""
    out = {}
    for result in results:
        frame = result.metrics_dataframe
        if frame is None or frame.empty or "epoch" not in frame or METRIC not in frame:
            continue
        rows = frame[["epoch", METRIC]].dropna()
        out[str(result.metrics.get("trial_id", result.path))] = {
            int(e): float(m) for e, m in zip(rows["epoch"], rows[METRIC])
        }
    return out


def _stored_url(url: str | None) -> str | None:
    """The Optuna database URL as the experiment file records it: without its password."""
    return redacted_url(url) if url else None
