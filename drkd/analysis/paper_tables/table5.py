"""Table 5: λ sensitivity, in the paper's three column pairs (λ1 | mAP | λ2 | mAP | λ3 | mAP)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from drkd.analysis.experiment_store import Pick
from drkd.analysis.paper_tables import cells
from drkd.analysis.paper_tables.build import (
    Record,
    baseline_runs,
    block_order,
    caption,
    epochs_note,
    excluded_note,
    make_frame,
    metric_fields,
    metric_record,
    missing_footnotes,
    records,
    reference_pool,
    unique_trials,
)
from drkd.analysis.paper_tables.labels import model, switches
from drkd.analysis.paper_tables.settings import LAMBDA_SYMBOLS, LAMBDAS, TERMS, is_drkd, lambda_defaults
from drkd.analysis.paper_tables.table_spec import Column, PaperTable, TableSpec
from drkd.config import TWO_STAGE_ARCHS, Config

NAME = "table5"
TITLE = "Table 5: λ sensitivity"
# Each λ is varied with its own term on, as the paper's columns match its Table 1 rows:
# λ1 with PR alone (38.0 = Table 1's PR row), λ2 with IR alone (36.9), λ3 with all three (38.5).
SWEEPS = {
    "lambda_pr": ("PR", (0.006, 0.004, 0.002, 0.001)),
    "lambda_ir": ("IR", (0.001, 0.002, 0.004, 0.006)),
    "lambda_ins": ("PR+IR+INS", (0.005, 0.006, 0.008, 0.01)),
}


def grid(base: Config, teachers: dict[str, str]) -> list[cells.Cell]:
    """One-stage, 1x: the baseline, then each λ over the paper's values with its own term set on."""
    out = [cells.baseline("one_stage", "1x", base, teachers)]
    for name, (terms, values) in SWEEPS.items():
        out += cells.one_stage_ablation(base, teachers, (terms,), name, values)[1:]  # the baseline once
    return out


def _panel_members(block_trials: list[Record], lam: str, defaults: Mapping[str, float]) -> list[Record]:
    """Runs with λ ``lam``'s term on and every other active λ at its default."""
    term = TERMS[LAMBDAS.index(lam)]
    return [
        t
        for t in block_trials
        if t[term] and all(t[o] is None or abs(t[o] - defaults[o]) < 1e-9 for o in LAMBDAS if o != lam)
    ]


def _chosen_panel(in_block: list[Record], lam: str, arch: str) -> tuple[str | None, list[Record]]:
    """The switch set swept over most λ values in the λ panel, and its runs."""
    by_switch: dict[str, list[Record]] = {}
    for t in _panel_members(in_block, lam, lambda_defaults(arch in TWO_STAGE_ARCHS)):
        by_switch.setdefault(switches(t), []).append(t)
    chosen = max(
        sorted(by_switch), default=None, key=lambda sw: (len({t[lam] for t in by_switch[sw]}), len(by_switch[sw]))
    )
    return chosen, by_switch.get(chosen, [])


def build(trials: pd.DataFrame, paper: pd.DataFrame, pick: Pick = "last") -> PaperTable:
    """Table 5 from :func:`~drkd.analysis.paper_tables.build.trial_results` and the paper numbers.

    A run belongs to the λk panel when term k is on and every other active λ is at its default.
    If a panel holds several switch sets (e.g. PR-only runs, and full-DRKD runs at default λs), the
    one swept over most λ values is the panel's; the column header names it.
    """
    all_trials = records(trials)
    own = [t for t in all_trials if t["kind"] == NAME and is_drkd(t)]
    pool = reference_pool(all_trials)
    paper_rows = records(paper[paper["table"] == NAME])
    blocks = block_order([], {(t["arch"], t["schedule"]) for t in own}) or [("retinanet", "1x")]

    rows: list[Record] = []
    used: list[list[Record]] = []
    chosen_switches: dict[str, set[str]] = {lam: set() for lam in LAMBDAS}
    for arch, schedule in blocks:
        in_block = [t for t in own if (t["arch"], t["schedule"]) == (arch, schedule)]
        panels = {}
        for lam in LAMBDAS:
            chosen, members = _chosen_panel(in_block, lam, arch)
            if chosen:
                chosen_switches[lam].add(chosen)
            used.append([{**t, "_cell": (arch, schedule, lam, t[lam])} for t in members])
            paper_vals = {r[lam]: r["value"] for r in paper_rows if r["arch"] == arch and r[lam] is not None}
            panels[lam] = (sorted({t[lam] for t in members} | set(paper_vals)), members, paper_vals)
        base = baseline_runs(pool, arch, schedule)
        for i in range(max(len(values) for values, _, _ in panels.values())):
            row: Record = {"Model": model({"arch": arch, "schedule": schedule})}
            for lam, (values, members, paper_vals) in panels.items():
                if i >= len(values):
                    row[lam] = math.nan
                    continue
                value = values[i]
                row[lam] = value
                row.update(
                    metric_record(
                        "mAP",
                        [t for t in members if t[lam] == value],
                        base,
                        paper_vals.get(value, math.nan),
                        prefix=f"{lam}_",
                    )
                )
            rows.append(row)

    columns = [Column("Model", "Model")]
    for lam in LAMBDAS:
        sym = LAMBDA_SYMBOLS[lam]
        group = sym + (f" [{', '.join(sorted(chosen_switches[lam]))}]" if chosen_switches[lam] else "")
        columns += [
            Column(lam, group, "param", group, "λ"),
            Column(f"{lam}_mAP", f"{sym} mAP", "ours", group, "mAP"),
            Column(f"{lam}_mAP_paper", f"{sym} paper", "paper", group, "paper"),
            Column(f"{lam}_mAP_delta", f"{sym} ΔmAP", "delta", group, "Δ"),
        ]
    frame = make_frame(rows, ["Model"] + [f for lam in LAMBDAS for f in (lam, *metric_fields(f"{lam}_mAP"))])
    used_trials = unique_trials(used)
    notes = [
        excluded_note(used_trials),
        epochs_note(used_trials),
        "A run counts for λk when term k is on and the other active λs are at their defaults; "
        "[...] names the switch set of our runs in that panel. Paper: RetinaNet, 1x; it does not state "
        "the switch sets (its λ1 / λ2 / λ3 optima equal Table 1's PR / IR / PR+IR+INS rows).",
    ]
    in_range = frame[list(LAMBDAS)].notna().to_numpy()
    ours_missing = (frame[[f"{lam}_mAP" for lam in LAMBDAS]].isna().to_numpy() & in_range).any()
    paper_missing = (frame[[f"{lam}_mAP_paper" for lam in LAMBDAS]].isna().to_numpy() & in_range).any()
    footnotes = missing_footnotes(
        bool(ours_missing), bool(paper_missing), SPEC.command, "at that λ", "the paper did not try that λ"
    )
    return PaperTable(
        NAME,
        TITLE,
        caption(TITLE, pick, notes),
        columns,
        frame,
        footnotes,
        meta={
            "metrics": ("mAP",),
            "command": SPEC.command,
            "blocks": blocks,
            "switches": {lam: sorted(sw) for lam, sw in chosen_switches.items()},
        },
    )


SPEC = TableSpec(NAME, TITLE, grid, builder=build)
