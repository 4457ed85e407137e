"""Building blocks of the ablation grids: one trial (a *cell*) as flat dotted overrides plus labels."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from drkd.analysis.paper_tables.settings import DRKD, TERMS, drkd_key
from drkd.config import Config, ConfigError
from drkd.config.methods import NO_DISTILLATION
from drkd.config.presets import FRAMEWORK_ARCH
from drkd.config.schema import FASTER_RCNN_SIZE_FIELDS
from drkd.config.storage import absolute_location
from drkd.config.trial_labels import CELL_KEY, ROLE_KEY, STUDENT, TEACHER

# DRKD's term switches (pr, ir, ins) by the paper's row names.
TERM_SETS = {
    "PR": (True, False, False),
    "IR": (False, True, False),
    "PR+IR": (True, True, False),
    "PR+IR+INS": (True, True, True),
}
SCHEDULES = ("1x", "2x")
Cell = dict[str, Any]


def student(framework: str, schedule: str, base: Config, teachers: dict[str, str]) -> Cell:
    """A student of ``framework`` on ``schedule`` (epochs from the base config's 1x), distilled from
    that framework's teacher when the base config has a teacher section."""
    arch = FRAMEWORK_ARCH[framework]
    cell = {
        ROLE_KEY: STUDENT,
        "student.arch": arch,
        "train.schedule": schedule,
        "train.epochs": base.train.epochs_1x * (2 if schedule == "2x" else 1),
    }
    if base.teacher is not None:
        cell["teacher.arch"] = arch
        if framework in teachers:
            cell["teacher.checkpoint"] = teachers[framework]
    return cell


def baseline(framework: str, schedule: str, base: Config, teachers: dict[str, str]) -> Cell:
    """The student without distillation."""
    return {
        CELL_KEY: f"{framework} {schedule} baseline",
        **student(framework, schedule, base, teachers),
        "distill.method": NO_DISTILLATION,
    }


def method(framework: str, schedule: str, base: Config, teachers: dict[str, str], name: str) -> Cell:
    """The student distilled with registered method ``name`` at its configured parameters."""
    return {
        CELL_KEY: f"{framework} {schedule} {name}",
        **student(framework, schedule, base, teachers),
        "distill.method": name,
    }


def drkd(framework: str, schedule: str, base: Config, teachers: dict[str, str], terms: str, **extra: Any) -> Cell:
    """A DRKD student with the term set ``terms`` (a TERM_SETS key) and ``extra`` DRKD overrides."""
    pr, ir, ins = TERM_SETS[terms]
    label = " ".join([framework, schedule, terms, *(f"{k.split('.')[-1]}={v}" for k, v in extra.items())])
    return {
        CELL_KEY: label,
        **student(framework, schedule, base, teachers),
        "distill.method": DRKD,
        drkd_key("pr"): pr,
        drkd_key("ir"): ir,
        drkd_key("ins"): ins,
        **extra,
    }


def one_stage_ablation(
    base: Config, teachers: dict[str, str], term_sets: Sequence[str], field: str, values: Iterable[Any]
) -> list[Cell]:
    """The one-stage 1x baseline, then DRKD with each term set at each value of ``distill.drkd.<field>``."""
    values = list(values)
    out = [baseline("one_stage", "1x", base, teachers)]
    for terms in term_sets:
        out += [drkd("one_stage", "1x", base, teachers, terms, **{drkd_key(field): v}) for v in values]
    return out


def teacher(framework: str, base: Config) -> Cell:
    """Training the config's teacher detector (as a plain student run) on the 1x schedule."""
    t = base.teacher
    if t is None:
        raise ConfigError("teacher: the teacher grid trains the config's teacher section, and there is none")
    cell = {
        CELL_KEY: f"{framework} teacher",
        ROLE_KEY: TEACHER,
        "student.arch": FRAMEWORK_ARCH[framework],
        "student.backbone": t.backbone,
        "student.fpn_channels": t.fpn_channels,
        "student.anchor_scale": t.anchor_scale,
        "student.head_norm": t.head_norm,
        # the teacher's proposal and sampling sizes, which its training run must use as well
        **{f"student.{name}": getattr(t, name) for name in FASTER_RCNN_SIZE_FIELDS},
        "distill.method": NO_DISTILLATION,
        "train.schedule": "1x",
        "train.epochs": base.train.epochs_1x,
    }
    if t.backbone_weights:
        cell["student.backbone_weights"] = t.backbone_weights
    if t.backbone_checkpoint:  # a trial override: absolute_paths does not reach it
        cell["student.backbone_checkpoint"] = absolute_location(t.backbone_checkpoint)
    return cell


def _refuse_unknown(flag: str, names: Sequence[str], allowed: Iterable[str]) -> None:
    """Raise ConfigError naming ``flag``, its value and the first of ``names`` (sorted) not in ``allowed``."""
    allowed = list(allowed)
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise ConfigError(f"{flag} {','.join(names)}: {unknown[0]!r} is not one of {', '.join(allowed)}")


def frameworks_used(cells: list[Cell]) -> set[str]:
    """The frameworks (one_stage, two_stage) whose detectors the cells train."""
    archs = {c["student.arch"] for c in cells}
    return {f for f, a in FRAMEWORK_ARCH.items() if a in archs}


def only_frameworks(cells: list[Cell], frameworks: Sequence[str]) -> list[Cell]:
    """The cells that train a detector of one of ``frameworks`` (``one_stage``, ``two_stage``).

    Raises:
        ConfigError: a name is not a framework, or no cell trains one of them.
    """
    _refuse_unknown("--frameworks", frameworks, FRAMEWORK_ARCH)
    archs = {FRAMEWORK_ARCH[f] for f in frameworks}
    kept = [c for c in cells if c["student.arch"] in archs]
    if not kept:
        raise ConfigError(f"--frameworks {','.join(frameworks)}: this grid trains none of them")
    return kept


def only_methods(cells: list[Cell], methods: Sequence[str]) -> list[Cell]:
    """The cells that distil with one of ``methods`` (``none`` for no distillation), in the order
    ``methods`` names them (the grid's order within each method).

    Raises:
        ConfigError: no cell of the grid uses one of them (an unknown name included).
    """
    rank = {m: i for i, m in enumerate(methods)}
    kept = [c for c in cells if c.get("distill.method") in rank]
    missing = [m for m in methods if not any(c.get("distill.method") == m for c in cells)]
    if missing:
        raise ConfigError(f"--methods {','.join(methods)}: no cell of this grid distils with {missing[0]!r}")
    return sorted(kept, key=lambda c: rank[c["distill.method"]])


def only_schedules(cells: list[Cell], schedules: Sequence[str]) -> list[Cell]:
    """The cells on one of ``schedules`` (``1x``, ``2x``), in the grid's order.

    Raises:
        ConfigError: a name is not a schedule, or no cell of the grid runs one of them.
    """
    _refuse_unknown("--schedules", schedules, SCHEDULES)
    kept = [c for c in cells if c["train.schedule"] in schedules]
    if not kept:
        raise ConfigError(f"--schedules {','.join(schedules)}: this grid runs none of them")
    return kept


def term_set(cell: Cell, base: Config) -> str | None:
    """The TERM_SETS name of a DRKD cell's (pr, ir, ins) switches, each the cell's override or else
    the base config's value; None for a cell of another method or a combination the paper has no row for."""
    if cell.get("distill.method") != DRKD:
        return None
    defaults = base.distill.drkd
    switches = tuple(bool(cell.get(drkd_key(t), getattr(defaults, t))) for t in TERMS)
    return next((name for name, s in TERM_SETS.items() if s == switches), None)


def only_terms(cells: list[Cell], term_sets: Sequence[str], base: Config) -> list[Cell]:
    """The DRKD cells whose term set (:func:`term_set`) is one of ``term_sets`` (PR, IR, PR+IR,
    PR+IR+INS); every other cell, the baseline's included, is left out.

    Raises:
        ConfigError: a name is not a term set, or no cell of the grid distils with one of them.
    """
    _refuse_unknown("--terms", term_sets, TERM_SETS)
    kept = [c for c in cells if term_set(c, base) in term_sets]
    if not kept:
        raise ConfigError(f"--terms {','.join(term_sets)}: no DRKD cell of this grid has them")
    return kept


def with_seeds(cells: list[Cell], seeds: int, first_seed: int = 0) -> list[Cell]:
    """Each cell repeated with train.seed = first_seed .. first_seed + seeds - 1."""
    return [{**cell, "train.seed": first_seed + s} for cell in cells for s in range(seeds)]
