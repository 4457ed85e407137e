"""The paper's tables (1-6) and the λ-search summary, rebuilt from what the sweeps measured.

Each table is one module (``table1`` ... ``table6``) holding, in one place, its experiment kind,
the grid ``sweeps/ablations.py`` runs for it and its row/column spec, so the sweep side and the
analysis side cannot disagree. ``build`` holds the rules every table follows; ``settings`` the
vocabulary that turns a trial's config into a row.
"""

from __future__ import annotations

import pandas as pd

from drkd.analysis.experiment_store import ExperimentData, Pick
from drkd.analysis.paper_tables import reference_runs, table1, table2, table3, table4, table5, table6
from drkd.analysis.paper_tables.build import SEARCH_KIND, build_table, trial_results
from drkd.analysis.paper_tables.search_summary import search_summary
from drkd.analysis.paper_tables.table_spec import Column, Grid, PaperTable, TableSpec

TABLES: dict[str, TableSpec] = {
    spec.name: spec for spec in (table1.SPEC, table2.SPEC, table3.SPEC, table4.SPEC, table5.SPEC, table6.SPEC)
}
# Every grid `sweeps/ablations.py` runs: the tables', then the reference runs'.
GRIDS: dict[str, Grid] = {**{name: spec.grid for name, spec in TABLES.items()}, **reference_runs.GRIDS}
TEACHER_GRID = reference_runs.TEACHER_GRID
NEEDS_TEACHER = frozenset(name for name, spec in TABLES.items() if spec.needs_teacher)
EXPERIMENT_KINDS = (SEARCH_KIND, *GRIDS)


def build_all(data: ExperimentData, paper: pd.DataFrame, pick: Pick = "last") -> list[PaperTable]:
    """Every table the experiments support, in the paper's order, then one summary per λ search."""
    trials = trial_results(data, pick)
    kinds = {e.kind for e in data.experiments}
    tables = []
    for spec in TABLES.values():
        if spec.optional and spec.name not in kinds:
            continue
        tables.append(spec.builder(trials, paper, pick) if spec.builder else build_table(spec, trials, paper, pick))
    tables += [search_summary(trials, exp.name, pick) for exp in data.experiments if exp.kind == SEARCH_KIND]
    return tables


__all__ = [
    "EXPERIMENT_KINDS",
    "GRIDS",
    "NEEDS_TEACHER",
    "SEARCH_KIND",
    "TABLES",
    "TEACHER_GRID",
    "Column",
    "PaperTable",
    "TableSpec",
    "build_all",
    "build_table",
    "search_summary",
    "trial_results",
]
