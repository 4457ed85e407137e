"""Table 6: every registered method against the baseline and the teacher, 2x schedule."""

from __future__ import annotations

from drkd.analysis.paper_tables import cells, labels
from drkd.analysis.paper_tables.settings import ROLE_KEY
from drkd.analysis.paper_tables.table_spec import METRICS, TableSpec
from drkd.config import Config
from drkd.config.methods import method_names
from drkd.config.presets import FRAMEWORK_ARCH


def grid(base: Config, teachers: dict[str, str]) -> list[cells.Cell]:
    """Per framework, 2x: the baseline and each registered method at its configured parameters."""
    return [
        cells.method(framework, "2x", base, teachers, m)
        for framework in FRAMEWORK_ARCH
        for m in method_names(with_none=True)
    ]


SPEC = TableSpec(
    "table6",
    "Table 6: comparison with other distillation methods",
    grid,
    row_dims=(ROLE_KEY, "method"),
    labels=(("Framework", labels.framework_label), ("Method", labels.method)),
    metrics=METRICS,
    all_methods=True,
    paper_note="Paper: 2x schedule (24 epochs); its two-stage teacher is Cascade Mask R-CNN (RX101).",
)
