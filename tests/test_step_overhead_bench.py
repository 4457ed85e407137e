"""bench/step_overhead.py runs through the training path and prints a ratio per method.

A smoke test, not a timing: it runs the script as a user does (`--quick --only cpu`) and checks
that every requested method got a row with a ratio and a breakdown, so a change to the trainer,
the distillers or the models cannot silently break the speed issue's benchmark.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "step_overhead.py"


@pytest.mark.slow
def test_quick_run_prints_a_ratio_and_a_breakdown_per_method() -> None:
    methods = ["drkd", "nld", "pkd"]
    run = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "cpu", "--methods", ",".join(methods)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for method in methods:
        row = re.search(rf"^\| tiny .* \| cpu, threads: \d+ \| {method} \|(.*)\|\s*$", run.stdout, re.MULTILINE)
        assert row is not None, f"no table row for {method}:\n{run.stdout}"
        student, teacher, step, ratio = (float(x) for x in row.group(1).split("|"))
        assert min(student, teacher, step) > 0
        assert ratio == pytest.approx(step / (student + teacher), abs=3e-3)  # the table rounds to 0.1 ms and 0.001
        assert re.search(rf"^  {method} breakdown .* distiller forward in step [\d.]+ ms$", run.stdout, re.MULTILINE)
    # an unknown method is refused, naming it
    bad = subprocess.run([sys.executable, str(BENCH), "--methods", "drkd,nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "nope" in bad.stderr
