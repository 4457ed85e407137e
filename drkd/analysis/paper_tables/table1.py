"""Table 1: the PR / IR / INS ablation on a one-stage and a two-stage detector, 1x and 2x."""

from __future__ import annotations

from drkd.analysis.paper_tables import cells, labels
from drkd.analysis.paper_tables.table_spec import METRICS, TableSpec
from drkd.config import Config
from drkd.config.presets import FRAMEWORK_ARCH
from drkd.config.trial_labels import ROLE_KEY


def grid(base: Config, teachers: dict[str, str]) -> list[cells.Cell]:
    """Per framework and schedule: the baseline and each of the paper's four term sets."""
    out = []
    for framework in FRAMEWORK_ARCH:
        for schedule in cells.SCHEDULES:
            out.append(cells.baseline(framework, schedule, base, teachers))
            out.extend(cells.drkd(framework, schedule, base, teachers, terms) for terms in cells.TERM_SETS)
    return out


SPEC = TableSpec(
    "table1",
    "Table 1: PR / IR / INS ablation, one-stage and two-stage",
    grid,
    row_dims=(ROLE_KEY, "method", "pr", "ir", "ins"),
    labels=(
        ("Schedule", lambda s: s["schedule"]),
        ("Framework", labels.framework_label),
        ("Model", labels.student_model),
        ("PR", lambda s: labels.tick(s, "pr")),
        ("IR", lambda s: labels.tick(s, "ir")),
        ("INS", lambda s: labels.tick(s, "ins")),
    ),
    metrics=METRICS,
    exact_schedule=True,
    paper_note="",
)
