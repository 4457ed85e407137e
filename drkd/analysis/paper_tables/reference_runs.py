"""Experiment kinds without a table of their own: the teachers and the baselines.

Their runs fill the Teacher and Baseline rows of every table (see the rules in ``build``).
"""

from __future__ import annotations

from drkd.analysis.paper_tables import cells
from drkd.config import Config
from drkd.config.presets import FRAMEWORK_ARCH


def teacher_grid(base: Config, teachers: dict[str, str]) -> list[cells.Cell]:
    """The config's teacher detector, trained on each framework (1x)."""
    return [cells.teacher(framework, base) for framework in FRAMEWORK_ARCH]


def baseline_grid(base: Config, teachers: dict[str, str]) -> list[cells.Cell]:
    """The student without distillation on each framework and schedule."""
    return [
        cells.baseline(framework, schedule, base, teachers)
        for framework in FRAMEWORK_ARCH
        for schedule in cells.SCHEDULES
    ]


TEACHER_GRID = "teacher"  # trains the config's teacher detectors, for the other grids to distil from
GRIDS = {TEACHER_GRID: teacher_grid, "baseline": baseline_grid}
