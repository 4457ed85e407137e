"""Which teacher a teacher row shows, on trial records as trial_results makes them (no Ray needed).

tests/test_make_tables.py checks the same rules end to end, on experiments of a real Ray Tune run.
"""

from __future__ import annotations

from typing import Any

from drkd.analysis.paper_tables.build import RECORDED, TEACHER_RUNS, recorded_teachers, teacher_notes

METRICS = ("mAP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")


def run(experiment: str, m: float, checkpoint: str | None = None, weights: str | None = None, **kw: Any) -> dict:
    """A distillation trial's record: its settings, its teacher's config, its recorded teacher evaluation."""
    return {
        "experiment": experiment,
        "trial_id": f"{experiment}_{len(kw)}_{m}",
        "arch": "retinanet",
        "role": "student",
        "method": "drkd",
        "status": "incomplete",
        "config/teacher.checkpoint": checkpoint,
        "config/teacher.weights": weights,
        **{f"teacher_{k}": m + i for i, k in enumerate(METRICS)},
        **kw,
    }


def test_one_teacher_is_one_measurement_whatever_names_it() -> None:
    trials = [
        run("table1", 30.0, "/t/a.pt"),
        run("table1", 30.0, "/t/a.pt", seed=1),
        run("search", 30.0),  # names no teacher; recorded the same evaluation as /t/a.pt
        run("table6", 35.0, weights="RetinaNet_ResNet50_FPN_Weights.COCO_V1"),
        run("other", 31.0),  # names no teacher; its evaluation matches none: its experiment's teacher
        run("table1", 99.0, "/t/a.pt", arch="fasterrcnn"),  # another detector
        {**run("table1", 50.0, "/t/a.pt"), "method": "none"},  # a baseline reports no teacher
    ]
    teachers = recorded_teachers(trials, "retinanet")
    assert [(t["teacher"], t["n_runs"], t["mAP"], t["AP_L"]) for t in teachers] == [
        ("checkpoint /t/a.pt", 3, 30.0, 35.0),
        ("the configured teacher of other", 1, 31.0, 36.0),
        ("weights RetinaNet_ResNet50_FPN_Weights.COCO_V1", 1, 35.0, 40.0),
    ]
    assert all(t["consistent"] and t["status"] == "completed" for t in teachers)
    assert recorded_teachers([{**run("table1", 30.0), "teacher_mAP": None}], "retinanet") == []


def test_inconsistent_evaluations_and_mixed_sources_are_said() -> None:
    teachers = recorded_teachers([run("a", 30.0, "/t/a.pt"), run("b", 32.0, "/t/a.pt")], "retinanet")
    assert len(teachers) == 1 and teachers[0]["mAP"] == 31.0 and not teachers[0]["consistent"]
    notes = " ".join(
        teacher_notes(
            {
                "retinanet": {"source": RECORDED, "teachers": ["a", "b"], "runs_too": False, "consistent": False},
                "fasterrcnn": {"source": TEACHER_RUNS, "teachers": ["t0"]},
            }
        )
    )
    assert notes.startswith("Teacher rows of RetinaNet: the teacher this table's students distilled from")
    assert "several teachers (RetinaNet: 2)" in notes and "differ between runs" in notes
    assert "preferred" not in notes
    assert "Teacher rows of Faster R-CNN (no run recorded its teacher's evaluation) take the teacher runs" in notes
    assert teacher_notes({}) == []
