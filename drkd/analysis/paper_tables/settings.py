"""The settings vocabulary the sweeps and the tables share: what a trial ran, from its flat config.

Each trial's config is turned into *settings* (detector, schedule, role, method, DRKD switches, ...;
defaults filled in, settings that cannot matter blanked). A table row is a set of settings values,
so rows are found from configs rather than from the label a sweep gave them, and the paper's
numbers (:mod:`drkd.analysis.paper_numbers`, same vocabulary) are matched to our rows the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pandas as pd

from drkd.config import TWO_STAGE_ARCHS, Config, ConfigError, DetectorConfig, DistillConfig, TrainSettings
from drkd.config.files import apply_overrides, config_from_dict
from drkd.config.methods import NO_DISTILLATION
from drkd.config.trial_labels import ROLE_KEY, STUDENT, TEACHER
from drkd.distill.drkd import SPEC as DRKD_SPEC
from drkd.distill.drkd.params import DRKDParams, paper_lambdas

DRKD = DRKD_SPEC.name  # Tables 1-5 are the DRKD paper's ablations of its own method
TERMS = ("pr", "ir", "ins")
LAMBDAS = ("lambda_pr", "lambda_ir", "lambda_ins")
LAMBDA_SYMBOLS = {"lambda_pr": "λ1", "lambda_ir": "λ2", "lambda_ins": "λ3"}


def drkd_key(field: str) -> str:
    """The flat config key of a DRKD parameter (``distill.drkd.<field>``)."""
    return f"distill.{DRKD}.{field}"


# DRKD's settings: they matter only to DRKD students.
DRKD_DIMS = (*TERMS, "instance_size", "relation_filter", "pixel_module", *LAMBDAS)
ROW_DIMS_ALL = (ROLE_KEY, "method", "inherit", *DRKD_DIMS)
NOT_INHERITING = "none"  # student.init_from_teacher's default; the settings hold None for it

# settings name -> flat config key (the sweep contract)
CONFIG_KEYS = {
    "arch": "student.arch",
    "schedule": "train.schedule",
    "epochs": "train.epochs",
    "seed": "train.seed",
    ROLE_KEY: ROLE_KEY,
    "method": "distill.method",
    "inherit": "student.init_from_teacher",
    **{dim: drkd_key(dim) for dim in DRKD_DIMS},
}
# A key missing from a trial config means the default of the config object the sweeps fill in.
_DRKD_DEFAULTS = DRKDParams()
CONFIG_DEFAULTS: dict[str, Any] = {
    "arch": DetectorConfig().arch,
    "schedule": TrainSettings().schedule,
    ROLE_KEY: STUDENT,
    "method": DistillConfig().method,
    **{dim: getattr(_DRKD_DEFAULTS, dim) for dim in (*TERMS, "instance_size", "relation_filter", "pixel_module")},
}

Settings = dict[str, Any]


def missing(value: Any) -> bool:
    """None, NaN or pandas' NA: a value a trial or the paper did not set."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def framework(arch: str) -> str:
    """'One-stage' or 'Two-stage'."""
    return "Two-stage" if arch in TWO_STAGE_ARCHS else "One-stage"


def lambda_defaults(two_stage: bool) -> dict[str, float]:
    """The paper's λ1, λ2, λ3 (§4.5), as the DRKD distiller uses them."""
    return {dim: round(value, 8) for dim, value in zip(LAMBDAS, paper_lambdas(two_stage))}


def is_teacher(s: Mapping[str, Any]) -> bool:
    return s.get(ROLE_KEY) == TEACHER


def is_baseline(s: Mapping[str, Any]) -> bool:
    """A student trained without distillation and without inheriting from a teacher."""
    return not is_teacher(s) and s.get("method") == NO_DISTILLATION and s.get("inherit") is None


def is_drkd(s: Mapping[str, Any]) -> bool:
    """A student distilled with DRKD."""
    return not is_teacher(s) and s.get("method") == DRKD


def is_reference(s: Mapping[str, Any]) -> bool:
    """Teacher and baseline rows: the same model whichever sweep trained it."""
    return is_teacher(s) or is_baseline(s)


def relevant(settings: Settings) -> Settings:
    """Blank the settings that cannot affect a run, so equal runs get equal keys."""
    s = dict(settings)
    if is_teacher(s):
        return {**s, **{dim: None for dim in ROW_DIMS_ALL if dim != ROLE_KEY}}
    if not is_drkd(s):
        return {**s, **{dim: None for dim in DRKD_DIMS}}
    if not s.get("pr"):
        s["pixel_module"] = s["lambda_pr"] = None
    if not s.get("ir"):
        s["relation_filter"] = s["lambda_ir"] = None
    if not s.get("ins"):
        s["lambda_ins"] = None
    if not (s.get("ir") or s.get("ins")):
        s["instance_size"] = None  # ROI size only matters to the instance terms
    return s


def settings_from_config(config: Mapping[str, Any]) -> Settings:
    """Settings of one trial from its flat config (keys as in params.json), defaults applied."""
    s: Settings = {}
    for dim, key in CONFIG_KEYS.items():
        value = config.get(key)
        s[dim] = CONFIG_DEFAULTS.get(dim) if missing(value) else value
    for dim in ("arch", "schedule", ROLE_KEY, "method", "pixel_module"):
        s[dim] = str(s[dim])
    s["inherit"] = None if missing(s["inherit"]) or s["inherit"] == NOT_INHERITING else str(s["inherit"])
    for dim in ("pr", "ir", "ins", "relation_filter"):
        s[dim] = _as_bool(s[dim])
    s["instance_size"] = int(s["instance_size"])
    for dim in ("epochs", "seed"):
        s[dim] = None if missing(s[dim]) else int(s[dim])
    for dim in LAMBDAS:
        value = s[dim]
        s[dim] = lambda_defaults(s["arch"] in TWO_STAGE_ARCHS)[dim] if missing(value) else round(float(value), 8)
    return relevant(s)


def paper_settings(row: Mapping[str, Any]) -> Settings:
    """Settings of one transcribed paper row (blank stays blank)."""
    s = {dim: (None if missing(row.get(dim)) else row.get(dim)) for dim in ("arch", "schedule", *ROW_DIMS_ALL)}
    for dim in LAMBDAS:
        if s[dim] is not None:
            s[dim] = round(float(s[dim]), 8)
    if s["inherit"] == NOT_INHERITING:
        s["inherit"] = None
    if s["instance_size"] is not None:
        s["instance_size"] = int(s["instance_size"])
    return relevant(s)


def base_config(recorded: Mapping[str, Any] | None) -> Config | None:
    """An experiment's recorded base config (file form, ``drkd_experiment.json``) as a Config; None
    where it recorded none or it no longer loads."""
    if recorded is None:
        return None
    try:
        return config_from_dict(recorded)
    except ConfigError:
        return None


def student_config(base: Config | None, config: Mapping[str, Any]) -> Config | None:
    """The config a student trial trained with: the experiment's base config with the trial's overrides.

    Args:
        base: the experiment's base config (:func:`base_config`), or None.
        config: the trial's flat parameters (dotted overrides plus label keys such as ``cell``;
            missing values NaN or None).

    Returns:
        The config; None for teachers, where the experiment recorded no base config (sweeps before
        it was written), or where the overrides no longer apply to it.
    """
    if base is None or config.get(ROLE_KEY) == TEACHER:
        return None
    # config overrides are dotted (section.field); label keys such as `cell` are not. A column that
    # some trials lack is float in pandas (train.seed 0 -> 0.0): integral floats go back to int,
    # which float fields accept as well.
    overrides = {
        k: int(v) if isinstance(v, float) and v.is_integer() else v
        for k, v in config.items()
        if "." in k and not missing(v)
    }
    try:
        return apply_overrides(base, overrides)
    except ConfigError:
        return None


def training_budget(cfg: Config | None) -> str | None:
    """How much a student trained, as canonical JSON: its total epochs, the training images it used
    (``data.train_limit``; null: all), the batch and the image sizes. Two runs of one row that differ
    here measured different things, whatever their method settings.

    Args:
        cfg: the student's config (:func:`student_config`), or None.

    Returns:
        The JSON text; None where ``cfg`` is None.
    """
    if cfg is None:
        return None
    d = cfg.data
    budget = {
        "epochs": cfg.train.total_epochs,
        "train_images": d.train_limit,
        "batch_size": d.batch_size,
        "image_size": [d.min_size, d.max_size],
    }
    return json.dumps(budget, sort_keys=True)


def method_setting(cfg: Config | None) -> str | None:
    """What a distilled student ran its method with beyond the row's settings: the factor
    ``distill.weight_scale`` gave the method on the student's framework and the method's parameter
    section, as canonical JSON (keys ``weight_scale`` and the section's fields).

    Args:
        cfg: the student's config (:func:`student_config`), or None.

    Returns:
        The JSON text; None for runs without distillation and where ``cfg`` is None.
    """
    if cfg is None:
        return None
    method = cfg.distill.method
    if method == NO_DISTILLATION:
        return None
    setting = {"weight_scale": cfg.distill.scale_for(method, cfg.student.framework)}
    setting.update(dataclasses.asdict(cfg.distill.params[method]))  # type: ignore[call-overload]
    return json.dumps(setting, sort_keys=True, default=str)


def describe_mixed(settings: list[str]) -> str:
    """The fields in which the method settings or training budgets (:func:`method_setting`,
    :func:`training_budget` texts) differ, each value with its run count, e.g.
    ``weight_scale 0.097 (3 runs), 0.37 (3 runs)``."""
    parsed = [json.loads(s) for s in settings]
    fields = sorted({k for p in parsed for k in p if len({json.dumps(q.get(k)) for q in parsed}) > 1})
    parts = []
    for name in fields:
        counts = Counter(json.dumps(p.get(name)) for p in parsed)
        values = ", ".join(f"{v} ({n} run{'s' if n > 1 else ''})" for v, n in sorted(counts.items()))
        parts.append(f"{name} {values}")
    return "; ".join(parts)
