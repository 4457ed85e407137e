"""Table 4: the relation filter of Eq. 7, off and on."""

from __future__ import annotations

from drkd.analysis.paper_tables import cells, labels
from drkd.analysis.paper_tables.table_spec import TableSpec
from drkd.config import Config
from drkd.config.trial_labels import ROLE_KEY


def grid(base: Config, teachers: dict[str, str]) -> list[cells.Cell]:
    """One-stage, 1x: the baseline, then IR alone and all three terms without and with the filter."""
    return cells.one_stage_ablation(base, teachers, ("IR", "PR+IR+INS"), "relation_filter", (False, True))


SPEC = TableSpec(
    "table4",
    "Table 4: relation filter",
    grid,
    row_dims=(ROLE_KEY, "method", "pr", "ir", "ins", "relation_filter"),
    labels=(("Model", labels.model), ("Distillation", labels.distillation), ("Filter", labels.relation_filter)),
)
