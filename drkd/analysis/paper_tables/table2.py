"""Table 2: the pixel relation module of L_PR, GloRe against a non-local block."""

from __future__ import annotations

from drkd.analysis.paper_tables import cells, labels
from drkd.analysis.paper_tables.table_spec import TableSpec
from drkd.config import Config
from drkd.config.trial_labels import ROLE_KEY
from drkd.distill.drkd.params import PIXEL_MODULES


def grid(base: Config, teachers: dict[str, str]) -> list[cells.Cell]:
    """One-stage, 1x: the baseline and PR with each pixel module."""
    return cells.one_stage_ablation(base, teachers, ("PR",), "pixel_module", reversed(PIXEL_MODULES))  # non_local first


SPEC = TableSpec(
    "table2",
    "Table 2: pixel-relation module (GloRe vs non-local)",
    grid,
    row_dims=(ROLE_KEY, "method", "pr", "ir", "ins", "pixel_module"),
    labels=(("Model", labels.model), ("Distillation", labels.pixel_module)),
    optional=True,
)
