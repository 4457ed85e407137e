"""Table 4: the relation filter of Eq. 7, off and on."""

from __future__ import annotations

from drkd.analysis.paper_tables import cells, labels
from drkd.analysis.paper_tables.settings import ROLE_KEY, drkd_key
from drkd.analysis.paper_tables.table_spec import TableSpec
from drkd.config import Config


def grid(base: Config, teachers: dict[str, str]) -> list[cells.Cell]:
    """One-stage, 1x: the baseline, then IR alone and all three terms without and with the filter."""
    out = [cells.baseline("one_stage", "1x", base, teachers)]
    for terms in ("IR", "PR+IR+INS"):
        out += [
            cells.drkd("one_stage", "1x", base, teachers, terms, **{drkd_key("relation_filter"): f})
            for f in (False, True)
        ]
    return out


SPEC = TableSpec(
    "table4",
    "Table 4: relation filter",
    grid,
    row_dims=(ROLE_KEY, "method", "pr", "ir", "ins", "relation_filter"),
    labels=(("Model", labels.model), ("Distillation", labels.distillation), ("Filter", labels.relation_filter)),
)
