"""Row labels and the paper's row order, from a row's settings."""

from __future__ import annotations

from typing import Any

from drkd.analysis.paper_tables.settings import LAMBDAS, TERMS, Settings, framework, is_baseline, is_drkd, is_teacher
from drkd.config.methods import display_name, method_names

ARCH_NAMES = {"retinanet": "RetinaNet", "fcos": "FCOS", "fasterrcnn": "Faster R-CNN"}  # display order
MODULE_NAMES = {"non_local": "Non-Local", "glore": "GloRe (ours)"}


def tick(s: Settings, dim: str) -> str:
    """✓ / × for a DRKD switch; - where switches do not apply (teacher, peer methods)."""
    if not (is_baseline(s) or is_drkd(s)):
        return "-"
    return "✓" if s.get(dim) else "×"


def switches(s: Settings) -> str:
    return "+".join(t.upper() for t in TERMS if s.get(t)) or "none"


def distillation(s: Settings, baseline: str = "Student") -> str:
    if is_teacher(s):
        return "Teacher"
    if is_baseline(s):
        return baseline
    if is_drkd(s):
        return switches(s)
    return display_name(s["method"])


def model(s: Settings) -> str:
    return f"{ARCH_NAMES.get(s['arch'], s['arch'])} ({s['schedule']})"


def framework_label(s: Settings) -> str:
    return f"{framework(s['arch'])} ({ARCH_NAMES.get(s['arch'], s['arch'])})"


def student_model(s: Settings) -> str:
    if is_teacher(s):
        return "Teacher"
    return "Student" if is_baseline(s) or is_drkd(s) else f"Student ({display_name(s['method'])})"


def pixel_module(s: Settings) -> str:
    if not is_drkd(s):
        return distillation(s)
    name = MODULE_NAMES.get(s["pixel_module"], str(s["pixel_module"]))
    return name if switches(s) == "PR" else f"{switches(s)}, {name}"


def size(s: Settings) -> str:
    return "-" if s.get("instance_size") is None else f"{s['instance_size']}×{s['instance_size']}"


def relation_filter(s: Settings) -> str:
    return "-" if s.get("relation_filter") is None else ("✓" if s["relation_filter"] else "×")


INHERIT_NAMES = {"neck": "inherits neck", "neck_head": "inherits neck+head"}


def method(s: Settings) -> str:
    if is_teacher(s):
        return "Teacher"
    name = display_name(str(s["method"]))
    return f"{name}, {INHERIT_NAMES.get(s['inherit'], s['inherit'])}" if s.get("inherit") else name


_SWITCH_ORDER = [(True, False, False), (False, True, False), (True, True, False), (True, True, True)]


def _order(value: Any) -> tuple:
    return (0, 0) if value is None else (1, value)


def row_order(s: Settings) -> tuple:
    """The paper's row order: teacher, baseline, the other methods by table rank, DRKD variants."""
    methods = method_names(with_none=True)
    combo = tuple(bool(s.get(t)) for t in TERMS)
    combo_rank = _SWITCH_ORDER.index(combo) if combo in _SWITCH_ORDER else 10 + sum(b << i for i, b in enumerate(combo))
    module_rank = {None: 0, "non_local": 1, "glore": 2}.get(s.get("pixel_module"), 3)
    method_rank = methods.index(s["method"]) if s["method"] in methods else len(methods)
    return (
        0 if is_teacher(s) else 1,
        method_rank,
        str(s["method"]),
        _order(s.get("inherit")),
        combo_rank,
        module_rank,
        str(s.get("pixel_module")),
        _order(s.get("instance_size")),
        _order(s.get("relation_filter")),
        *(_order(s.get(dim)) for dim in LAMBDAS),
    )
