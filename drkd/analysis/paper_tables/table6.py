"""Table 6: every registered method against the baseline and the teacher, 2x schedule, each also
with the student inheriting the teacher's neck and heads where the shapes allow it."""

from __future__ import annotations

import dataclasses

from drkd.analysis.paper_tables import cells, labels
from drkd.analysis.paper_tables.table_spec import METRICS, TableSpec
from drkd.config import Config
from drkd.config.methods import method_names
from drkd.config.presets import FRAMEWORK_ARCH
from drkd.config.schema import inherit_mismatch
from drkd.config.trial_labels import CELL_KEY, ROLE_KEY

INHERIT = "neck_head"  # FGD's and MGD's RetinaNet students inherit every teacher tensor outside the backbone


def inheriting_blocked(base: Config) -> str | None:
    """Why the base config's student cannot inherit its teacher's neck and heads, or ``None``."""
    if base.teacher is None:
        return "the base config has no teacher section"
    # the grid gives student and teacher the same arch per framework
    return inherit_mismatch(dataclasses.replace(base.student, arch=base.teacher.arch), base.teacher, INHERIT)


def grid(base: Config, teachers: dict[str, str]) -> list[cells.Cell]:
    """Per framework, 2x: the baseline and each registered method at its configured parameters, then
    (when :func:`inheriting_blocked` finds nothing in the way) each again, the baseline included,
    with ``student.init_from_teacher: neck_head``."""
    plain = [
        cells.method(framework, "2x", base, teachers, m)
        for framework in FRAMEWORK_ARCH
        for m in method_names(with_none=True)
    ]
    if inheriting_blocked(base):
        return plain
    inheriting = [
        {**cell, CELL_KEY: f"{cell[CELL_KEY]} inherit", "student.init_from_teacher": INHERIT} for cell in plain
    ]
    return plain + inheriting


SPEC = TableSpec(
    "table6",
    "Table 6: comparison with other distillation methods",
    grid,
    row_dims=(ROLE_KEY, "method", "inherit"),
    labels=(("Framework", labels.framework_label), ("Method", labels.method)),
    metrics=METRICS,
    all_methods=True,
    paper_note=(
        "Paper: 2x schedule (24 epochs); its two-stage teacher is Cascade Mask R-CNN (RX101). "
        "Rows that inherit run only where the student's neck and heads have the teacher's shapes "
        "(not on the embedded default, whose teacher's FPN is twice as wide). "
        "CWD has no paper value: its paper's COCO RetinaNet/Faster R-CNN R50 results could not be "
        "verified from the sources read (mmrazor publishes CWD on GFL only)."
    ),
)
