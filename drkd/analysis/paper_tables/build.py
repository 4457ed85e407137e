"""Building a paper table from what the sweeps measured: the rules and the shared pieces.

Rules, so the tables are reproducible and defensible:
  * A cell uses only trials that reached ``train.epochs``; the caption counts the ones left out.
  * Distilled rows come from experiments of the table's own kind (``table3`` → Table 3). Baseline
    rows are the same models whichever sweep trained them, so they pool every experiment except λ
    searches.
  * Teacher rows show the teacher the students distilled from: each distillation run records its
    teacher's evaluation (``teacher_<metric>``, evaluated once per teacher), and a detector's teacher
    row is the mean ± std over its distinct teachers (n = teachers, not runs) recorded by the table's
    own experiments, else by every experiment, λ searches and unfinished runs included. Where no run of that detector recorded one, the row
    takes the teacher runs (``ablations.py teacher``) of any experiment but λ searches, whatever their
    schedule.
  * Δ is our row's mean minus our baseline row's mean (student, no distillation) in the same block.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from drkd.analysis.experiment_store import COMPLETED, CONFIG_PREFIX, ExperimentData, Pick, pick_reports
from drkd.analysis.paper_tables.difference import NO_INTERVAL, delta_interval
from drkd.analysis.paper_tables.labels import ARCH_NAMES, row_order
from drkd.analysis.paper_tables.settings import (
    ROLE_KEY,
    STUDENT,
    TEACHER,
    TERMS,
    Settings,
    base_config,
    describe_mixed,
    is_baseline,
    is_reference,
    is_teacher,
    method_setting,
    missing,
    paper_settings,
    relevant,
    settings_from_config,
    student_config,
    training_budget,
)
from drkd.analysis.paper_tables.table_spec import (
    METRICS,
    TEACHER_METRICS,
    TEACHER_PREFIX,
    Column,
    PaperTable,
    TableSpec,
    metric_columns,
)
from drkd.config.methods import display_name, method_names

SEARCH_KIND = "lambda_search"  # the experiment kind of `sweeps/lambda_search.py`
PICK_TEXT = {"last": "last reported epoch", "best": "best epoch by mAP"}
Record = dict[str, Any]
Block = tuple[str, str]  # (arch, schedule)


def trial_results(data: ExperimentData, pick: Pick = "last") -> pd.DataFrame:
    """One row per trial: its status, the metrics of the picked report (the student's, and the
    teacher's ``teacher_<metric>`` of a distillation run; NaN where not reported), and its settings."""
    picked = pick_reports(data.reports, pick)
    metric_cols = [c for c in ("epoch", *METRICS, *TEACHER_METRICS) if c in picked.columns]
    picked = picked[["experiment", "trial_id", *metric_cols]]
    merged = data.trials.merge(picked, on=["experiment", "trial_id"], how="left")
    config_cols = [c for c in merged.columns if c.startswith(CONFIG_PREFIX)]
    flat = [{c[len(CONFIG_PREFIX) :]: row[c] for c in config_cols} for row in merged[config_cols].to_dict("records")]
    settings_frame = pd.DataFrame([settings_from_config(f) for f in flat], index=merged.index, dtype=object)
    bases = {e.name: base_config(e.base_config) for e in data.experiments}  # parsed once per experiment
    students = [student_config(bases.get(experiment), f) for experiment, f in zip(merged["experiment"], flat)]
    settings_frame["method_setting"] = [method_setting(cfg) for cfg in students]
    settings_frame["training_budget"] = [training_budget(cfg) for cfg in students]
    for metric in (*METRICS, *TEACHER_METRICS):
        if metric not in merged.columns:
            merged[metric] = np.nan
    return pd.concat(
        [merged.drop(columns=[c for c in settings_frame.columns if c in merged.columns]), settings_frame], axis=1
    )


# --- shared pieces --------------------------------------------------------------------------------


def records(frame: pd.DataFrame) -> list[Record]:
    return [{k: (None if missing(v) else v) for k, v in r.items()} for r in frame.to_dict("records")]


def stats(values: Iterable[Any]) -> tuple[float, float, int]:
    """(mean, sample std, n) of the values that are set."""
    clean = [float(v) for v in values if not missing(v)]
    if not clean:
        return math.nan, math.nan, 0
    std = float(np.std(clean, ddof=1)) if len(clean) > 1 else math.nan
    return float(np.mean(clean)), std, len(clean)


def done(trials: Iterable[Record]) -> list[Record]:
    return [t for t in trials if t["status"] == COMPLETED]


def key(s: Settings, dims: Iterable[str]) -> tuple:
    return tuple(s.get(d) for d in dims)


def reference_pool(trials: list[Record]) -> list[Record]:
    """Teacher and baseline trials of every experiment but λ searches."""
    return [t for t in trials if t["kind"] != SEARCH_KIND and is_reference(t)]


def baseline_runs(pool: list[Record], arch: str, schedule: str) -> list[Record]:
    """The completed baseline trials (student, no distillation, no inheriting) of one block."""
    return [t for t in done(pool) if is_baseline(t) and t["arch"] == arch and t["schedule"] == schedule]


def block_order(paper_blocks: Sequence[Block], ours: Iterable[Block]) -> list[Block]:
    """The paper's blocks first, then ours by detector family."""
    arch_rank = {a: i for i, a in enumerate(ARCH_NAMES)}
    rest = sorted(set(ours) - set(paper_blocks), key=lambda b: (arch_rank.get(b[0], 99), b[0], str(b[1])))
    return list(paper_blocks) + rest


def _seeded(trials: Iterable[Record], metric: str) -> list[tuple[int | None, float]]:
    return [(t.get("seed"), float(t[metric])) for t in trials if not missing(t[metric])]


def _trial_key(t: Record) -> tuple[str | None, str | None]:
    # a teacher recorded by the students that distilled from it is no trial: it has neither key
    return t.get("experiment"), t.get("trial_id")


def metric_record(metric: str, cell: list[Record], base: list[Record], paper: float, prefix: str = "") -> Record:
    """Ours (mean, std, n over completed trials), the paper's value, Δ to our baseline's mean and its
    95 % interval (:func:`~drkd.analysis.paper_tables.difference.delta_interval`); the interval is NaN
    for the baseline row itself (its trials are all in ``base``) and under 2 runs a side.

    Args:
        metric: the metric column (``mAP``, ``AP_S``, ...).
        cell: the row's trials; only completed ones count.
        base: the block's completed baseline trials (:func:`baseline_runs`); Δ is NaN without them.
        paper: the paper's value, NaN where it reports none.
        prefix: put before every field name (Table 5's per-λ panels).
    """
    finished = done(cell)
    mean, std, n = stats(t[metric] for t in finished)
    base_mean = stats(t[metric] for t in base)[0]
    own = {_trial_key(t) for t in finished} <= {_trial_key(t) for t in base}
    interval = NO_INTERVAL if own else delta_interval(_seeded(finished, metric), _seeded(base, metric))
    return {
        f"{prefix}{metric}": mean,
        f"{prefix}{metric}_std": std,
        f"{prefix}{metric}_n": n,
        f"{prefix}{metric}_paper": paper,
        f"{prefix}{metric}_delta": mean - base_mean,
        f"{prefix}{metric}_ci_lo": interval.lo,
        f"{prefix}{metric}_ci_hi": interval.hi,
        f"{prefix}{metric}_paired": interval.paired if not math.isnan(interval.lo) else None,
    }


def metric_fields(metric: str) -> tuple[str, ...]:
    """The frame columns :func:`metric_record` fills for one metric."""
    return tuple(f"{metric}{x}" for x in ("", "_std", "_n", "_paper", "_delta", "_ci_lo", "_ci_hi", "_paired"))


def make_frame(rows: list[Record], columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    for col in columns:
        if col.endswith("_n"):
            frame[col] = frame[col].astype("Int64")
    return frame.reset_index(drop=True)


def unique_trials(cells: Iterable[list[Record]]) -> list[Record]:
    seen, out = set(), []
    for cell in cells:
        for t in cell:
            if (t["experiment"], t["trial_id"]) not in seen:
                seen.add((t["experiment"], t["trial_id"]))
                out.append(t)
    return out


def epochs_note(used: list[Record]) -> str:
    pairs = sorted({(t["schedule"], int(t["target_epochs"])) for t in used if t.get("target_epochs") is not None})
    return ("Our schedules: " + ", ".join(f"{s} = {e} epochs" for s, e in pairs) + ".") if pairs else ""


def excluded_note(used: list[Record]) -> str:
    bad = [t for t in used if t["status"] != COMPLETED]
    if not bad:
        return "Every matching trial reached train.epochs."
    cells = len({t["_cell"] for t in bad})
    statuses = ", ".join(sorted({t["status"] for t in bad}))
    return f"{len(bad)} trial(s) in {cells} cell(s) did not reach train.epochs ({statuses}) and are left out."


def mixed_settings_notes(cells: Iterable[tuple[str, list[Record]]]) -> list[str]:
    """One note per row whose completed students trained for different budgets (epochs, training
    images, batch or image size: :func:`training_budget`), and one per row whose runs ran their method
    with different settings beyond the row's (another ``distill.weight_scale`` or method parameter:
    :func:`method_setting`): the row's mean and Δ then mix them. Runs whose budget or setting is
    unknown (no recorded base config) are not compared.

    Args:
        cells: (row label, the row's trials) pairs.
    """
    notes = []
    for label, cell in cells:
        for field, what in (("training_budget", "training budgets"), ("method_setting", "method settings")):
            known = [t[field] for t in done(cell) if not missing(t.get(field))]
            if len(set(known)) > 1:
                notes.append(
                    f"Row {label} pools runs of different {what}, which its values mix: {describe_mixed(known)}."
                )
    return notes


def caption(title: str, pick: Pick, notes: Iterable[str]) -> str:
    parts = [
        title + ".",
        f"Value per trial: {PICK_TEXT[pick]}.",
        "Cells: our mean ± std (n runs), the paper's value, and Δ = ours − our baseline row "
        "(student without distillation, same block) with its 95 % confidence interval in brackets: "
        "paired by seed where the row and the baseline ran the same seeds (p), else Welch's; "
        "* marks an interval that excludes zero. No interval under 2 runs a side.",
    ]
    return " ".join(parts + [n for n in notes if n])


def missing_footnotes(
    ours_missing: bool,
    paper_missing: bool,
    command: str,
    what: str,
    paper_what: str = "the paper reports no such value",
) -> list[str]:
    """The footnotes that explain '—' cells."""
    notes = []
    if ours_missing:
        notes.append(f"— in an 'ours' column: no run {what} reached train.epochs; `{command}` fills it.")
    if paper_missing:
        notes.append(f"— in a 'paper' column: {paper_what}.")
    return notes


def peer_paper_notes(paper_rows: Iterable[Record]) -> list[str]:
    """One footnote per paper value taken from another paper than DRKD's (``source`` not ``Table …``):
    whose number it is and the teacher it was distilled from, which is not always the paper's teacher."""
    notes: list[str] = []
    for r in paper_rows:
        source = str(r.get("source") or "")
        if source and not source.startswith("Table "):
            note = f"Paper value of {ARCH_NAMES.get(r['arch'], r['arch'])} {display_name(str(r['method']))}: {source}."
            if note not in notes:
                notes.append(note)
    return notes


# --- teacher rows ---------------------------------------------------------------------------------

# The config keys that name a distillation run's teacher (a run sets one of them, or its sweep's base config does).
TEACHER_ID_KEYS = ("teacher.checkpoint", "teacher.weights")
RECORDED, TEACHER_RUNS = "recorded evaluations", "teacher runs"  # where a teacher row's values come from
TEACHER_COMMAND = "python sweeps/ablations.py teacher"


def teacher_identity(t: Record) -> str | None:
    """The teacher a distillation run learned from, as its config names it (``checkpoint <path>`` or
    ``weights <torchvision weights name>``); ``None`` when the config names neither."""
    for config_key in TEACHER_ID_KEYS:
        value = t.get(CONFIG_PREFIX + config_key)
        if not missing(value) and str(value):
            return f"{config_key.split('.', 1)[1]} {value}"
    return None


def _evaluation(trials: list[Record]) -> tuple[float, ...]:
    """The recorded teacher metrics (METRICS order), averaged over ``trials``."""
    return tuple(stats(t.get(TEACHER_PREFIX + m) for t in trials)[0] for m in METRICS)


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or math.isclose(x, y, abs_tol=1e-6) for x, y in zip(a, b))


def recorded_teachers(trials: list[Record], arch: str) -> list[Record]:
    """One record per distinct teacher whose evaluation the distillation runs of detector ``arch`` recorded.

    Every distillation run counts, of any experiment (λ searches too) and status: the teacher's
    evaluation does not depend on how far the student trained. A teacher evaluated by many runs is
    one measurement. A run whose config names no teacher (its sweep's base config did) counts as the
    named teacher whose evaluation it recorded exactly, else as its experiment's configured teacher.

    Each record holds the teacher's metrics under the student's metric names (``mAP``, ...), and
    ``teacher`` (its identity), ``n_runs``, ``consistent`` (all its runs recorded the same values)
    and ``status`` (completed: a cell takes it).
    """
    evaluated = [
        t for t in trials if t["arch"] == arch and not is_reference(t) and not missing(t.get(TEACHER_PREFIX + "mAP"))
    ]
    groups: dict[str, list[Record]] = {}
    for t in evaluated:
        identity = teacher_identity(t)
        if identity is not None:
            groups.setdefault(identity, []).append(t)
    named = {identity: _evaluation(runs) for identity, runs in groups.items()}
    for t in evaluated:
        if teacher_identity(t) is None:
            same = next((i for i in sorted(named) if _same(named[i], _evaluation([t]))), None)
            groups.setdefault(same or f"the configured teacher of {t['experiment']}", []).append(t)
    out = []
    for identity, runs in sorted(groups.items()):
        values = _evaluation(runs)
        out.append(
            {
                "teacher": identity,
                "n_runs": len(runs),
                "consistent": all(_same(_evaluation([t]), values) for t in runs),
                "status": COMPLETED,
                **dict(zip(METRICS, values)),
            }
        )
    return out


def teacher_notes(rows: Mapping[str, Record]) -> list[str]:
    """What the caption says of the teacher rows; ``rows``: arch -> how its teacher row was filled."""
    recorded = {a: r for a, r in sorted(rows.items()) if r["source"] == RECORDED}
    from_runs = [a for a, r in sorted(rows.items()) if r["source"] == TEACHER_RUNS]

    def names(archs: Iterable[str]) -> str:
        return ", ".join(ARCH_NAMES.get(a, a) for a in archs)

    notes = []
    if recorded:
        which = f"Teacher rows of {names(recorded)}" if from_runs else "Teacher rows"
        notes.append(
            f"{which}: the teacher this table's students distilled from (any sweep's where they recorded none), "
            "evaluated once per teacher (checkpoint or torchvision weights) and recorded by the distillation runs, "
            "λ searches and unfinished runs included (n = distinct teachers)."
        )
        several = [
            f"{ARCH_NAMES.get(a, a)}: {len(r['teachers'])}" for a, r in recorded.items() if len(r["teachers"]) > 1
        ]
        if several:
            notes.append(
                f"Students distilled from several teachers ({', '.join(several)}); the teacher row is their mean ± std."
            )
        if any(r["runs_too"] for r in recorded.values()):
            notes.append(f"These are preferred to teacher runs (`{TEACHER_COMMAND}`) of the same detector.")
        if not all(r["consistent"] for r in recorded.values()):
            notes.append(
                "A teacher's recorded evaluations differ between runs (another validation set?); its value is their mean."
            )
    if from_runs:
        which = (
            f"Teacher rows of {names(from_runs)} (no run recorded its teacher's evaluation)"
            if recorded
            else "Teacher rows (no distillation run recorded its teacher's evaluation)"
        )
        notes.append(f"{which} take the teacher runs (`{TEACHER_COMMAND}`) of that detector, whatever their schedule.")
    return notes


# --- Tables 1-4 and 6 -----------------------------------------------------------------------------


def _paper_rows(spec: TableSpec, paper: pd.DataFrame) -> list[Record]:
    known = set(method_names(with_none=True))
    rows = [
        r
        for r in records(paper[paper["table"] == spec.name])
        if r["arch"] in ARCH_NAMES and (r["method"] is None or r["method"] in known)
    ]
    for r in rows:
        r["_settings"] = paper_settings(r)
    return rows


def _paper_blocks(spec: TableSpec, paper_rows: list[Record], own_blocks: set[Block]) -> list[Block]:
    """The blocks the paper's rows fall in: (arch, schedule), or every schedule we ran of that arch."""
    blocks: list[Block] = []
    for r in paper_rows:
        same_arch = sorted(b for b in own_blocks if b[0] == r["arch"])
        for block in [(r["arch"], r["schedule"])] if spec.exact_schedule or not same_arch else same_arch:
            if block not in blocks:
                blocks.append(block)
    return blocks


def _expected_rows(spec: TableSpec, paper_rows: list[Record]) -> dict[tuple, Settings]:
    """Row key -> settings of every row the block shows even without runs."""
    expected: dict[tuple, Settings] = {}
    for r in paper_rows:
        expected.setdefault(key(r["_settings"], spec.row_dims), r["_settings"])
    if spec.all_methods:
        every = [relevant({ROLE_KEY: TEACHER})] + [
            relevant({ROLE_KEY: STUDENT, "method": m, **{t: True for t in TERMS}}) for m in method_names(with_none=True)
        ]
        for s in every:
            expected.setdefault(key(s, spec.row_dims), s)
    return expected


def _block_cells(
    spec: TableSpec, block: Block, own: list[Record], pool: list[Record], expected: dict[tuple, Settings]
) -> dict[tuple, list[Record]]:
    """Row key -> trials: the table's own distilled runs (which may add rows, and then the baseline
    row their Δ is taken against), then the reference runs that fill expected rows."""
    cells: dict[tuple, list[Record]] = {}
    for t in own:
        if (t["arch"], t["schedule"]) == block and not is_reference(t):
            cells.setdefault(key(t, spec.row_dims), []).append(t)
            expected.setdefault(key(t, spec.row_dims), t)
    if cells:  # a block of ours the paper does not have (e.g. Faster R-CNN 2x) still shows its baseline
        for t in pool:
            if is_baseline(t) and (t["arch"], t["schedule"]) == block:
                expected.setdefault(key(t, spec.row_dims), t)
    for t in pool:
        k = key(t, spec.row_dims)
        if t["arch"] == block[0] and (t["schedule"] == block[1] or is_teacher(t)) and k in expected:
            cells.setdefault(k, []).append(t)
    return cells


def build_table(spec: TableSpec, trials: pd.DataFrame, paper: pd.DataFrame, pick: Pick = "last") -> PaperTable:
    """One of the paper's tables, in its layout, from :func:`trial_results` and the paper numbers."""
    paper_rows = _paper_rows(spec, paper)
    all_trials = records(trials)
    own = [t for t in all_trials if t["kind"] == spec.name]
    pool = reference_pool(all_trials)
    own_blocks = {(t["arch"], t["schedule"]) for t in own}

    rows: list[Record] = []
    per_seed: list[Record] = []  # each student row's completed runs, for the per-seed plot
    labelled_cells: list[tuple[str, list[Record]]] = []  # (row label, its trials), for the mixed-settings check
    used: list[list[Record]] = []
    recorded: dict[str, list[Record]] = {}  # arch -> its distinct recorded teachers
    teacher_rows: dict[str, Record] = {}  # arch -> how its teacher row was filled
    for arch, schedule in block_order(_paper_blocks(spec, paper_rows, own_blocks), own_blocks):
        block_paper = [
            r for r in paper_rows if r["arch"] == arch and (not spec.exact_schedule or r["schedule"] == schedule)
        ]
        expected = _expected_rows(spec, block_paper)
        cells = _block_cells(spec, (arch, schedule), own, pool, expected)
        for k in sorted(expected, key=lambda k: row_order(expected[k])):
            label_settings = {**expected[k], "arch": arch, "schedule": schedule}
            row: Record = {header: fn(label_settings) for header, fn in spec.labels}
            cell = cells.get(k, [])
            if is_teacher(expected[k]) and arch not in recorded:
                # the teachers this table's own students learned from; else any experiment's
                recorded[arch] = recorded_teachers(own, arch) or recorded_teachers(all_trials, arch)
            if is_teacher(expected[k]) and recorded[arch]:
                teacher_rows[arch] = {
                    "source": RECORDED,
                    "teachers": [t["teacher"] for t in recorded[arch]],
                    "runs_too": bool(cell),
                    "consistent": all(t["consistent"] for t in recorded[arch]),
                }
                cell = recorded[arch]  # teachers, not trials: not counted in the trial notes below
            else:
                if is_teacher(expected[k]) and cell:
                    teacher_rows[arch] = {"source": TEACHER_RUNS, "teachers": sorted({t["trial_id"] for t in cell})}
                used.append([{**t, "_cell": (arch, schedule, k)} for t in cell])
                if not is_teacher(expected[k]):
                    per_seed.append(
                        {
                            "block": (arch, schedule),
                            "labels": dict(row),
                            "baseline": is_baseline(expected[k]),
                            "runs": _seeded(done(cell), "mAP"),
                        }
                    )
            if not is_teacher(expected[k]):
                labelled_cells.append((" ".join(str(v) for v in row.values()), cell))
            base = baseline_runs(pool, arch, schedule)
            for metric in spec.metrics:
                paper_value = next(
                    (
                        r["value"]
                        for r in block_paper
                        if r["metric"] == metric and key(r["_settings"], spec.row_dims) == k
                    ),
                    math.nan,
                )
                row.update(metric_record(metric, cell, base, paper_value))
            rows.append(row)

    columns = [Column(h, h) for h, _ in spec.labels] + [c for m in spec.metrics for c in metric_columns(m)]
    frame = make_frame(rows, [h for h, _ in spec.labels] + [f for m in spec.metrics for f in metric_fields(m)])
    used_trials = unique_trials(used)
    notes = [
        excluded_note(used_trials),
        epochs_note(used_trials),
        *mixed_settings_notes(labelled_cells),
        *teacher_notes(teacher_rows),
        spec.paper_note,
    ]
    ours_missing = frame.empty or frame[list(spec.metrics)].isna().any().any()
    paper_missing = frame.empty or frame[[f"{m}_paper" for m in spec.metrics]].isna().any().any()
    footnotes = missing_footnotes(ours_missing, paper_missing, spec.command, "of that cell")
    footnotes += peer_paper_notes(paper_rows)
    return PaperTable(
        spec.name,
        spec.title,
        caption(spec.title, pick, notes),
        columns,
        frame,
        footnotes,
        meta={"metrics": spec.metrics, "command": spec.command, "teacher_rows": teacher_rows, "per_seed": per_seed},
    )
