"""analysis/make_tables.py on experiment directories made by a real (tiny) Ray Tune run.

The ``tiny_sweeps`` fixture is the only place that knows how the experiments were produced: it hands
the tests a results root and, per experiment, what each trial reported (read back through Ray's own
``ResultGrid``). Swapping it for a fixture that runs the real tiny DRKD sweep needs no other change.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from drkd.analysis.experiment_store import load_experiments
from drkd.analysis.paper_numbers import load_paper_numbers
from drkd.analysis.paper_tables import build_all, trial_results
from drkd.analysis.paper_tables.build import recorded_teachers
from drkd.analysis.paper_tables.table_spec import PaperTable
from drkd.analysis.report import make_report

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "analysis"))
import make_tables  # noqa: E402  (the entry script)
from table6_labels import METHOD_LABEL  # noqa: E402

EPOCHS = 3
SEARCH_EPOCHS = 4
METRICS = ("mAP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")
FRAMEWORK = {"retinanet": "One-stage (RetinaNet)", "fasterrcnn": "Two-stage (Faster R-CNN)"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PEER_GAIN = {"fitnet": 0.5, "nld": 1.0, "mkd": 1.2, "cwd": 0.7, "pkd": 0.8, "mgd": 0.9, "fgd": 1.1}
# The teachers the distillation runs learn from, and the mAP each one's (single) evaluation gives:
# every RetinaNet student shares one checkpoint (the λ search's trials name none: their base config
# holds it); the Faster R-CNN students of Table 1 and Table 6 learn from two different teachers.
RETINA_CKPT, FRCNN_CKPT = "/teachers/retinanet.pt", "/teachers/fasterrcnn.pt"
FRCNN_WEIGHTS = "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"
TEACHER_MAP = {RETINA_CKPT: 27.25, FRCNN_CKPT: 30.5, FRCNN_WEIGHTS: 37.0}
DEFAULT_TEACHER = {"retinanet": RETINA_CKPT, "fasterrcnn": FRCNN_CKPT}


# --- the tiny sweep ------------------------------------------------------------------------------


def fake_report(config: dict[str, Any], epoch: int) -> dict[str, float]:
    """Metrics a trial reports at ``epoch``: a deterministic function of its config."""
    arch, epochs = config["student.arch"], config["train.epochs"]
    pr, ir, ins = (bool(config.get(f"distill.drkd.{t}")) for t in ("pr", "ir", "ins"))
    if config["role"] == "teacher":
        gain = 6.0
    elif config["distill.method"] == "none":
        gain = 0.0
    elif config["distill.method"] in PEER_GAIN:
        gain = PEER_GAIN[config["distill.method"]]
    else:
        size = config.get("distill.drkd.instance_size") or 3
        gain = 1.5 * pr + 0.6 * ir + 0.3 * ins + {1: 0.0, 3: 0.4, 5: 0.2}[size]
        gain -= 200 * abs((config.get("distill.drkd.lambda_pr") or 0.004) - 0.004)
        gain += 100 * ((config.get("distill.drkd.lambda_ins") or 0.006) - 0.006)
    final = {"retinanet": 20.0, "fasterrcnn": 22.0}[arch] + gain + 0.37 * config["train.seed"]
    m = final - 1.5 * (epochs - epoch)
    if arch == "fasterrcnn" and epoch == epochs:
        m -= 2.0  # so the best epoch is not the last one
    terms = {
        f"loss_{t}": 0.5 / epoch + 0.1 * k
        for k, t in enumerate(("pr", "ir", "ins"))
        if (pr, ir, ins)[k] and config["distill.method"] == "drkd" and config["role"] == "student"
    }
    loss_det = 2.0 / epoch
    teacher = (
        {}
        if config["role"] == "teacher" or config["distill.method"] == "none"
        else {f"teacher_{k}": v for k, v in teacher_metrics(teacher_of(config)).items()}
    )
    return {
        "epoch": epoch,
        **coco_metrics(m, 0.5 * ir, -0.2 * pr),
        **teacher,
        "loss_det": loss_det,
        "loss_total": loss_det + 0.004 * sum(terms.values()),
        **terms,
        "lr": 0.02 if epoch < epochs else 0.002,
        "epoch_time_s": 1.0,
    }


def coco_metrics(m: float, small: float = 0.0, large: float = 0.0) -> dict[str, float]:
    return {
        "mAP": m,
        "AP50": m + 18.3,
        "AP75": m + 1.2,
        "AP_S": m - 15 + small,
        "AP_M": m + 3.1,
        "AP_L": m + 11.7 + large,
    }


def teacher_of(config: dict[str, Any]) -> str:
    """The teacher a distillation run learns from: its config's, else its sweep's base config's."""
    return config.get("teacher.checkpoint") or config.get("teacher.weights") or DEFAULT_TEACHER[config["student.arch"]]


def teacher_metrics(teacher: str) -> dict[str, float]:
    """The teacher's evaluation, which every run distilling from it reports as teacher_<metric>."""
    return coco_metrics(TEACHER_MAP[teacher], 0.3, -0.4)


def tiny_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    for epoch in range(1, config["train.epochs"] + 1):
        tune.report(fake_report(config, epoch))


def student(arch: str, pr: bool, ir: bool, ins: bool, seed: int, size: int = 3, **extra: Any) -> dict[str, Any]:
    cell = "+".join(t for t, on in (("PR", pr), ("IR", ir), ("INS", ins)) if on)
    return {
        "cell": cell,
        "role": "student",
        "student.arch": arch,
        "train.schedule": "1x",
        "train.epochs": EPOCHS,
        "train.seed": seed,
        "distill.method": "drkd",
        "distill.drkd.pr": pr,
        "distill.drkd.ir": ir,
        "distill.drkd.ins": ins,
        "distill.drkd.instance_size": size,
        "teacher.arch": arch,
        "teacher.checkpoint": DEFAULT_TEACHER[arch],
        **extra,
    }


def baseline(arch: str, seed: int, role: str = "student") -> dict[str, Any]:
    return {
        "cell": "teacher" if role == "teacher" else "baseline",
        "role": role,
        "student.arch": arch,
        "train.schedule": "1x",
        "train.epochs": EPOCHS,
        "train.seed": seed,
        "distill.method": "none",
    }


SWITCHES = [(True, False, False), (False, True, False), (True, True, False), (True, True, True)]
TABLE1 = (
    [baseline("retinanet", s) for s in (0, 1)]
    + [student("retinanet", *sw, seed=s) for sw in SWITCHES for s in (0, 1)]
    + [baseline("fasterrcnn", s) for s in (0, 1)]
    + [student("fasterrcnn", True, True, True, seed=s) for s in (0, 1)]
    + [baseline("retinanet", 0, role="teacher")]
)
TABLE3 = (
    [student("retinanet", False, True, False, seed=s, size=k) for k in (1, 5) for s in (0, 1)]
    + [student("retinanet", True, True, True, seed=s, size=1) for s in (0, 1)]
    + [student("retinanet", True, True, True, seed=0, size=5)]
)
# λ1 swept with PR only and λ2 with IR only (as the paper's optima suggest), λ3 with full DRKD
TABLE5 = (
    [student("retinanet", True, False, False, seed=0, **{"distill.drkd.lambda_pr": v}) for v in (0.002, 0.004, 0.006)]
    + [student("retinanet", False, True, False, seed=0, **{"distill.drkd.lambda_ir": v}) for v in (0.002, 0.004)]
    + [student("retinanet", True, True, True, seed=0, **{"distill.drkd.lambda_ins": v}) for v in (0.006, 0.008)]
)
# Table 6: each method on both frameworks at 2x; RetinaNet over two seeds, Faster R-CNN over one.
# Its Faster R-CNN students distil from torchvision's COCO Faster R-CNN, not Table 1's teacher.
TABLE6_TEACHER = {
    "retinanet": {"teacher.arch": "retinanet", "teacher.checkpoint": RETINA_CKPT},
    "fasterrcnn": {"teacher.arch": "fasterrcnn", "teacher.checkpoint": None, "teacher.weights": FRCNN_WEIGHTS},
}
TABLE6 = [
    {
        **(student(arch, True, True, True, seed=s) if m == "drkd" else baseline(arch, s)),
        "cell": m,
        "distill.method": m,
        "train.schedule": "2x",
        **({} if m == "none" else TABLE6_TEACHER[arch]),
    }
    for arch, seeds in (("retinanet", (0, 1)), ("fasterrcnn", (0,)))
    for m in ("none", "fitnet", "nld", "mkd", "cwd", "pkd", "mgd", "fgd", "drkd")
    for s in seeds
]
# Run one at a time under ASHA: the second trial is worse than the first at the first rung, so stopped.
SEARCH = [
    {
        "student.arch": "retinanet",
        "train.epochs": SEARCH_EPOCHS,
        "train.seed": 0,
        "role": "student",
        "distill.method": "drkd",
        "distill.drkd.lambda_pr": lp,
        "distill.drkd.lambda_ins": li,
    }
    for lp, li in ((0.004, 0.006), (0.02, 0.006), (0.004, 0.008))
]


@dataclass
class ReportedTrial:
    trial_id: str
    trial_dir: str
    config: dict[str, Any]
    history: pd.DataFrame  # one row per report, as Ray read it back


@dataclass
class SweepRun:
    root: Path
    experiments: dict[str, list[ReportedTrial]]  # experiment name -> its trials


def _run_experiment(
    root: Path,
    name: str,
    kind: str,
    variants: list[dict[str, Any]],
    search: bool = False,
    base_config: dict[str, Any] | None = None,
) -> list[ReportedTrial]:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    keys = sorted(set().union(*variants))
    space: dict[str, Any] = {"variant": tune.grid_search(list(range(len(variants))))}
    for key in keys:  # flat dotted keys, as the sweeps write them
        space[key] = tune.sample_from(lambda config, key=key: variants[config["variant"]].get(key))
    scheduler = (
        ASHAScheduler(
            time_attr="training_iteration",
            metric="mAP",
            mode="max",
            max_t=SEARCH_EPOCHS,
            grace_period=1,
            reduction_factor=2,
        )
        if search
        else None
    )
    grid = tune.Tuner(
        tiny_trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            scheduler=scheduler, reuse_actors=True, max_concurrent_trials=1 if search else None
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(root), verbose=0),
    ).fit()
    assert not grid.errors, grid.errors
    (root / name / "drkd_experiment.json").write_text(
        json.dumps(
            {
                "kind": kind,
                "name": name,
                "metric": "mAP",
                "mode": "max",
                "created": "2026-01-01T00:00:00",
                "command": f"python sweeps/ablations.py {kind}",
                **({"base_config": base_config} if base_config is not None else {}),
            }
        )
    )
    return [ReportedTrial(r.metrics["trial_id"], Path(r.path).name, dict(r.config), r.metrics_dataframe) for r in grid]


@pytest.fixture(scope="session")
def tiny_sweeps(tmp_path_factory: pytest.TempPathFactory) -> SweepRun:
    """Five experiments from a real local Ray Tune run (Ray started once per session)."""
    import ray
    import ray.cloudpickle

    from drkd.sweeps.ray_instance import start_private_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
    root = tmp_path_factory.mktemp("results")
    start_private_ray(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        experiments = {
            "ablation_table1": _run_experiment(root, "ablation_table1", "table1", TABLE1),
            "ablation_table3": _run_experiment(root, "ablation_table3", "table3", TABLE3),
            "ablation_table5": _run_experiment(root, "ablation_table5", "table5", TABLE5),
            "ablation_table6": _run_experiment(root, "ablation_table6", "table6", TABLE6),
            "lambda_search": _run_experiment(root, "lambda_search", "lambda_search", SEARCH, search=True),
        }
    finally:
        ray.shutdown()
    return SweepRun(root, experiments)


# --- what the tests expect, computed independently of drkd.* -------------------------------------


def table1_label(config: dict[str, Any]) -> tuple[str, ...]:
    fw = FRAMEWORK[config["student.arch"]]
    if config["role"] == "teacher":
        return ("1x", fw, "Teacher", "-", "-", "-")
    if config["distill.method"] == "none":
        return ("1x", fw, "Student", "×", "×", "×")
    return ("1x", fw, "Student", *("✓" if config[f"distill.drkd.{t}"] else "×" for t in ("pr", "ir", "ins")))


def expected_cells(trials: list[ReportedTrial], label, pick: str = "last") -> dict[tuple, dict[str, tuple]]:
    """label -> metric -> (mean, std or None, n) over the trials that finished all epochs."""
    groups: dict[tuple, list[pd.Series]] = {}
    for t in trials:
        if t.history["epoch"].max() < t.config["train.epochs"]:
            continue
        row = t.history.iloc[-1] if pick == "last" else t.history.loc[t.history["mAP"].idxmax()]
        groups.setdefault(label(t.config), []).append(row)
    out = {}
    for key, rows in groups.items():
        out[key] = {
            m: (
                statistics.mean(r[m] for r in rows),
                statistics.stdev(r[m] for r in rows) if len(rows) > 1 else None,
                len(rows),
            )
            for m in METRICS
        }
    return out


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"PR": str, "IR": str, "INS": str}, keep_default_na=False, na_values=[""])


def row_of(frame: pd.DataFrame, **labels: str) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for col, value in labels.items():
        mask &= frame[col] == value
    assert mask.sum() == 1, f"{mask.sum()} rows match {labels}"
    return frame[mask].iloc[0]


def assert_cell(row: pd.Series, metric: str, expected: tuple) -> None:
    mean, std, n = expected
    assert row[metric] == pytest.approx(mean, abs=1e-3)
    assert int(row[f"{metric}_n"]) == n
    if std is None:
        assert pd.isna(row[f"{metric}_std"])
    else:
        assert row[f"{metric}_std"] == pytest.approx(std, abs=1e-3)


T1_COLS = ["Schedule", "Framework", "Model", "PR", "IR", "INS"]


# --- reports -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(tiny_sweeps: SweepRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_report([tiny_sweeps.root], tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def truncated(tiny_sweeps: SweepRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy made to look interrupted; returns (report path, names of the damaged trials)."""
    root = tmp_path_factory.mktemp("interrupted") / "results"
    shutil.copytree(tiny_sweeps.root, root)
    trials = {table1_label(t.config) + (t.config["train.seed"],): t for t in tiny_sweeps.experiments["ablation_table1"]}
    exp = root / "ablation_table1"
    cut = trials[("1x", FRAMEWORK["retinanet"], "Student", "✓", "✓", "×", 0)].trial_dir
    gone = trials[("1x", FRAMEWORK["retinanet"], "Student", "✓", "✓", "×", 1)].trial_dir
    torn = trials[("1x", FRAMEWORK["retinanet"], "Student", "×", "×", "×", 0)].trial_dir
    lines = (exp / cut / "result.json").read_text().splitlines(keepends=True)
    (exp / cut / "result.json").write_text("".join(lines[:-1]))  # last report never written
    (exp / gone / "result.json").unlink()  # crashed before its first report
    lines = (exp / torn / "result.json").read_text().splitlines(keepends=True)
    (exp / torn / "result.json").write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    for state in exp.glob("experiment_state-*.json"):
        state.unlink()  # a crash before Tune saved its state
    (root / "scratch").mkdir()
    (root / "empty_experiment").mkdir()
    (root / "empty_experiment" / "drkd_experiment.json").write_text(
        json.dumps({"kind": "table4", "name": "empty_experiment"})
    )
    out = make_report([root], tmp_path_factory.mktemp("interrupted_report"))
    return out, {"cut": cut, "gone": gone, "torn": torn}


def test_table1_rows_columns_and_values(tiny_sweeps: SweepRun, report: Path) -> None:
    frame = read_csv(report.parent / "tables" / "table1.csv")
    assert list(frame.columns[:6]) == T1_COLS
    assert list(frame.columns[6:11]) == ["mAP", "mAP_std", "mAP_n", "mAP_paper", "mAP_delta"]
    assert len(frame.columns) == 6 + 8 * len(METRICS)  # ours, std, n, paper, Δ, Δ's interval (lo, hi, paired)
    with_interval = frame[frame["mAP_ci_lo"].notna()]
    assert len(with_interval) > 0  # rows with several seeds against a baseline with several
    assert (with_interval["mAP_ci_lo"] <= with_interval["mAP_delta"] + 1e-9).all()
    assert (with_interval["mAP_delta"] <= with_interval["mAP_ci_hi"] + 1e-9).all()
    # the paper's 17 rows: two one-stage schedules and one two-stage block; at 2x only the baseline
    # has runs, and they come from the table6 sweep (reference rows are pooled across sweeps)
    assert len(frame) == 17
    assert frame["Schedule"].tolist().count("2x") == 5
    base_2x = expected_cells(
        [
            t
            for t in tiny_sweeps.experiments["ablation_table6"]
            if t.config["distill.method"] == "none" and t.config["student.arch"] == "retinanet"
        ],
        lambda c: "base",
    )["base"]
    assert_cell(row_of(frame, Schedule="2x", PR="×", IR="×", INS="×"), "mAP", base_2x["mAP"])
    assert (
        frame.loc[(frame["Schedule"] == "2x") & (frame["PR"] + frame["IR"] + frame["INS"] != "×××"), "mAP"].isna().all()
    )
    expected = expected_cells(tiny_sweeps.experiments["ablation_table1"], table1_label)
    assert len(expected) == 8  # teacher, 5 one-stage students, 2 two-stage students
    for key, metrics in expected.items():
        if key[2] == "Teacher":
            continue  # the teacher row shows the recorded teacher, not this run (test_teacher_rows_*)
        row = row_of(frame, **dict(zip(T1_COLS, key)))
        for metric in METRICS:
            assert_cell(row, metric, metrics[metric])
        base = expected[("1x", key[1], "Student", "×", "×", "×")]["mAP"][0]
        assert row["mAP_delta"] == pytest.approx(metrics["mAP"][0] - base, abs=1e-3)
    one_stage = dict(Schedule="1x", Framework=FRAMEWORK["retinanet"])
    assert row_of(frame, **one_stage, Model="Student", PR="✓", IR="✓", INS="×")["mAP_paper"] == 38.4
    assert row_of(frame, **one_stage, Model="Teacher")["AP_L_paper"] == 54.0
    assert (
        row_of(frame, Schedule="2x", Framework=FRAMEWORK["retinanet"], Model="Student", PR="✓", IR="✓", INS="✓")[
            "AP_S_paper"
        ]
        == 23.4
    )
    two_stage_ir = row_of(
        frame, Schedule="1x", Framework=FRAMEWORK["fasterrcnn"], Model="Student", PR="×", IR="✓", INS="×"
    )
    assert pd.isna(two_stage_ir["mAP"]) and two_stage_ir["mAP_paper"] == 38.2
    markdown = (report.parent / "tables" / "table1.md").read_text()
    assert "Value per trial: last reported epoch" in markdown
    assert "`python sweeps/ablations.py table1` fills it" in markdown
    assert "| — | 38.2 | — |" in markdown


def test_table3_pools_baseline_and_marks_missing(tiny_sweeps: SweepRun, report: Path) -> None:
    frame = pd.read_csv(report.parent / "tables" / "table3.csv", keep_default_na=False, na_values=[""])
    assert list(frame.columns[:3]) == ["Model", "Distillation", "Size"]
    assert list(zip(frame["Distillation"], frame["Size"])) == [
        ("-", "-"),
        ("IR", "1×1"),
        ("IR", "3×3"),
        ("IR", "5×5"),
        ("PR+IR+INS", "1×1"),
        ("PR+IR+INS", "3×3"),
        ("PR+IR+INS", "5×5"),
    ]

    def size_label(c):
        return (
            "PR+IR+INS" if c["distill.drkd.pr"] else "IR",
            f"{c['distill.drkd.instance_size']}×{c['distill.drkd.instance_size']}",
        )

    expected = expected_cells(tiny_sweeps.experiments["ablation_table3"], size_label)
    for (dist, size), metrics in expected.items():
        assert_cell(row_of(frame, Distillation=dist, Size=size), "mAP", metrics["mAP"])
    assert int(row_of(frame, Distillation="PR+IR+INS", Size="5×5")["mAP_n"]) == 1
    base = expected_cells(tiny_sweeps.experiments["ablation_table1"], table1_label)[
        ("1x", FRAMEWORK["retinanet"], "Student", "×", "×", "×")
    ]
    assert_cell(row_of(frame, Distillation="-"), "mAP", base["mAP"])  # pooled from the table1 sweep
    assert pd.isna(row_of(frame, Distillation="IR", Size="3×3")["mAP"])
    assert row_of(frame, Distillation="IR", Size="3×3")["mAP_paper"] == 36.9
    markdown = (report.parent / "tables" / "table3.md").read_text()
    assert "| RetinaNet (1x) | IR | 3×3 | — | 36.9 | — |" in markdown
    assert "`python sweeps/ablations.py table3`" in markdown


def test_other_tables_and_search_summary(tiny_sweeps: SweepRun, report: Path) -> None:
    tables = report.parent / "tables"
    for name in ("table4", "table5"):
        assert f"`python sweeps/ablations.py {name}`" in (tables / f"{name}.md").read_text()
    # every Table 6 cell has runs (its teacher rows: the teachers its students recorded) but the
    # inheriting rows the peers' papers publish: the tiny teacher's FPN is wider, so none ran
    t6 = pd.read_csv(tables / "table6.csv", keep_default_na=False, na_values=[""])
    assert sorted(t6.loc[t6["mAP"].isna(), "Method"]) == ["FGD, inherits neck+head", "MGD, inherits neck+head"]
    assert t6.loc[t6["Method"] == "FGD, inherits neck+head", "mAP_paper"].tolist() == [40.7]
    six = (tables / "table6.md").read_text()
    assert "Paper value of RetinaNet MGD: MGD (Yang et al., ECCV 2022)" in six
    assert "teacher Faster R-CNN R101 (39.8)" in six  # PKD's two-stage teacher is not the paper's
    assert not (tables / "table2.md").exists()  # only when its sweep exists
    t4 = pd.read_csv(tables / "table4.csv", keep_default_na=False, na_values=[""])
    assert t4["Distillation"].tolist() == ["Teacher", "Student", "IR", "IR", "PR+IR+INS", "PR+IR+INS"]
    assert t4.loc[0, "mAP"] == pytest.approx(TEACHER_MAP[RETINA_CKPT], abs=1e-3)  # the recorded teacher
    t5 = pd.read_csv(tables / "table5.csv")
    assert t5["lambda_pr"].tolist() == [0.001, 0.002, 0.004, 0.006]
    assert t5["lambda_ir_mAP_paper"].tolist() == [36.7, 36.8, 36.9, 36.8]
    assert t5["lambda_ins"].tolist() == [0.005, 0.006, 0.008, 0.01]
    base = expected_cells(tiny_sweeps.experiments["ablation_table1"], table1_label)[
        ("1x", FRAMEWORK["retinanet"], "Student", "×", "×", "×")
    ]["mAP"][0]
    for t in tiny_sweeps.experiments["ablation_table5"]:
        switch = "+".join(n for n, k in (("PR", "pr"), ("IR", "ir"), ("INS", "ins")) if t.config[f"distill.drkd.{k}"])
        lam = {"PR": "lambda_pr", "IR": "lambda_ir", "PR+IR+INS": "lambda_ins"}[switch]
        row = t5[t5[lam] == t.config[f"distill.drkd.{lam}"]].iloc[0]
        assert_cell(row, f"{lam}_mAP", (t.history["mAP"].iloc[-1], None, 1))
        assert row[f"{lam}_mAP_delta"] == pytest.approx(t.history["mAP"].iloc[-1] - base, abs=1e-3)
    assert t5["lambda_pr_mAP"].isna().tolist() == [True, False, False, False]
    assert t5["lambda_ir_mAP"].isna().tolist() == [True, False, False, True]
    t5_md = (tables / "table5.md").read_text()
    assert "| Model | λ1 [PR] | λ1 mAP | λ1 paper | λ1 ΔmAP | λ2 [IR] |" in t5_md
    assert "| λ3 [PR+IR+INS] |" in t5_md
    t6 = pd.read_csv(tables / "table6.csv", keep_default_na=False, na_values=[""])
    # the second block is RetinaNet's: FGD and MGD publish inheriting students there, beside the plain ones
    methods = ["Teacher", "Baseline", "FitNet", "NLD", "MKD", "CWD", "PKD", "MGD", "FGD", "DRKD (ours)"]
    inheriting = [*methods[:8], "MGD, inherits neck+head", "FGD", "FGD, inherits neck+head", "DRKD (ours)"]
    assert t6["Method"].tolist() == methods + inheriting
    assert t6.loc[(t6["Framework"] == FRAMEWORK["retinanet"]) & (t6["Method"] == "NLD"), "mAP_paper"].item() == 39.6

    search = pd.read_csv(tables / "search_lambda_search.csv")
    trials = tiny_sweeps.experiments["lambda_search"]
    assert len(search) == len(trials) == 3
    assert sorted(search["Status"]) == ["completed", "completed", "early-stopped"]
    stopped = search[search["Status"] == "early-stopped"].iloc[0]
    assert stopped["lambda_pr"] == 0.02 and stopped["Epochs"] == f"1/{SEARCH_EPOCHS}"
    best = max(trials, key=lambda t: t.history["mAP"].iloc[-1])
    assert search.loc[0, "Trial"] == best.trial_id
    assert search.loc[0, "mAP"] == pytest.approx(best.history["mAP"].iloc[-1], abs=1e-3)
    assert list(search.columns[:4]) == ["Rank", "Trial", "Status", "Epochs"]


def test_table6_measured_beside_paper(tiny_sweeps: SweepRun, report: Path) -> None:
    t6 = pd.read_csv(report.parent / "tables" / "table6.csv", keep_default_na=False, na_values=[""])

    def label(c):
        return (FRAMEWORK[c["student.arch"]], METHOD_LABEL[c["distill.method"]])

    expected = expected_cells(tiny_sweeps.experiments["ablation_table6"], label)
    assert len(expected) == 2 * len(METHOD_LABEL)  # every method (and the baseline) on both frameworks
    for (framework, method), metrics in expected.items():
        row = row_of(t6, Framework=framework, Method=method)
        for metric in METRICS:
            assert_cell(row, metric, metrics[metric])
    one_stage = t6[t6["Framework"] == FRAMEWORK["retinanet"]].set_index("Method")
    assert one_stage.loc["NLD", "mAP"] == pytest.approx(20.0 + PEER_GAIN["nld"] + 0.37 / 2, abs=1e-3)
    assert (one_stage.loc["NLD", "mAP_paper"], one_stage.loc["DRKD (ours)", "mAP_paper"]) == (39.6, 40.3)
    assert pd.isna(one_stage.loc["FitNet", "mAP_paper"]) and pd.isna(one_stage.loc["MKD", "mAP_paper"])
    md = (report.parent / "tables" / "table6.md").read_text()
    assert re.search(
        rf"\| {re.escape(FRAMEWORK['retinanet'])} \| NLD \| 21\.1\d ± 0\.26 \(n=2\) \| 39\.6 \| "
        rf"\+{PEER_GAIN['nld']:.2f}( \[[-+]\d+\.\d\d, [-+]\d+\.\d\d( p)?\]\*?)? \|",  # Δ, its interval when the baseline has 2+ runs
        md,
    )


def test_table6_per_seed_runs_are_the_cells_runs(tiny_sweeps: SweepRun, report: Path) -> None:
    """The per-seed plot draws exactly the runs each Table 6 cell averages: a distilled row's own
    (seed, last mAP) pairs from the table6 sweep; the baseline row's mean and n match its cell."""
    t6 = next(t for t in build_all(load_experiments([tiny_sweeps.root]), load_paper_numbers()) if t.name == "table6")
    rows = t6.meta["per_seed"]
    assert not any(r["labels"]["Method"] == "Teacher" for r in rows)
    own: dict[tuple, list[tuple[int, float]]] = {}
    for t in tiny_sweeps.experiments["ablation_table6"]:
        if t.config["distill.method"] != "none" and t.history["epoch"].max() == t.config["train.epochs"]:
            label = (FRAMEWORK[t.config["student.arch"]], METHOD_LABEL[t.config["distill.method"]])
            own.setdefault(label, []).append((t.config["train.seed"], float(t.history.iloc[-1]["mAP"])))
    drawn = {(r["labels"]["Framework"], r["labels"]["Method"]): r for r in rows}
    for label, runs in own.items():
        assert sorted(drawn[label]["runs"]) == pytest.approx(sorted(runs), abs=1e-9)
        assert not drawn[label]["baseline"]
    frame = t6.frame.set_index(["Framework", "Method"])
    for label, r in drawn.items():
        assert len(r["runs"]) == frame.loc[label, "mAP_n"]
        if r["runs"]:
            assert statistics.mean(v for _, v in r["runs"]) == pytest.approx(frame.loc[label, "mAP"], abs=1e-9)
    baselines = [r for r in rows if r["baseline"]]
    assert {r["labels"]["Method"] for r in baselines} == {METHOD_LABEL["none"]} and len(baselines) == 2
    assert any(r["runs"] for r in baselines)  # a baseline band is drawn
    png = report.parent / "plots" / "per_seed_table6.png"
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 5000


def test_per_seed_plot_gives_a_panel_only_to_blocks_with_runs(tiny_sweeps: SweepRun, tmp_path: Path) -> None:
    """A framework with no finished run gets no empty panel (the plot is one panel shorter) but is
    named in the title; with no run anywhere one panel says so."""
    import dataclasses

    from drkd.analysis.plots import DPI, plot_per_seed

    t6 = next(t for t in build_all(load_experiments([tiny_sweeps.root]), load_paper_numbers()) if t.name == "table6")

    def without_runs(keep: Callable[[dict], bool]) -> PaperTable:
        rows = [r if keep(r) else {**r, "runs": []} for r in t6.meta["per_seed"]]
        return dataclasses.replace(t6, meta={**t6.meta, "per_seed": rows})

    def height(table: PaperTable, name: str) -> int:
        png = plot_per_seed(table, tmp_path / name).read_bytes()
        assert png.startswith(PNG_MAGIC)
        return int.from_bytes(png[20:24], "big")  # IHDR: width, then height, in pixels

    panel = 3.3 * DPI
    both = height(t6, "both.png")
    assert height(without_runs(lambda r: "retinanet" in r["block"]), "one.png") == pytest.approx(both - panel, abs=2)
    assert height(without_runs(lambda r: False), "none.png") == pytest.approx(both - panel, abs=2)


def teacher_cell(*teachers: str) -> dict[str, tuple]:
    """metric -> (mean, std or None, n) over distinct teachers' evaluations."""
    values = [teacher_metrics(t) for t in teachers]
    return {
        m: (
            statistics.mean(v[m] for v in values),
            statistics.stdev(v[m] for v in values) if len(values) > 1 else None,
            len(values),
        )
        for m in METRICS
    }


def test_teacher_rows_use_the_recorded_teachers(tiny_sweeps: SweepRun, report: Path) -> None:
    tables = report.parent / "tables"
    t1, t4 = read_csv(tables / "table1.csv"), read_csv(tables / "table4.csv")
    t6 = pd.read_csv(tables / "table6.csv", keep_default_na=False, na_values=[""])
    one_teacher = teacher_cell(RETINA_CKPT)
    # RetinaNet: 33 runs of 5 experiments (the λ search's included) distilled from one teacher: n = 1,
    # and it wins over Table 1's teacher run (mAP 26.0)
    rows = [
        (row_of(t1, Schedule="1x", Framework=FRAMEWORK["retinanet"], Model="Teacher"), one_teacher),
        (row_of(t4, Distillation="Teacher"), {"mAP": one_teacher["mAP"]}),
        (row_of(t6, Framework=FRAMEWORK["retinanet"], Method="Teacher"), one_teacher),
        # Faster R-CNN: Table 1's students used a checkpoint, Table 6's torchvision's weights: each table
        # shows the teacher its own students learned from
        (row_of(t1, Schedule="1x", Framework=FRAMEWORK["fasterrcnn"], Model="Teacher"), teacher_cell(FRCNN_CKPT)),
        (row_of(t6, Framework=FRAMEWORK["fasterrcnn"], Method="Teacher"), teacher_cell(FRCNN_WEIGHTS)),
    ]
    for row, expected in rows:
        for metric, cell in expected.items():
            assert_cell(row, metric, cell)
    base = expected_cells(tiny_sweeps.experiments["ablation_table1"], table1_label)[
        ("1x", FRAMEWORK["retinanet"], "Student", "×", "×", "×")
    ]["mAP"][0]
    assert rows[0][0]["mAP_delta"] == pytest.approx(one_teacher["mAP"][0] - base, abs=1e-3)
    t1_md = (tables / "table1.md").read_text()
    assert "| 1x | Two-stage (Faster R-CNN) | Teacher | - | - | - | 30.50 (n=1) | 42.1 |" in t1_md
    assert (
        "Teacher rows: the teacher this table's students distilled from (any sweep's where they recorded none), "
        "evaluated once per teacher (checkpoint or torchvision weights) and recorded by the distillation runs, "
        "λ searches and unfinished runs included (n = distinct teachers)."
    ) in t1_md
    assert "several teachers" not in t1_md
    assert "preferred to teacher runs (`python sweeps/ablations.py teacher`)" in t1_md  # RetinaNet has one
    t4_md = (tables / "table4.md").read_text()
    assert "Teacher rows: the teacher this table's students distilled from" in t4_md


def test_teacher_identities_and_recorded_columns(tiny_sweeps: SweepRun) -> None:
    data = load_experiments([tiny_sweeps.root])
    trials = trial_results(data)
    distilled = trials[(trials["role"] == "student") & (trials["method"] != "none")]
    named = distilled["config/teacher.checkpoint"].fillna(distilled["config/teacher.weights"])
    assert len(distilled) == 51 and named.isna().sum() == len(tiny_sweeps.experiments["lambda_search"])
    assert distilled["teacher_mAP"].tolist() == named.fillna(RETINA_CKPT).map(TEACHER_MAP).tolist()
    assert trials.loc[~trials.index.isin(distilled.index), "teacher_mAP"].isna().all()  # baselines, teacher runs
    table1 = next(t for t in build_all(data, load_paper_numbers()) if t.name == "table1")
    rows = table1.meta["teacher_rows"]
    # Table 1 shows the teachers its own students recorded (Table 6's torchvision teacher is not among them)
    assert rows["retinanet"]["teachers"] == [f"checkpoint {RETINA_CKPT}"] and rows["retinanet"]["runs_too"]
    assert rows["fasterrcnn"]["teachers"] == [f"checkpoint {FRCNN_CKPT}"]
    # over every experiment: the λ search's runs name no teacher; their evaluation equals the named
    # checkpoint's, so they count as that teacher, not as a second one
    every = [
        {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in trials.to_dict("records")
    ]
    assert [t["teacher"] for t in recorded_teachers(every, "retinanet")] == [f"checkpoint {RETINA_CKPT}"]
    assert [t["teacher"] for t in recorded_teachers(every, "fasterrcnn")] == [
        f"checkpoint {FRCNN_CKPT}",
        f"weights {FRCNN_WEIGHTS}",
    ]


def test_teacher_rows_fall_back_to_teacher_runs(tiny_sweeps: SweepRun, tmp_path: Path) -> None:
    """Experiments from before distillation runs recorded their teacher: the teacher runs fill the rows."""
    root = tmp_path / "results"
    shutil.copytree(tiny_sweeps.root, root)
    for result in root.glob("*/*/result.json"):
        reports = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        result.write_text(
            "".join(json.dumps({k: v for k, v in r.items() if not k.startswith("teacher_")}) + "\n" for r in reports)
        )
    table1 = next(t for t in build_all(load_experiments([root]), load_paper_numbers()) if t.name == "table1")
    teacher_run = next(t for t in tiny_sweeps.experiments["ablation_table1"] if t.config["role"] == "teacher")
    retina = row_of(table1.frame, Schedule="1x", Framework=FRAMEWORK["retinanet"], Model="Teacher")
    for metric in METRICS:
        assert_cell(retina, metric, (teacher_run.history[metric].iloc[-1], None, 1))
    frcnn = row_of(table1.frame, Schedule="1x", Framework=FRAMEWORK["fasterrcnn"], Model="Teacher")
    assert pd.isna(frcnn["mAP"]) and int(frcnn["mAP_n"]) == 0  # no teacher run, nothing recorded
    assert (
        "Teacher rows (no distillation run recorded its teacher's evaluation) take the teacher runs "
        "(`python sweeps/ablations.py teacher`) of that detector, whatever their schedule."
    ) in table1.caption
    assert "evaluated once per teacher" not in table1.caption
    assert table1.meta["teacher_rows"] == {"retinanet": {"source": "teacher runs", "teachers": [teacher_run.trial_id]}}


def test_plots_written_and_linked(tiny_sweeps: SweepRun, report: Path) -> None:
    plots = sorted((report.parent / "plots").glob("*.png"))
    names = {p.name for p in plots}
    assert {
        "ap_by_size.png",
        "lambda_sensitivity.png",
        "per_seed_table6.png",
        "search_progress_lambda_search.png",
    } <= names
    assert sum(n.startswith("curves_") for n in names) == len(tiny_sweeps.experiments)  # best of each
    for png in plots:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, png
    text = report.read_text()
    for png in plots:
        assert f"(plots/{png.name})" in text
    for name in ("Table 1", "Table 3", "Table 4", "Table 5", "Table 6", "λ search summary"):
        assert f"## {name}" in text


def test_output_is_deterministic(tiny_sweeps: SweepRun, report: Path, tmp_path: Path) -> None:
    again = make_report([tiny_sweeps.root], tmp_path / "again")
    first = sorted(p.relative_to(report.parent) for p in report.parent.rglob("*") if p.suffix in (".md", ".csv"))
    second = sorted(p.relative_to(again.parent) for p in again.parent.rglob("*") if p.suffix in (".md", ".csv"))
    assert first == second and len(first) == 13  # report.md + 6 tables × (md, csv)
    for rel in first:
        assert (report.parent / rel).read_bytes() == (again.parent / rel).read_bytes(), rel


def test_pick_best_and_uri(tiny_sweeps: SweepRun) -> None:
    data = load_experiments([f"file://{tiny_sweeps.root}"])
    assert {e.name for e in data.experiments} == set(tiny_sweeps.experiments)
    assert len(data.trials) == sum(len(v) for v in tiny_sweeps.experiments.values())
    tables = {t.name: t for t in build_all(data, load_paper_numbers(), pick="best")}
    table1 = tables["table1"]
    assert "best epoch by mAP" in table1.caption
    expected = expected_cells(tiny_sweeps.experiments["ablation_table1"], table1_label, pick="best")
    key = ("1x", FRAMEWORK["fasterrcnn"], "Student", "✓", "✓", "✓")
    row = row_of(table1.frame, **dict(zip(T1_COLS, key)))
    assert_cell(row, "mAP", expected[key]["mAP"])
    last = expected_cells(tiny_sweeps.experiments["ablation_table1"], table1_label)[key]["mAP"][0]
    assert row["mAP"] > last  # the two-stage runs peak before their last epoch


def test_interrupted_copy(tiny_sweeps: SweepRun, truncated: tuple[Path, dict[str, str]]) -> None:
    report, damaged = truncated
    frame = read_csv(report.parent / "tables" / "table1.csv")
    one_stage = dict(Schedule="1x", Framework=FRAMEWORK["retinanet"], Model="Student")
    assert len(frame) == 17
    pr_ir = row_of(frame, **one_stage, PR="✓", IR="✓", INS="×")
    assert pd.isna(pr_ir["mAP"]) and int(pr_ir["mAP_n"]) == 0 and pr_ir["mAP_paper"] == 38.4
    base_trials = [
        t
        for t in tiny_sweeps.experiments["ablation_table1"]
        if table1_label(t.config) == ("1x", FRAMEWORK["retinanet"], "Student", "×", "×", "×")
    ]
    survivor = next(t for t in base_trials if t.trial_dir != damaged["torn"])
    base = row_of(frame, **one_stage, PR="×", IR="×", INS="×")
    assert_cell(base, "mAP", (survivor.history["mAP"].iloc[-1], None, 1))
    pr = row_of(frame, **one_stage, PR="✓", IR="×", INS="×")
    assert pr["mAP_delta"] == pytest.approx(pr["mAP"] - base["mAP"], abs=1e-3)

    table1_md = (report.parent / "tables" / "table1.md").read_text()
    assert "2 trial(s) in 2 cell(s) did not reach train.epochs (incomplete)" in table1_md
    assert "| 1x | One-stage (RetinaNet) | Student | ✓ | ✓ | × | — | 38.4 | — |" in table1_md
    text = report.read_text()
    assert f"ablation_table1/{damaged['gone']}: no results yet" in text
    assert f"ablation_table1/{damaged['torn']}/result.json: truncated last line skipped" in text
    assert "scratch: not an experiment" in text
    assert "empty_experiment: experiment has no trials yet" in text
    assert (report.parent / "plots" / "ap_by_size.png").stat().st_size > 5000


def test_cli(
    tiny_sweeps: SweepRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "results"
    shutil.copytree(tiny_sweeps.root, root)
    monkeypatch.setenv("DRKD_RESULTS", str(root))
    assert (
        make_tables.main(
            ["--pick", "best", "--curves", tiny_sweeps.experiments["lambda_search"][0].trial_id, "no_such_trial"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "read     lambda_search (lambda_search): 3 trial(s)" in out
    assert f"wrote    {root / 'report' / 'report.md'}" in out
    assert "no_such_trial: no such trial" in out
    assert "best epoch by mAP" in (root / "report" / "tables" / "table1.md").read_text()
    assert len(list((root / "report" / "plots").glob("curves_*.png"))) == 1
    # a second run does not mistake its own report directory for an experiment
    assert make_tables.main([]) == 0
    assert "skipped" not in capsys.readouterr().out

    empty = tmp_path / "nothing_here"
    empty.mkdir()
    assert make_tables.main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert "no experiments" in err and str(empty) in err


def test_a_row_pooling_different_weight_scales_or_budgets_is_named(tmp_path: Path) -> None:
    """Two table6 sweeps whose trials have the same overrides but whose base configs scale FitNet
    differently, or train on fewer images, pool into one row; the caption must say so, and say
    nothing when they agree."""
    import ray
    import ray.cloudpickle

    from drkd.config.presets import tiny_student_config
    from drkd.sweeps.ray_instance import start_private_ray

    base = tiny_student_config("one_stage", "fitnet").to_dict()
    rescaled = json.loads(json.dumps(base))
    rescaled["distill"]["weight_scale"]["fitnet"] = {"one_stage": 0.5, "two_stage": 0.5}
    shorter = json.loads(json.dumps(base))
    shorter["data"]["train_limit"] = 200
    assert base["data"]["train_limit"] is None
    cells = [
        {**baseline("retinanet", s), "cell": "fitnet", "distill.method": "fitnet", "train.schedule": "2x",
         **TABLE6_TEACHER["retinanet"]}
        for s in (0, 1)
    ] + [{**baseline("retinanet", s), "cell": "none", "train.schedule": "2x"} for s in (0, 1)]  # fmt: skip
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
    start_private_ray(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for root, second in ((tmp_path / "same", base), (tmp_path / "mixed", rescaled), (tmp_path / "fewer", shorter)):
            _run_experiment(root, "table6_a", "table6", cells, base_config=base)
            _run_experiment(root, "table6_b", "table6", cells, base_config=second)
    finally:
        ray.shutdown()

    def caption(root: Path) -> str:
        return next(t for t in build_all(load_experiments([root]), load_paper_numbers()) if t.name == "table6").caption

    assert "pools runs of different method settings" not in caption(tmp_path / "same")
    mixed = caption(tmp_path / "mixed")
    assert f"Row {FRAMEWORK['retinanet']} FitNet pools runs of different method settings" in mixed
    assert "weight_scale 0.37 (2 runs), 0.5 (2 runs)." in mixed
    assert "training budgets" not in caption(tmp_path / "same") + mixed
    fewer = caption(tmp_path / "fewer")
    budget_note = (
        "pools runs of different training budgets, which its values mix: train_images 200 (2 runs), null (2 runs)."
    )
    assert f"Row {FRAMEWORK['retinanet']} FitNet {budget_note}" in fewer
    assert fewer.count(budget_note) == 2, fewer  # the baseline row (pooled from both sweeps) too
    assert "method settings" not in fewer


def test_grace_rank_bench_measures_a_finished_experiment(tiny_sweeps: SweepRun, tmp_path: Path) -> None:
    """`bench/grace_rank.py --experiment` ranks the trials of an experiment already run, as scipy does."""
    import subprocess

    from scipy.stats import spearmanr

    bench = REPO / "bench" / "grace_rank.py"
    path = tiny_sweeps.root / "ablation_table1"
    run = subprocess.run(
        [sys.executable, str(bench), "--experiment", str(path), "--epochs", str(EPOCHS), "--orders", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    trials = tiny_sweeps.experiments["ablation_table1"]
    curves = [dict(zip(t.history["epoch"], t.history["mAP"])) for t in trials]
    assert f"{len(trials)} of {len(trials)} trials reached epoch {EPOCHS}" in run.stdout
    for epoch in range(1, EPOCHS):
        # Faster R-CNN's last epoch drops by 2 mAP in fake_report, so epochs before it do not rank as it does
        expected = spearmanr([c[epoch] for c in curves], [c[EPOCHS] for c in curves]).statistic
        row = re.search(rf"^\| {epoch} \| ([+-][\d.]+) \| \[", run.stdout, re.MULTILINE)
        assert row is not None, run.stdout
        assert float(row.group(1)) == pytest.approx(expected, abs=0.005)
        assert expected < 0.999
    assert re.search(rf"^\| {EPOCHS} \| 100 % \| 100 % \| 0.00 \|$", run.stdout, re.MULTILINE)  # no cut: all kept

    missing = subprocess.run(
        [sys.executable, str(bench), "--experiment", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "nope" in missing.stderr


def test_search_efficiency_bench_replays_a_finished_grid(tiny_sweeps: SweepRun) -> None:
    """`bench/search_efficiency.py --experiment` reads one seed's Table 6 as a grid of methods and
    replays the strategies at the grace periods that follow the trials' epochs."""
    import subprocess

    bench = REPO / "bench" / "search_efficiency.py"
    path = str(tiny_sweeps.root / "ablation_table6")

    def run(seed: int) -> subprocess.CompletedProcess:
        args = ["--experiment", path, "--seeds", str(seed), "--epochs", str(EPOCHS), "--replays", "3"]
        return subprocess.run(
            [sys.executable, str(bench), *args, "--budgets", "2"], capture_output=True, text=True, timeout=300
        )

    one = run(1)  # seed 1: RetinaNet only, one trial per method
    assert one.returncode == 0, one.stderr[-3000:]
    finals = {
        t.config["distill.method"]: float(t.history["mAP"].iloc[-1])
        for t in tiny_sweeps.experiments["ablation_table6"]
        if t.config["train.seed"] == 1
    }
    assert len(finals) == 9
    best = max(finals, key=finals.__getitem__)
    assert f"the grid: 9 configurations x {EPOCHS} epochs = {9 * EPOCHS} epochs of training" in one.stdout
    assert f"final mAP {min(finals.values()):.2f} to {finals[best]:.2f}" in one.stdout
    assert f"best {finals[best]:.2f} at method={best}" in one.stdout
    assert f"| grid | 9 | {9 * EPOCHS} (100 %) | {finals[best]:.2f} | 0 | 100 % |" in one.stdout
    # the default grace periods are 1/6..4/6 of the epochs, at least 1: at 3 epochs, 1 and 2
    graces = re.findall(r"^\| TPE \+ ASHA \(grace (\d+)\) \| 2 \|", one.stdout, re.MULTILINE)
    assert graces == ["1", "2"], one.stdout
    assert re.search(r"^\| random \| 2 \| [\d.]+ \(\d+ %\) \|", one.stdout, re.MULTILINE)

    twice = run(0)  # seed 0: both frameworks ran every method, so a value is not one point of a grid
    assert twice.returncode != 0 and "finished twice with seed 0" in twice.stderr


@pytest.mark.parametrize("n", [1, 2, 3, 5, 12])
def test_seed_offsets_keep_a_rows_dots_apart_in_seed_order(n: int) -> None:
    from drkd.analysis.plots import seed_offsets

    dx = seed_offsets(n)
    assert len(dx) == n and dx == sorted(dx) and len(set(dx)) == n
    assert all(abs(d) <= 0.2 + 1e-12 for d in dx) and sum(dx) == pytest.approx(0.0, abs=1e-12)
    if n > 1:
        gaps = {round(b - a, 12) for a, b in zip(dx, dx[1:])}
        assert gaps == {round(min(0.12, 0.4 / (n - 1)), 12)}


def test_a_rows_runs_are_drawn_in_seed_order_unseeded_last() -> None:
    from drkd.analysis.plots import in_seed_order

    runs = [(2, 1.0), (None, 5.0), (0, 3.0), (None, 4.0), (1, 2.0)]
    assert in_seed_order(runs) == [(0, 3.0), (1, 2.0), (2, 1.0), (None, 5.0), (None, 4.0)]


@pytest.mark.parametrize("rows", [9, 18])
def test_per_seed_dots_stay_apart_however_many_rows_a_panel_has(rows: int) -> None:
    """With 18 rows to a panel (the inheriting rows) a fixed 9-inch figure put a row's dots, 0.12
    x-units apart, under one dot's diameter apart; the figure widens so they stay 1.5 diameters apart."""
    import matplotlib.pyplot as plt

    from drkd.analysis.plots import DOT_AREA, per_seed_figure

    per_seed = [
        {
            "block": ("2x", "RetinaNet"),
            "labels": {"Method": f"m{i}"},
            "baseline": i == 0,
            "runs": [(s, 10.0 + 0.01 * s) for s in range(3)],
        }
        for i in range(rows)
    ]
    table = PaperTable("table6", "Table 6", "", [], pd.DataFrame(), meta={"per_seed": per_seed})
    fig = per_seed_figure(table)
    fig.tight_layout()
    ax = fig.axes[0]
    (x0, _), (x1, _) = ax.transData.transform([(0.0, 10.0), (0.12, 10.0)])
    gap_points = (x1 - x0) / fig.dpi * 72
    width, xlim = fig.get_figwidth(), ax.get_xlim()
    plt.close(fig)
    assert gap_points >= 1.5 * DOT_AREA**0.5
    assert xlim == (-0.5, rows - 0.5)
    if rows == 9:
        assert width == 9.0  # the nine-method panels keep their size
