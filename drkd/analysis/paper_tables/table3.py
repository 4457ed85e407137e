"""Table 3: the instance feature size K (ROI Align to K×K)."""

from __future__ import annotations

from drkd.analysis.paper_tables import cells, labels
from drkd.analysis.paper_tables.table_spec import TableSpec
from drkd.config import Config
from drkd.config.trial_labels import ROLE_KEY
from drkd.distill.drkd.params import INSTANCE_SIZES


def grid(base: Config, teachers: dict[str, str]) -> list[cells.Cell]:
    """One-stage, 1x: the baseline, then IR alone and all three terms at each K."""
    return cells.one_stage_ablation(base, teachers, ("IR", "PR+IR+INS"), "instance_size", INSTANCE_SIZES)


SPEC = TableSpec(
    "table3",
    "Table 3: instance feature size",
    grid,
    row_dims=(ROLE_KEY, "method", "pr", "ir", "ins", "instance_size"),
    labels=(("Model", labels.model), ("Distillation", lambda s: labels.distillation(s, "-")), ("Size", labels.size)),
)
