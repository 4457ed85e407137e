"""The paper's tables (1-6) and the λ-search summary, rebuilt from what the sweeps measured.

Each trial's config is turned into *settings* (detector, schedule, role, method, DRKD switches, ...;
defaults filled in, settings that cannot matter blanked). A table row is a set of settings values, so
rows are found from configs rather than from the label a sweep gave them, and the paper's numbers
(:mod:`drkd.analysis.paper_numbers`, same vocabulary) are matched to our rows the same way.

Rules, so the tables are reproducible and defensible:
  * A cell uses only trials that reached ``train.epochs``; the caption counts the ones left out.
  * Distilled rows come from experiments of the table's own kind (``table3`` → Table 3). Teacher and
    baseline rows are the same models whichever sweep trained them, so they pool every experiment
    except λ searches; teacher rows match any schedule of that detector.
  * Δ is our row's mean minus our baseline row's mean (student, no distillation) in the same block.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from drkd.config import TWO_STAGE_ARCHS, DetectorConfig, DistillConfig, TrainSettings
from drkd.distill.drkd.params import DRKDParams, paper_lambdas
from drkd.analysis.experiment_store import COMPLETED, CONFIG_PREFIX, ExperimentData, Pick, pick_reports

METRICS = ("mAP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")
ARCH_NAMES = {"retinanet": "RetinaNet", "fcos": "FCOS", "fasterrcnn": "Faster R-CNN"}  # display order
METHODS = ("none", "fitnet", "nld", "mkd", "drkd")  # drkd.config.METHODS in Table 6's row order
METHOD_NAMES = {"none": "Baseline", "fitnet": "FitNet", "nld": "NLD", "mkd": "MKD", "drkd": "DRKD (ours)"}
TERMS = ("pr", "ir", "ins")
LAMBDAS = ("lambda_pr", "lambda_ir", "lambda_ins")
LAMBDA_SYMBOLS = {"lambda_pr": "λ1", "lambda_ir": "λ2", "lambda_ins": "λ3"}
MODULE_NAMES = {"non_local": "Non-Local", "glore": "GloRe (ours)"}
SEARCH_KIND = "lambda_search"
PICK_TEXT = {"last": "last reported epoch", "best": "best epoch by mAP"}

# settings name -> flat config key (the sweep contract)
CONFIG_KEYS = {
    "arch": "student.arch", "schedule": "train.schedule", "epochs": "train.epochs", "seed": "train.seed",
    "role": "role", "method": "distill.method",
    "pr": "distill.drkd.pr", "ir": "distill.drkd.ir", "ins": "distill.drkd.ins",
    "lambda_pr": "distill.drkd.lambda_pr", "lambda_ir": "distill.drkd.lambda_ir",
    "lambda_ins": "distill.drkd.lambda_ins", "instance_size": "distill.drkd.instance_size",
    "relation_filter": "distill.drkd.relation_filter", "pixel_module": "distill.drkd.pixel_module",
}
# A key missing from a trial config means the default of the config object the sweeps fill in.
_DRKD = DRKDParams()
CONFIG_DEFAULTS: dict[str, Any] = {
    "arch": DetectorConfig().arch, "schedule": TrainSettings().schedule, "role": "student",
    "method": DistillConfig().method, "pr": _DRKD.pr, "ir": _DRKD.ir, "ins": _DRKD.ins,
    "instance_size": _DRKD.instance_size, "relation_filter": _DRKD.relation_filter,
    "pixel_module": _DRKD.pixel_module,
}
ROW_DIMS_ALL = ("role", "method", "pr", "ir", "ins", "instance_size", "relation_filter", "pixel_module", *LAMBDAS)

Settings = dict[str, Any]


# --- settings -------------------------------------------------------------------------------------

def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def framework(arch: str) -> str:
    """'One-stage' or 'Two-stage'."""
    return "Two-stage" if arch in TWO_STAGE_ARCHS else "One-stage"


@functools.cache
def lambda_defaults(two_stage: bool) -> dict[str, float]:
    """The paper's λ1, λ2, λ3 (§4.5), as the DRKD distiller uses them."""
    return {dim: round(value, 8) for dim, value in zip(LAMBDAS, paper_lambdas(two_stage))}


def relevant(settings: Settings) -> Settings:
    """Blank the settings that cannot affect a run, so equal runs get equal keys."""
    s = dict(settings)
    if s.get("role") == "teacher":
        for dim in ROW_DIMS_ALL[1:]:
            s[dim] = None
        return s
    if s.get("method") != "drkd":
        for dim in ROW_DIMS_ALL[2:]:
            s[dim] = None
        return s
    if not s.get("pr"):
        s["pixel_module"] = s["lambda_pr"] = None
    if not s.get("ir"):
        s["relation_filter"] = s["lambda_ir"] = None
    if not s.get("ins"):
        s["lambda_ins"] = None
    if not (s.get("ir") or s.get("ins")):
        s["instance_size"] = None  # ROI size only matters to the instance terms
    return s


def settings_from_config(config: Mapping[str, Any]) -> Settings:
    """Settings of one trial from its flat config (keys as in params.json), defaults applied."""
    s: Settings = {}
    for dim, key in CONFIG_KEYS.items():
        value = config.get(key)
        s[dim] = CONFIG_DEFAULTS.get(dim) if _missing(value) else value
    s["arch"], s["schedule"] = str(s["arch"]), str(s["schedule"])
    s["role"], s["method"] = str(s["role"]), str(s["method"])
    s["pixel_module"] = str(s["pixel_module"])
    for dim in ("pr", "ir", "ins", "relation_filter"):
        s[dim] = _as_bool(s[dim])
    s["instance_size"] = int(s["instance_size"])
    for dim in ("epochs", "seed"):
        s[dim] = None if _missing(s[dim]) else int(s[dim])
    for dim in LAMBDAS:
        value = s[dim]
        s[dim] = lambda_defaults(s["arch"] in TWO_STAGE_ARCHS)[dim] if _missing(value) else round(float(value), 8)
    return relevant(s)


def paper_settings(row: Mapping[str, Any]) -> Settings:
    """Settings of one transcribed paper row (blank stays blank)."""
    s = {dim: (None if _missing(row.get(dim)) else row.get(dim)) for dim in ("arch", "schedule", *ROW_DIMS_ALL)}
    for dim in LAMBDAS:
        if s[dim] is not None:
            s[dim] = round(float(s[dim]), 8)
    if s["instance_size"] is not None:
        s["instance_size"] = int(s["instance_size"])
    return relevant(s)


def trial_results(data: ExperimentData, pick: Pick = "last") -> pd.DataFrame:
    """One row per trial: its status, the metrics of the picked report, and its settings."""
    picked = pick_reports(data.reports, pick)
    metric_cols = [c for c in ("epoch", *METRICS) if c in picked.columns]
    picked = picked[["experiment", "trial_id", *metric_cols]]
    merged = data.trials.merge(picked, on=["experiment", "trial_id"], how="left")
    config_cols = [c for c in merged.columns if c.startswith(CONFIG_PREFIX)]
    settings = [settings_from_config({c[len(CONFIG_PREFIX):]: row[c] for c in config_cols})
                for row in merged[config_cols].to_dict("records")]
    settings_frame = pd.DataFrame(settings, index=merged.index, dtype=object)
    for metric in METRICS:
        if metric not in merged.columns:
            merged[metric] = np.nan
    return pd.concat([merged.drop(columns=[c for c in settings_frame.columns if c in merged.columns]),
                      settings_frame], axis=1)


# --- table objects --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One displayed column. ``kind``: label | param | value | ours | paper | delta."""

    key: str
    header: str
    kind: str = "label"
    group: str = ""
    sub: str = ""


@dataclass
class PaperTable:
    """A built table: numeric ``frame`` in display order, how to show it, and its notes."""

    name: str
    title: str
    caption: str
    columns: list[Column]
    frame: pd.DataFrame
    footnotes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def metric_columns(metric: str) -> list[Column]:
    return [Column(metric, metric, "ours", metric, "ours"),
            Column(f"{metric}_paper", f"{metric} paper", "paper", metric, "paper"),
            Column(f"{metric}_delta", f"Δ{metric}", "delta", metric, "Δ")]


# --- labels ---------------------------------------------------------------------------------------

def _tick(s: Settings, dim: str) -> str:
    if s["role"] == "teacher" or s["method"] not in ("none", "drkd"):
        return "-"
    return "✓" if s.get(dim) else "×"


def switches(s: Settings) -> str:
    return "+".join(t.upper() for t in TERMS if s.get(t)) or "none"


def distillation(s: Settings, baseline: str = "Student") -> str:
    if s["role"] == "teacher":
        return "Teacher"
    if s["method"] == "none":
        return baseline
    if s["method"] == "drkd":
        return switches(s)
    return METHOD_NAMES.get(s["method"], s["method"])


def model(s: Settings) -> str:
    return f"{ARCH_NAMES.get(s['arch'], s['arch'])} ({s['schedule']})"


def framework_label(s: Settings) -> str:
    return f"{framework(s['arch'])} ({ARCH_NAMES.get(s['arch'], s['arch'])})"


def _student_model(s: Settings) -> str:
    if s["role"] == "teacher":
        return "Teacher"
    return "Student" if s["method"] in ("none", "drkd") else f"Student ({METHOD_NAMES.get(s['method'], s['method'])})"


def _pixel_module(s: Settings) -> str:
    if s["role"] == "teacher" or s["method"] != "drkd":
        return distillation(s)
    name = MODULE_NAMES.get(s["pixel_module"], str(s["pixel_module"]))
    return name if switches(s) == "PR" else f"{switches(s)}, {name}"


def _size(s: Settings) -> str:
    return "-" if s.get("instance_size") is None else f"{s['instance_size']}×{s['instance_size']}"


def _filter(s: Settings) -> str:
    return "-" if s.get("relation_filter") is None else ("✓" if s["relation_filter"] else "×")


def _method(s: Settings) -> str:
    return "Teacher" if s["role"] == "teacher" else METHOD_NAMES.get(s["method"], str(s["method"]))


_SWITCH_ORDER = [(True, False, False), (False, True, False), (True, True, False), (True, True, True)]
_METHOD_ORDER = {m: i for i, m in enumerate(METHODS)}


def _order(value: Any) -> tuple:
    return (0, 0) if value is None else (1, value)


def row_order(s: Settings) -> tuple:
    """The paper's row order: teacher, baseline, peers, then DRKD variants."""
    combo = tuple(bool(s.get(t)) for t in TERMS)
    combo_rank = _SWITCH_ORDER.index(combo) if combo in _SWITCH_ORDER else 10 + sum(b << i for i, b in enumerate(combo))
    module_rank = {None: 0, "non_local": 1, "glore": 2}.get(s.get("pixel_module"), 3)
    return (0 if s["role"] == "teacher" else 1,
            _METHOD_ORDER.get(s["method"], len(METHODS)), str(s["method"]), combo_rank, module_rank,
            str(s.get("pixel_module")), _order(s.get("instance_size")), _order(s.get("relation_filter")),
            *(_order(s.get(dim)) for dim in LAMBDAS))


# --- table specs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TableSpec:
    """What one of the paper's tables is made of."""

    name: str
    title: str
    row_dims: tuple[str, ...]
    labels: tuple[tuple[str, Callable[[Settings], str]], ...]
    metrics: tuple[str, ...] = ("mAP",)
    exact_schedule: bool = False  # paper blocks are matched on (arch, schedule), not arch alone
    all_methods: bool = False  # every method of ours is an expected row (Table 6)
    optional: bool = False  # built only when its sweep exists

    @property
    def command(self) -> str:
        return f"python sweeps/ablations.py {self.name}"


_CORE = ("role", "method", "pr", "ir", "ins")
SPECS: dict[str, TableSpec] = {spec.name: spec for spec in (
    TableSpec("table1", "Table 1: PR / IR / INS ablation, one-stage and two-stage", _CORE,
              (("Schedule", lambda s: s["schedule"]), ("Framework", framework_label), ("Model", _student_model),
               ("PR", lambda s: _tick(s, "pr")), ("IR", lambda s: _tick(s, "ir")), ("INS", lambda s: _tick(s, "ins"))),
              metrics=METRICS, exact_schedule=True),
    TableSpec("table2", "Table 2: pixel-relation module (GloRe vs non-local)", (*_CORE, "pixel_module"),
              (("Model", model), ("Distillation", _pixel_module)), optional=True),
    TableSpec("table3", "Table 3: instance feature size", (*_CORE, "instance_size"),
              (("Model", model), ("Distillation", lambda s: distillation(s, "-")), ("Size", _size))),
    TableSpec("table4", "Table 4: relation filter", (*_CORE, "relation_filter"),
              (("Model", model), ("Distillation", distillation), ("Filter", _filter))),
    TableSpec("table6", "Table 6: comparison with other distillation methods", ("role", "method"),
              (("Framework", framework_label), ("Method", _method)), metrics=METRICS, all_methods=True),
)}


# --- shared pieces --------------------------------------------------------------------------------

Record = dict[str, Any]


def _records(frame: pd.DataFrame) -> list[Record]:
    return [{k: (None if _missing(v) else v) for k, v in r.items()} for r in frame.to_dict("records")]


def _stats(values: Iterable[Any]) -> tuple[float, float, int]:
    clean = [float(v) for v in values if not _missing(v)]
    if not clean:
        return math.nan, math.nan, 0
    std = float(np.std(clean, ddof=1)) if len(clean) > 1 else math.nan
    return float(np.mean(clean)), std, len(clean)


def _done(trials: Iterable[Record]) -> list[Record]:
    return [t for t in trials if t["status"] == COMPLETED]


def _key(s: Mapping[str, Any], dims: Iterable[str]) -> tuple:
    return tuple(s.get(d) for d in dims)


def _is_reference(s: Mapping[str, Any]) -> bool:
    """Teacher and baseline rows: the same model whichever sweep trained it."""
    return s["role"] == "teacher" or s["method"] == "none"


def _reference_pool(trials: list[Record]) -> list[Record]:
    return [t for t in trials if t["kind"] != SEARCH_KIND and _is_reference(t)]


def _baseline_mean(pool: list[Record], arch: str, schedule: str, metric: str) -> float:
    return _stats(t[metric] for t in _done(pool) if t["role"] == "student" and t["method"] == "none"
                  and t["arch"] == arch and t["schedule"] == schedule)[0]


def _epochs_note(used: list[Record]) -> str:
    pairs = sorted({(t["schedule"], int(t["target_epochs"])) for t in used if t.get("target_epochs") is not None})
    return ("Our schedules: " + ", ".join(f"{s} = {e} epochs" for s, e in pairs) + ".") if pairs else ""


def _excluded_note(used: list[Record]) -> str:
    bad = [t for t in used if t["status"] != COMPLETED]
    if not bad:
        return "Every matching trial reached train.epochs."
    cells = len({t["_cell"] for t in bad})
    statuses = ", ".join(sorted({t["status"] for t in bad}))
    return f"{len(bad)} trial(s) in {cells} cell(s) did not reach train.epochs ({statuses}) and are left out."


def _caption(title: str, pick: Pick, notes: Iterable[str]) -> str:
    parts = [title + ".", f"Value per trial: {PICK_TEXT[pick]}.",
             "Cells: our mean ± std (n runs), the paper's value, and Δ = ours − our baseline row "
             "(student without distillation, same block)."]
    return " ".join(parts + [n for n in notes if n])


def _missing_footnotes(frame: pd.DataFrame, ours: Sequence[str], paper: Sequence[str], command: str,
                       what: str = "that cell") -> list[str]:
    notes = []
    if frame.empty or frame[list(ours)].isna().any().any():
        notes.append(f"— in an 'ours' column: no run of {what} reached train.epochs; `{command}` fills it.")
    if frame.empty or frame[list(paper)].isna().any().any():
        notes.append("— in a 'paper' column: the paper reports no such value.")
    return notes


def _block_order(paper_blocks: Sequence[tuple], ours: Iterable[tuple]) -> list[tuple]:
    arch_rank = {a: i for i, a in enumerate(ARCH_NAMES)}
    rest = sorted(set(ours) - set(paper_blocks), key=lambda b: (arch_rank.get(b[0], 99), b[0], str(b[1])))
    return list(paper_blocks) + rest


def _metric_record(metric: str, done: list[Record], base_mean: float, paper: float) -> Record:
    mean, std, n = _stats(t[metric] for t in done)
    return {metric: mean, f"{metric}_std": std, f"{metric}_n": n, f"{metric}_paper": paper,
            f"{metric}_delta": mean - base_mean}


def _frame(records: list[Record], columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=list(columns))
    for col in columns:
        if col.endswith("_n"):
            frame[col] = frame[col].astype("Int64")
    return frame.reset_index(drop=True)


def _unique_trials(cells: Iterable[list[Record]]) -> list[Record]:
    seen, out = set(), []
    for cell in cells:
        for t in cell:
            if (t["experiment"], t["trial_id"]) not in seen:
                seen.add((t["experiment"], t["trial_id"]))
                out.append(t)
    return out


# --- Tables 1-4 and 6 -----------------------------------------------------------------------------

def build_table(spec: TableSpec, trials: pd.DataFrame, paper: pd.DataFrame, pick: Pick = "last") -> PaperTable:
    """One of the paper's tables, in its layout, from :func:`trial_results` and the paper numbers."""
    paper_rows = [r for r in _records(paper[paper["table"] == spec.name])
                  if r["arch"] in ARCH_NAMES and (r["method"] is None or r["method"] in METHODS)]
    for r in paper_rows:
        r["_settings"] = paper_settings(r)
    records_all = _records(trials)
    own = [t for t in records_all if t["kind"] == spec.name]
    pool = _reference_pool(records_all)

    own_blocks = {(t["arch"], t["schedule"]) for t in own}
    paper_blocks: list[tuple] = []
    for r in paper_rows:
        same_arch = sorted(b for b in own_blocks if b[0] == r["arch"])
        for block in ([(r["arch"], r["schedule"])] if spec.exact_schedule or not same_arch else same_arch):
            if block not in paper_blocks:
                paper_blocks.append(block)

    rows: list[Record] = []
    used: list[list[Record]] = []
    for arch, schedule in _block_order(paper_blocks, own_blocks):
        matching_paper = [r for r in paper_rows
                          if r["arch"] == arch and (not spec.exact_schedule or r["schedule"] == schedule)]
        expected: dict[tuple, Settings] = {}
        for r in matching_paper:
            expected.setdefault(_key(r["_settings"], spec.row_dims), r["_settings"])
        if spec.all_methods:
            for s in [relevant({"role": "teacher"})] + [
                    relevant({"role": "student", "method": m, **{t: True for t in TERMS}}) for m in METHODS]:
                expected.setdefault(_key(s, spec.row_dims), s)
        cells: dict[tuple, list[Record]] = {}
        for t in own:
            if (t["arch"], t["schedule"]) == (arch, schedule) and not _is_reference(t):
                cells.setdefault(_key(t, spec.row_dims), []).append(t)
                expected.setdefault(_key(t, spec.row_dims), t)
        for t in pool:  # reference runs fill expected rows, never add rows
            key = _key(t, spec.row_dims)
            if t["arch"] == arch and (t["schedule"] == schedule or t["role"] == "teacher") and key in expected:
                cells.setdefault(key, []).append(t)
        for key in sorted(expected, key=lambda k: row_order(expected[k])):
            label_settings = {**expected[key], "arch": arch, "schedule": schedule}
            row: Record = {header: fn(label_settings) for header, fn in spec.labels}
            cell = cells.get(key, [])
            used.append([{**t, "_cell": (arch, schedule, key)} for t in cell])
            for metric in spec.metrics:
                paper_value = next((r["value"] for r in matching_paper if r["metric"] == metric
                                    and _key(r["_settings"], spec.row_dims) == key), math.nan)
                row.update(_metric_record(metric, _done(cell), _baseline_mean(pool, arch, schedule, metric),
                                          paper_value))
            rows.append(row)

    columns = [Column(h, h) for h, _ in spec.labels] + [c for m in spec.metrics for c in metric_columns(m)]
    frame = _frame(rows, [c.key for c in columns[:len(spec.labels)]]
                   + [f"{m}{x}" for m in spec.metrics for x in ("", "_std", "_n", "_paper", "_delta")])
    used_trials = _unique_trials(used)
    notes = [_excluded_note(used_trials), _epochs_note(used_trials)]
    if any(t["role"] == "teacher" for t in used_trials):
        notes.append("Teacher rows take any teacher run of that detector, whatever its schedule.")
    notes.append("Paper: 2x schedule (24 epochs); its two-stage teacher is Cascade Mask R-CNN (RX101)."
                 if spec.name == "table6" else "" if spec.exact_schedule else "Paper: 1x schedule (12 epochs).")
    footnotes = _missing_footnotes(frame, spec.metrics, [f"{m}_paper" for m in spec.metrics], spec.command)
    return PaperTable(spec.name, spec.title, _caption(spec.title, pick, notes), columns, frame, footnotes,
                      meta={"metrics": spec.metrics, "command": spec.command})


# --- Table 5 --------------------------------------------------------------------------------------

def _panel_members(block_trials: list[Record], lam: str, defaults: Mapping[str, float]) -> list[Record]:
    term = TERMS[LAMBDAS.index(lam)]
    return [t for t in block_trials if t[term] and all(
        t[o] is None or abs(t[o] - defaults[o]) < 1e-9 for o in LAMBDAS if o != lam)]


def build_table5(trials: pd.DataFrame, paper: pd.DataFrame, pick: Pick = "last") -> PaperTable:
    """λ sensitivity in the paper's three column pairs (λ1 | mAP | λ2 | mAP | λ3 | mAP).

    A run belongs to the λk panel when term k is on and every other active λ is at its default.
    If a panel holds several switch sets (e.g. PR-only runs, and full-DRKD runs at default λs), the
    one swept over most λ values is the panel's; the column header names it.
    """
    name, command = "table5", "python sweeps/ablations.py table5"
    records_all = _records(trials)
    own = [t for t in records_all if t["kind"] == name and t["role"] == "student" and t["method"] == "drkd"]
    pool = _reference_pool(records_all)
    paper_rows = _records(paper[paper["table"] == name])
    blocks = _block_order([], {(t["arch"], t["schedule"]) for t in own}) or [("retinanet", "1x")]

    rows: list[Record] = []
    used: list[list[Record]] = []
    chosen_switches: dict[str, set[str]] = {lam: set() for lam in LAMBDAS}
    for arch, schedule in blocks:
        in_block = [t for t in own if (t["arch"], t["schedule"]) == (arch, schedule)]
        panels = {}
        for lam in LAMBDAS:
            by_switch: dict[str, list[Record]] = {}
            for t in _panel_members(in_block, lam, lambda_defaults(arch in TWO_STAGE_ARCHS)):
                by_switch.setdefault(switches(t), []).append(t)
            chosen = max(sorted(by_switch), default=None,
                         key=lambda sw: (len({t[lam] for t in by_switch[sw]}), len(by_switch[sw])))
            members = by_switch.get(chosen, [])
            if chosen:
                chosen_switches[lam].add(chosen)
            used.append([{**t, "_cell": (arch, schedule, lam, t[lam])} for t in members])
            paper_vals = {r[lam]: r["value"] for r in paper_rows if r["arch"] == arch and r[lam] is not None}
            panels[lam] = (sorted({t[lam] for t in members} | set(paper_vals)), members, paper_vals)
        for i in range(max(len(values) for values, _, _ in panels.values())):
            row: Record = {"Model": model({"arch": arch, "schedule": schedule})}
            for lam, (values, members, paper_vals) in panels.items():
                if i >= len(values):
                    row[lam] = math.nan
                    continue
                value = values[i]
                metric = _metric_record("mAP", _done(t for t in members if t[lam] == value),
                                        _baseline_mean(pool, arch, schedule, "mAP"),
                                        paper_vals.get(value, math.nan))
                row.update({lam: value, **{f"{lam}_{k}": v for k, v in metric.items()}})
            rows.append(row)

    columns = [Column("Model", "Model")]
    for lam in LAMBDAS:
        sym = LAMBDA_SYMBOLS[lam]
        group = sym + (f" [{', '.join(sorted(chosen_switches[lam]))}]" if chosen_switches[lam] else "")
        columns += [Column(lam, group, "param", group, "λ"),
                    Column(f"{lam}_mAP", f"{sym} mAP", "ours", group, "mAP"),
                    Column(f"{lam}_mAP_paper", f"{sym} paper", "paper", group, "paper"),
                    Column(f"{lam}_mAP_delta", f"{sym} ΔmAP", "delta", group, "Δ")]
    frame = _frame(rows, ["Model"] + [f"{lam}{x}" for lam in LAMBDAS
                                      for x in ("", "_mAP", "_mAP_std", "_mAP_n", "_mAP_paper", "_mAP_delta")])
    used_trials = _unique_trials(used)
    notes = [_excluded_note(used_trials), _epochs_note(used_trials),
             "A run counts for λk when term k is on and the other active λs are at their defaults; "
             "[...] names the switch set of our runs in that panel. Paper: RetinaNet, 1x; it does not state "
             "the switch sets (its λ1 / λ2 / λ3 optima equal Table 1's PR / IR / PR+IR+INS rows)."]
    in_range = frame[[lam for lam in LAMBDAS]].notna().to_numpy()
    ours_missing = (frame[[f"{lam}_mAP" for lam in LAMBDAS]].isna().to_numpy() & in_range).any()
    paper_missing = (frame[[f"{lam}_mAP_paper" for lam in LAMBDAS]].isna().to_numpy() & in_range).any()
    footnotes = []
    if ours_missing:
        footnotes.append(f"— in an 'ours' column: no run at that λ reached train.epochs; `{command}` fills it.")
    if paper_missing:
        footnotes.append("— in a 'paper' column: the paper did not try that λ.")
    title = "Table 5: λ sensitivity"
    return PaperTable(name, title, _caption(title, pick, notes), columns, frame, footnotes,
                      meta={"metrics": ("mAP",), "command": command, "blocks": blocks,
                            "switches": {lam: sorted(sw) for lam, sw in chosen_switches.items()}})


# --- λ search summary -----------------------------------------------------------------------------

def _short(key: str) -> str:
    key = key[len(CONFIG_PREFIX):] if key.startswith(CONFIG_PREFIX) else key
    for prefix in ("distill.drkd.", "distill.", "train.", "student."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def search_summary(trials: pd.DataFrame, experiment: str, pick: Pick = "last") -> PaperTable:
    """All trials of one λ search, best first: status, the settings it varied, and metrics."""
    exp = trials[trials["experiment"] == experiment].copy()
    config_cols = [c for c in exp.columns if c.startswith(CONFIG_PREFIX)
                   and exp[c].astype(str).nunique(dropna=False) > 1]
    exp["_rank_value"] = exp["mAP"].astype(float).fillna(-math.inf)
    exp = exp.sort_values(["_rank_value", "trial_id"], ascending=[False, True], kind="stable")
    frame = pd.DataFrame({
        "Rank": range(1, len(exp) + 1),
        "Trial": exp["trial_id"].astype(str).tolist(),
        "Status": exp["status"].tolist(),
        "Epochs": [f"{int(e)}/{'?' if _missing(t) else int(t)}" for e, t in zip(exp["last_epoch"], exp["target_epochs"])],
        **{_short(c): exp[c].tolist() for c in config_cols},
        **{m: exp[m].astype(float).tolist() for m in METRICS},
    })
    columns = ([Column(c, c) for c in ("Rank", "Trial", "Status", "Epochs")]
               + [Column(_short(c), _short(c), "param") for c in config_cols]
               + [Column(m, m, "value") for m in METRICS])
    counts = exp["status"].value_counts()
    count_text = ", ".join(f"{int(counts[s])} {s}" for s in sorted(counts.index))
    best = exp.iloc[0] if len(exp) else None
    best_text = (f" Best: {best['trial_id']} with mAP {best['mAP']:.2f} ({best['status']})."
                 if best is not None and not _missing(best["mAP"]) else "")
    title = f"λ search summary: {experiment}"
    caption = (f"{title}. Value per trial: {PICK_TEXT[pick]}. {len(exp)} trial(s): {count_text}."
               f"{best_text} Early-stopped trials were stopped by the scheduler before train.epochs; "
               f"their metrics are from the epoch they reached.")
    return PaperTable(f"search_{experiment}", title, caption, columns, frame.reset_index(drop=True),
                      meta={"experiment": experiment})


def build_all(data: ExperimentData, paper: pd.DataFrame, pick: Pick = "last") -> list[PaperTable]:
    """Every table the experiments support, in the paper's order, then one summary per λ search."""
    trials = trial_results(data, pick)
    kinds = {e.kind for e in data.experiments}
    tables = []
    for name in ("table1", "table2", "table3", "table4", "table5", "table6"):
        if name == "table5":
            tables.append(build_table5(trials, paper, pick))
        elif not SPECS[name].optional or name in kinds:
            tables.append(build_table(SPECS[name], trials, paper, pick))
    for exp in data.experiments:
        if exp.kind == SEARCH_KIND:
            tables.append(search_summary(trials, exp.name, pick))
    return tables
