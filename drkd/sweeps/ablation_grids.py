"""The paper's ablation grids as explicit lists of trials (flat dotted overrides plus a `cell` label)."""
from __future__ import annotations

from typing import Any, Callable

from drkd.config import Config
from drkd.config.presets import FRAMEWORK_ARCH

TERMS = {"PR": (True, False, False), "IR": (False, True, False), "PR+IR": (True, True, False), "PR+IR+INS": (True, True, True)}
# Table 5 varies one λ with its own term on, as the paper's columns match its Table 1 rows:
# λ1 with PR alone (38.0 = Table 1's PR row), λ2 with IR alone (36.9), λ3 with all three (38.5).
TABLE5 = {
    "lambda_pr": ("PR", (0.006, 0.004, 0.002, 0.001)),
    "lambda_ir": ("IR", (0.001, 0.002, 0.004, 0.006)),
    "lambda_ins": ("PR+IR+INS", (0.005, 0.006, 0.008, 0.01)),
}
PEERS = ("none", "fitnet", "nld", "mkd", "drkd")


def _student(framework: str, schedule: str, base: Config, teachers: dict[str, str]) -> dict[str, Any]:
    arch = FRAMEWORK_ARCH[framework]
    mult = 2 if schedule == "2x" else 1
    cell = {"role": "student", "student.arch": arch, "train.schedule": schedule, "train.epochs": base.train.epochs_1x * mult}
    if base.teacher is not None:
        cell["teacher.arch"] = arch
        if framework in teachers:
            cell["teacher.checkpoint"] = teachers[framework]
    return cell


def _baseline(framework: str, schedule: str, base: Config, teachers: dict[str, str]) -> dict[str, Any]:
    return {"cell": f"{framework} {schedule} baseline", **_student(framework, schedule, base, teachers), "distill.method": "none"}


def _drkd(framework: str, schedule: str, base: Config, teachers: dict[str, str], terms: str, **extra: Any) -> dict[str, Any]:
    pr, ir, ins = TERMS[terms]
    label = " ".join([framework, schedule, terms, *(f"{k.split('.')[-1]}={v}" for k, v in extra.items())])
    return {
        "cell": label, **_student(framework, schedule, base, teachers), "distill.method": "drkd",
        "distill.drkd.pr": pr, "distill.drkd.ir": ir, "distill.drkd.ins": ins, **extra,
    }


def _teacher(framework: str, base: Config) -> dict[str, Any]:
    t = base.teacher
    if t is None:
        raise ValueError("the teacher grid needs a `teacher` section in the config")
    cell = {
        "cell": f"{framework} teacher", "role": "teacher", "student.arch": FRAMEWORK_ARCH[framework],
        "student.backbone": t.backbone, "student.fpn_channels": t.fpn_channels, "student.anchor_scale": t.anchor_scale,
        "student.head_norm": t.head_norm, "distill.method": "none", "train.schedule": "1x", "train.epochs": base.train.epochs_1x,
    }
    if t.backbone_weights:
        cell["student.backbone_weights"] = t.backbone_weights
    return cell


def table1(base: Config, teachers: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for framework in FRAMEWORK_ARCH:
        for schedule in ("1x", "2x"):
            out.append(_baseline(framework, schedule, base, teachers))
            out.extend(_drkd(framework, schedule, base, teachers, terms) for terms in TERMS)
    return out


def table2(base: Config, teachers: dict[str, str]) -> list[dict[str, Any]]:
    cells = [_baseline("one_stage", "1x", base, teachers)]
    cells += [_drkd("one_stage", "1x", base, teachers, "PR", **{"distill.drkd.pixel_module": m}) for m in ("non_local", "glore")]
    return cells


def table3(base: Config, teachers: dict[str, str]) -> list[dict[str, Any]]:
    cells = [_baseline("one_stage", "1x", base, teachers)]
    for terms in ("IR", "PR+IR+INS"):
        cells += [_drkd("one_stage", "1x", base, teachers, terms, **{"distill.drkd.instance_size": k}) for k in (1, 3, 5)]
    return cells


def table4(base: Config, teachers: dict[str, str]) -> list[dict[str, Any]]:
    cells = [_baseline("one_stage", "1x", base, teachers)]
    for terms in ("IR", "PR+IR+INS"):
        cells += [_drkd("one_stage", "1x", base, teachers, terms, **{"distill.drkd.relation_filter": f}) for f in (False, True)]
    return cells


def table5(base: Config, teachers: dict[str, str]) -> list[dict[str, Any]]:
    cells = [_baseline("one_stage", "1x", base, teachers)]
    for name, (terms, values) in TABLE5.items():
        cells += [_drkd("one_stage", "1x", base, teachers, terms, **{f"distill.drkd.{name}": v}) for v in values]
    return cells


def table6(base: Config, teachers: dict[str, str]) -> list[dict[str, Any]]:
    cells = []
    for framework in FRAMEWORK_ARCH:
        for method in PEERS:
            cell = {**_student(framework, "2x", base, teachers), "distill.method": method}
            cells.append({"cell": f"{framework} 2x {method}", **cell})
    return cells


def teacher(base: Config, teachers: dict[str, str]) -> list[dict[str, Any]]:
    return [_teacher(framework, base) for framework in FRAMEWORK_ARCH]


def baseline(base: Config, teachers: dict[str, str]) -> list[dict[str, Any]]:
    return [_baseline(framework, schedule, base, teachers) for framework in FRAMEWORK_ARCH for schedule in ("1x", "2x")]


GRIDS: dict[str, Callable[[Config, dict[str, str]], list[dict[str, Any]]]] = {
    "table1": table1, "table2": table2, "table3": table3, "table4": table4, "table5": table5, "table6": table6,
    "teacher": teacher, "baseline": baseline,
}
NEEDS_TEACHER = {name for name in GRIDS if name not in ("teacher", "baseline")}


def frameworks_used(cells: list[dict[str, Any]]) -> set[str]:
    archs = {c["student.arch"] for c in cells}
    return {f for f, a in FRAMEWORK_ARCH.items() if a in archs}


def with_seeds(cells: list[dict[str, Any]], seeds: int, first_seed: int = 0) -> list[dict[str, Any]]:
    """Each cell repeated with train.seed = first_seed .. first_seed + seeds - 1."""
    return [{**cell, "train.seed": first_seed + s} for cell in cells for s in range(seeds)]
