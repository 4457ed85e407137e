"""bench/ray_overhead.py runs both launchers and prints a consistent table.

A smoke test, not a timing: one quick round (`--quick`) under torchrun and under Ray Train on a
private local Ray instance, as a user runs it; every row's throughput must agree with its own
iterations and time, and the printed ratio with the two rows.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "ray_overhead.py"
WORKERS = 2
BATCH = 8  # the bench job's batch per worker (the embedded default's)


@pytest.mark.slow
def test_quick_round_prints_both_launchers_and_their_ratio() -> None:
    run = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {}
    for launcher in ("torchrun", "ray"):
        row = re.search(rf"^\| 1 \| {launcher} \|(.*)\|\s*$", run.stdout, re.MULTILINE)
        assert row is not None, f"no row for {launcher}:\n{run.stdout}"
        workers, _niceness, iters, seconds, images_per_s, workers_cpu, others_cpu = (
            float(x) for x in row.group(1).split("|")
        )
        assert (workers, iters) == (WORKERS, 3)
        assert images_per_s == pytest.approx(iters * BATCH * workers / seconds, rel=1e-2)
        assert 0 < workers_cpu <= 100 and 0 <= others_cpu <= 100
        rows[launcher] = images_per_s
    ratio = re.search(r"^median ratio Ray/torchrun: ([\d.]+) \((meets|misses)", run.stdout, re.MULTILINE)
    assert ratio is not None, run.stdout
    assert float(ratio.group(1)) == pytest.approx(rows["ray"] / rows["torchrun"], abs=2e-3)
    # an impossible setting is refused, naming the option
    bad = subprocess.run([sys.executable, str(BENCH), "--workers", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--workers" in bad.stderr
