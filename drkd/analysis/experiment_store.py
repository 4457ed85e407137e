"""Find finished (or interrupted) Ray Tune experiments and read them into pandas, without Ray.

An experiment is a Tune experiment directory that our sweeps marked with ``drkd_experiment.json``.
Every trial's full report history is read from its ``result.json`` (one JSON object per
``tune.report``), so nothing depends on a summary that may be stale after a crash. Local paths and
storage URIs (``s3://``, ``gs://``, ``file://``) go through the same ``pyarrow.fs`` code.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow.fs as pafs

from drkd.config.storage import is_uri

log = logging.getLogger(__name__)

EXPERIMENT_FILE = "drkd_experiment.json"
RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
CONFIG_PREFIX = "config/"
# Trial statuses, as the tables and the search summary use them.
COMPLETED, EARLY_STOPPED, INCOMPLETE, ERRORED = "completed", "early-stopped", "incomplete", "errored"
DIVERGED = "diverged"  # the loss became NaN or infinite; the run ended with a final report

Pick = Literal["last", "best"]


@dataclass(frozen=True)
class ExperimentInfo:
    """One experiment: its ``drkd_experiment.json`` plus where it was read from."""

    name: str
    kind: str
    location: str
    metric: str = "mAP"
    mode: str = "max"
    command: str = ""
    created: str = ""
    # the config the trials' overrides apply to (file form); None where the sweep did not record it
    base_config: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)


@dataclass
class ExperimentData:
    """Everything read from a set of experiment directories.

    ``reports`` has one row per ``tune.report`` and ``trials`` one row per trial; both carry
    ``experiment``, ``kind``, ``trial_id``, ``trial_dir`` and the trial config as ``config/<key>``
    columns. ``skipped`` and ``warnings`` are human-readable lines naming what was left out and why.
    """

    experiments: list[ExperimentInfo]
    reports: pd.DataFrame
    trials: pd.DataFrame
    read: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def experiment(self, name: str) -> ExperimentInfo:
        return next(e for e in self.experiments if e.name == name)


class NoExperimentsFound(RuntimeError):
    """Raised when none of the searched locations holds a single experiment."""


# --- filesystem helpers (one code path for local paths and URIs) ---------------------------------


def _resolve(location: str | Path) -> tuple[pafs.FileSystem, str]:
    text = str(location)
    if is_uri(text):
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def _children(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    return sorted(infos, key=lambda info: info.path)


def _is_file(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def _read_text(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as stream:
        return stream.read().decode("utf-8", errors="replace")


def _child_location(base: str, child_path: str) -> str:
    """A sub-directory's location in the caller's notation: a URI stays a URI."""
    if is_uri(base):
        return base.rstrip("/") + "/" + posixpath.basename(child_path)
    return child_path


def _name(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


# --- discovery ------------------------------------------------------------------------------------


def find_experiments(locations: Sequence[str | Path], ignore: Iterable[str | Path] = ()) -> tuple[list[str], list[str]]:
    """Expand ``locations`` into experiment locations; return ``(experiments, skipped)``.

    A location that is an experiment is taken as is; one whose sub-directories are experiments
    (a results root) is expanded to them, and its other sub-directories are reported as skipped;
    anything else is reported as "not an experiment".
    """
    ignored = {_resolve(p)[1] for p in ignore}
    found: list[str] = []
    skipped: list[str] = []
    for location in locations:
        fs, path = _resolve(location)
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.Directory:
            skipped.append(f"{location}: not found or not a directory")
            continue
        if _is_file(fs, posixpath.join(path, EXPERIMENT_FILE)):
            found.append(str(location))
            continue
        subdirs = [
            c
            for c in _children(fs, path)
            if c.type == pafs.FileType.Directory and c.path not in ignored and not c.base_name.startswith(".")
        ]
        marked = {c.path for c in subdirs if _is_file(fs, posixpath.join(c.path, EXPERIMENT_FILE))}
        if not marked:
            skipped.append(f"{_name(path)}: not an experiment (no {EXPERIMENT_FILE})")
            continue
        for child in subdirs:
            if child.path in marked:
                found.append(_child_location(str(location), child.path))
            else:
                skipped.append(f"{child.base_name}: not an experiment (no {EXPERIMENT_FILE})")
    return found, skipped


# --- reading ---------------------------------------------------------------------------------------


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value if not isinstance(value, (list, tuple)) else json.dumps(value)
    return flat


@dataclass
class _Accumulator:
    experiments: list[ExperimentInfo] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    read: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _trial_states(fs: pafs.FileSystem, path: str) -> dict[str, dict[str, str]]:
    """Status of each trial from Tune's newest ``experiment_state-*.json``, keyed by trial dir.

    Best effort: a missing or unreadable state (e.g. a crash before Tune saved it) yields {}.
    """
    states = [
        c.path
        for c in _children(fs, path)
        if c.base_name.startswith("experiment_state") and c.base_name.endswith(".json")
    ]
    if not states:
        return {}
    try:
        data = json.loads(_read_text(fs, states[-1]))  # names end in a sortable timestamp
        out = {}
        for entry in data.get("trial_data", []):
            trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
            out[str(trial.get("relative_logdir"))] = {
                "status": str(trial.get("status", "")),
                "trial_id": str(trial.get("trial_id", "")),
            }
        return out
    except (ValueError, KeyError, IndexError, TypeError, OSError) as exc:
        log.warning("%s: unreadable experiment state (%s); trial statuses unknown", states[-1], exc)
        return {}


def _parse_results(text: str, where: str, warnings: list[str]) -> list[dict[str, Any]]:
    records = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            what = "truncated last line" if number == len(lines) else f"unreadable line {number}"
            message = f"{where}: {what} skipped (interrupted write?)"
            log.warning(message)
            warnings.append(message)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _status(last_epoch: int, target: Any, tune_status: str, errored: bool, diverged: bool = False) -> str:
    if diverged:
        return DIVERGED
    if target is None or pd.isna(target) or last_epoch >= int(target):
        return COMPLETED
    if errored or tune_status == "ERROR":
        return ERRORED
    if tune_status == "TERMINATED":  # stopped by the scheduler (ASHA) before its last epoch
        return EARLY_STOPPED
    return INCOMPLETE  # still running, or the experiment was interrupted


def _read_experiment(location: str, data: _Accumulator) -> None:
    fs, path = _resolve(location)
    exp_name = _name(path)
    try:
        meta = json.loads(_read_text(fs, posixpath.join(path, EXPERIMENT_FILE)))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as exc:
        data.skipped.append(f"{exp_name}: unreadable {EXPERIMENT_FILE} ({exc})")
        return
    info = ExperimentInfo(
        name=str(meta.get("name") or exp_name),
        kind=str(meta.get("kind", "unknown")),
        location=location,
        metric=str(meta.get("metric", "mAP")),
        mode=str(meta.get("mode", "max")),
        command=str(meta.get("command", "")),
        created=str(meta.get("created", "")),
        base_config=meta["base_config"] if isinstance(meta.get("base_config"), Mapping) else None,
    )
    if info.name in {e.name for e in data.experiments}:
        data.skipped.append(f"{exp_name}: a second experiment named {info.name!r}; skipped")
        return
    states = _trial_states(fs, path)
    children = _children(fs, path)
    trial_dirs = [
        c
        for c in children
        if c.type == pafs.FileType.Directory
        and (_is_file(fs, posixpath.join(c.path, PARAMS_FILE)) or _is_file(fs, posixpath.join(c.path, RESULT_FILE)))
    ]
    present = {c.base_name for c in trial_dirs}
    for logdir, state in sorted(states.items()):
        if logdir not in present:
            data.skipped.append(
                f"{info.name}/{state['trial_id'] or logdir}: no results yet "
                f"(Tune status {state['status'] or 'unknown'})"
            )
    n_read = 0
    for trial_dir in trial_dirs:
        n_read += _read_trial(fs, trial_dir, info, states.get(trial_dir.base_name, {}), data)
    if not trial_dirs and not states:
        data.skipped.append(f"{info.name}: experiment has no trials yet")
    data.experiments.append(info)
    data.read.append(f"{info.name} ({info.kind}): {n_read} trial(s)")


def _read_trial(
    fs: pafs.FileSystem, trial_dir: pafs.FileInfo, info: ExperimentInfo, state: Mapping[str, str], data: _Accumulator
) -> int:
    where = f"{info.name}/{trial_dir.base_name}"
    result_path = posixpath.join(trial_dir.path, RESULT_FILE)
    records = (
        _parse_results(_read_text(fs, result_path), f"{where}/{RESULT_FILE}", data.warnings)
        if _is_file(fs, result_path)
        else []
    )
    if not records:
        data.skipped.append(f"{where}: no results yet")
        return 0
    config: dict[str, Any] = {}
    params_path = posixpath.join(trial_dir.path, PARAMS_FILE)
    if _is_file(fs, params_path):
        try:
            config = json.loads(_read_text(fs, params_path))
        except ValueError:
            data.warnings.append(f"{where}/{PARAMS_FILE}: unreadable; config taken from {RESULT_FILE}")
    if not config:
        config = records[-1].get("config") or {}
    flat_config = {CONFIG_PREFIX + k: v for k, v in sorted(_flatten(config).items())}
    trial_id = str(records[-1].get("trial_id") or state.get("trial_id") or trial_dir.base_name)
    ids = {"experiment": info.name, "kind": info.kind, "trial_id": trial_id, "trial_dir": trial_dir.base_name}
    for record in records:
        row = {k: v for k, v in record.items() if k != "config"}
        data.reports.append({**ids, **row, **flat_config})
    epochs = [int(r["epoch"]) for r in records if isinstance(r.get("epoch"), (int, float))]
    last_epoch = max(epochs) if epochs else len(records)
    target = config.get("train.epochs")
    errored = any(_is_file(fs, posixpath.join(trial_dir.path, f)) for f in ("error.txt", "error.pkl"))
    diverged = any(bool(r.get("diverged")) for r in records)
    data.trials.append(
        {
            **ids,
            "status": _status(last_epoch, target, state.get("status", ""), errored, diverged),
            "tune_status": state.get("status", ""),
            "last_epoch": last_epoch,
            "target_epochs": target,
            "n_reports": len(records),
            "time_total_s": max(float(r.get("time_total_s", 0.0) or 0.0) for r in records),
            **flat_config,
        }
    )
    return 1


def _frame(rows: list[dict[str, Any]], leading: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(leading))
    rest = sorted(c for c in frame.columns if c not in leading)
    return frame[[c for c in leading if c in frame.columns] + rest]


def load_experiments(locations: Sequence[str | Path], ignore: Iterable[str | Path] = ()) -> ExperimentData:
    """Read every experiment found under ``locations`` (see :func:`find_experiments`).

    Raises :class:`NoExperimentsFound` when not a single experiment is there.
    """
    found, skipped = find_experiments(locations, ignore)
    acc = _Accumulator(skipped=list(skipped))
    for location in found:
        _read_experiment(location, acc)
    if not acc.experiments:
        searched = ", ".join(str(p) for p in locations) or "(nothing)"
        reasons = "".join(f"\n  skipped {line}" for line in acc.skipped)
        raise NoExperimentsFound(f"no experiments ({EXPERIMENT_FILE}) found in {searched}{reasons}")
    ids = ("experiment", "kind", "trial_id", "trial_dir")
    reports = _frame(acc.reports, ids + ("epoch", "training_iteration"))
    if not reports.empty:
        reports = reports.sort_values(["experiment", "trial_id", "training_iteration"], kind="stable")
        reports = reports.reset_index(drop=True)
    trials = _frame(acc.trials, ids + ("status",)).sort_values(["experiment", "trial_id"], kind="stable")
    experiments = sorted(acc.experiments, key=lambda e: e.name)
    return ExperimentData(
        experiments, reports, trials.reset_index(drop=True), read=acc.read, skipped=acc.skipped, warnings=acc.warnings
    )


def pick_reports(reports: pd.DataFrame, pick: Pick = "last", metric: str = "mAP") -> pd.DataFrame:
    """One report per trial: its last epoch, or its best epoch by ``metric`` (earliest on ties)."""
    if pick not in ("last", "best"):
        raise ValueError(f"pick must be 'last' or 'best', not {pick!r}")
    if reports.empty:
        return reports.copy()
    order = ["experiment", "trial_id", "training_iteration"]
    ordered = reports.sort_values(order, kind="stable")
    if pick == "last":
        chosen = ordered.groupby(["experiment", "trial_id"], sort=True).tail(1)
    else:
        ranked = ordered.assign(_neg=-ordered[metric].astype(float))
        ranked = ranked.sort_values(["experiment", "trial_id", "_neg", "training_iteration"], kind="stable")
        chosen = ranked.groupby(["experiment", "trial_id"], sort=True).head(1).drop(columns="_neg")
    return chosen.sort_values(["experiment", "trial_id"], kind="stable").reset_index(drop=True)
