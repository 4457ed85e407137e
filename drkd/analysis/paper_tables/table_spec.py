"""What a paper table is: its spec (grid, rows, columns, experiment kind) and the built table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from drkd.analysis.experiment_store import Pick
    from drkd.config import Config

METRICS = ("mAP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")
# A distillation run reports its teacher's evaluation beside the student's metrics as teacher_<metric>.
TEACHER_PREFIX = "teacher_"
TEACHER_METRICS = tuple(TEACHER_PREFIX + m for m in METRICS)
Settings = dict[str, Any]
# (base config, framework -> teacher checkpoint) -> the trials to run, as flat dotted overrides
Grid = Callable[["Config", dict[str, str]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Column:
    """One displayed column. ``kind``: label | param | value | ours | paper | delta."""

    key: str
    header: str
    kind: str = "label"
    group: str = ""
    sub: str = ""


@dataclass
class PaperTable:
    """A built table: numeric ``frame`` in display order, how to show it, and its notes."""

    name: str
    title: str
    caption: str
    columns: list[Column]
    frame: pd.DataFrame
    footnotes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def metric_columns(metric: str) -> list[Column]:
    """Ours, the paper's and Δ for one metric."""
    return [
        Column(metric, metric, "ours", metric, "ours"),
        Column(f"{metric}_paper", f"{metric} paper", "paper", metric, "paper"),
        Column(f"{metric}_delta", f"Δ{metric}", "delta", metric, "Δ"),
    ]


@dataclass(frozen=True)
class TableSpec:
    """One of the paper's tables, in one place: the experiment kind that fills it, the grid
    ``ablations.py <name>`` runs for it, and how its rows and columns are laid out.

    Args:
        name: the table's name, which is also the experiment kind its sweep writes
            (``drkd_experiment.json``) and the ``ablations.py`` grid name.
        title: the caption's first sentence.
        grid: the trials of the sweep (see :data:`Grid`).
        row_dims: the settings that tell the table's rows apart.
        labels: (header, settings -> text) of the label columns.
        metrics: the metric columns, each as ours / paper / Δ.
        exact_schedule: paper blocks are matched on (arch, schedule), not arch alone.
        all_methods: every registered method is an expected row (Table 6).
        optional: built only when an experiment of its kind exists.
        builder: builds the table when its layout is not rows × metrics (Table 5); None: the
            generic :func:`~drkd.analysis.paper_tables.build.build_table`.
        needs_teacher: its grid distils, so ``ablations.py`` finds or trains teachers first.
        paper_note: what the caption says of the paper's own setting.
    """

    name: str
    title: str
    grid: Grid
    row_dims: tuple[str, ...] = ()
    labels: tuple[tuple[str, Callable[[Settings], str]], ...] = ()
    metrics: tuple[str, ...] = ("mAP",)
    exact_schedule: bool = False
    all_methods: bool = False
    optional: bool = False
    builder: Callable[[pd.DataFrame, pd.DataFrame, Pick], PaperTable] | None = None
    needs_teacher: bool = True
    paper_note: str = "Paper: 1x schedule (12 epochs)."

    @property
    def command(self) -> str:
        return f"python sweeps/ablations.py {self.name}"
