"""The layout's rules, enforced: imports only go down, reading results needs no torch, and a
method's name is spelled only in its own package."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from drkd.config.methods import DEFAULT_METHOD, method_names

REPO = Path(__file__).resolve().parents[1]
DRKD = REPO / "drkd"


def test_import_contracts_hold() -> None:
    """The import-linter contracts in pyproject.toml: layers, torch-free analysis, no cycles."""
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is a dev dependency: pip install -e .[dev]"
    run = subprocess.run([exe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "ray"):
            raise ImportError(f"{name} is blocked: the analysis must not need it")
sys.meta_path.insert(0, Block())
"""


def _write_experiment(root: Path) -> None:
    """A finished two-trial Table 6 experiment, as Ray Tune leaves it on disk."""
    import json

    exp = root / "table6_run"
    exp.mkdir(parents=True)
    (exp / "drkd_experiment.json").write_text(json.dumps({"kind": "table6", "name": "table6_run"}))
    for i, (method, mAP) in enumerate((("none", 3.0), ("nld", 4.5))):
        trial = exp / f"run_trial_{i}"
        trial.mkdir()
        params = {
            "role": "student",
            "student.arch": "retinanet",
            "train.schedule": "2x",
            "train.epochs": 2,
            "train.seed": 0,
            "distill.method": method,
        }
        (trial / "params.json").write_text(json.dumps(params))
        lines = [
            {
                "epoch": e,
                "training_iteration": e,
                "trial_id": f"t{i}",
                "mAP": mAP - 2 + e,
                "AP50": 9.0,
                "AP75": 3.0,
                "AP_S": 1.0,
                "AP_M": 3.0,
                "AP_L": 5.0,
            }
            for e in (1, 2)
        ]
        (trial / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_tables_are_built_with_torch_and_ray_unimportable(tmp_path: Path) -> None:
    _write_experiment(tmp_path / "results")
    script = (
        BLOCKER
        + f"""
sys.path.insert(0, {str(REPO / "analysis")!r})
import make_tables
assert make_tables.main([{str(tmp_path / "results")!r}, "--out", {str(tmp_path / "report")!r}]) == 0
from drkd.config import load_config
for path in {sorted(str(p) for p in (REPO / "configs").glob("*.yaml"))!r}:
    load_config(path)  # configs load on a laptop without torch too
assert not any(m.split(".")[0] in ("torch", "torchvision", "ray") for m in sys.modules)
"""
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    table6 = (tmp_path / "report" / "tables" / "table6.md").read_text()
    assert "| One-stage (RetinaNet) | NLD | 4.50 (n=1)" in table6


def _string_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


@pytest.mark.parametrize("method", method_names())
def test_method_name_is_spelled_only_in_its_package(method: str) -> None:
    """Outside ``drkd/distill/<method>/`` no string literal names a method or its config section
    (exceptions: DEFAULT_METHOD, the platform's default, in drkd/config/methods.py; the ``drkd``
    command's own name in drkd/cli.py)."""
    own = DRKD / "distill" / method
    allowed = {(DRKD / "config" / "methods.py", DEFAULT_METHOD), (DRKD / "cli.py", "drkd")}
    offenders = []
    for path in sorted(DRKD.rglob("*.py")):
        if own in path.parents:
            continue
        for line, text in _string_literals(path):
            if (text == method or text.startswith(f"distill.{method}.")) and (path, text) not in allowed:
                offenders.append(f"{path.relative_to(REPO)}:{line}: {text!r}")
    assert not offenders, "method names spelled outside their package:\n" + "\n".join(offenders)


def test_experiment_kinds_are_spelled_once() -> None:
    from drkd.analysis.paper_tables import EXPERIMENT_KINDS

    counts = {kind: [] for kind in EXPERIMENT_KINDS if kind.startswith(("table", "lambda_"))}
    for path in sorted(DRKD.rglob("*.py")):
        for line, text in _string_literals(path):
            if text in counts:
                counts[text].append(f"{path.relative_to(REPO)}:{line}")
    assert all(len(places) == 1 for places in counts.values()), counts
