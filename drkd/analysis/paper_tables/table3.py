"""Table 3: the instance feature size K (ROI Align to K×K)."""

from __future__ import annotations

from drkd.analysis.paper_tables import cells, labels
from drkd.analysis.paper_tables.settings import ROLE_KEY, drkd_key
from drkd.analysis.paper_tables.table_spec import TableSpec
from drkd.config import Config
from drkd.distill.drkd.params import INSTANCE_SIZES


def grid(base: Config, teachers: dict[str, str]) -> list[cells.Cell]:
    """One-stage, 1x: the baseline, then IR alone and all three terms at each K."""
    out = [cells.baseline("one_stage", "1x", base, teachers)]
    for terms in ("IR", "PR+IR+INS"):
        out += [
            cells.drkd("one_stage", "1x", base, teachers, terms, **{drkd_key("instance_size"): k})
            for k in INSTANCE_SIZES
        ]
    return out


SPEC = TableSpec(
    "table3",
    "Table 3: instance feature size",
    grid,
    row_dims=(ROLE_KEY, "method", "pr", "ir", "ins", "instance_size"),
    labels=(("Model", labels.model), ("Distillation", lambda s: labels.distillation(s, "-")), ("Size", labels.size)),
)
