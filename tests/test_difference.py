"""Δ against the baseline with a 95 % interval: paired by seed where the seeds pair, else Welch's."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from drkd.analysis.paper_tables.difference import delta_interval
from drkd.analysis.paper_tables.table_spec import Column
from drkd.analysis.render import format_cell

T_975_DF2 = 4.302652729749462  # Student's t, 97.5th percentile, 2 degrees of freedom (tables)


def test_paired_by_seed_hand_computed() -> None:
    # d = (1, 2, 3): mean 2, sd 1, half-width t(0.975, 2) · 1 / √3
    iv = delta_interval([(0, 2.0), (1, 4.0), (2, 6.0)], [(2, 3.0), (0, 1.0), (1, 2.0)])
    half = T_975_DF2 / math.sqrt(3)
    assert iv.paired and iv.lo == pytest.approx(2 - half) and iv.hi == pytest.approx(2 + half)
    assert not iv.excludes_zero  # 2 - 2.48 < 0


def test_pairing_removes_the_shared_seed_effect() -> None:
    """A constant gain of 0.5 on top of seed-to-seed noise of ±3: paired, the interval is a point
    that excludes zero; the same numbers unpaired (Welch) cannot tell."""
    base = [(0, 10.0), (1, 13.0), (2, 7.0), (3, 11.0)]
    row = [(s, v + 0.5) for s, v in base]
    paired = delta_interval(row, base)
    assert paired.paired and paired.lo == pytest.approx(0.5) and paired.hi == pytest.approx(0.5)
    assert paired.excludes_zero
    welch = delta_interval([(None, v) for _, v in row], base)
    assert not welch.paired and not welch.excludes_zero


def test_welch_hand_computed() -> None:
    # x = (2, 4, 6): var 4; b = (1, 2, 3): var 1; se² = 4/3 + 1/3; ν = (5/3)² / ((4/3)²/2 + (1/3)²/2) = 50/17
    t_975_welch = 3.218758614532882  # t(0.975, 50/17)
    iv = delta_interval([(None, 2.0), (None, 4.0), (None, 6.0)], [(0, 1.0), (1, 2.0), (2, 3.0)])
    half = t_975_welch * math.sqrt(5 / 3)
    assert not iv.paired and iv.lo == pytest.approx(2 - half) and iv.hi == pytest.approx(2 + half)


def test_other_seeds_or_too_few_runs() -> None:
    assert not delta_interval([(0, 2.0), (5, 4.0)], [(0, 1.0), (1, 2.0)]).paired  # seeds differ: Welch
    assert not delta_interval([(0, 2.0), (1, 4.0)], [(0, 1.0), (1, 2.0), (2, 3.0)]).paired  # baseline has more
    assert math.isnan(delta_interval([(0, 2.0)], [(0, 1.0), (1, 2.0)]).lo)  # one run: no interval
    assert delta_interval([(0, 2.0), (1, 2.0)], [(0, 1.0), (1, 1.0)]).excludes_zero  # no spread at all


def test_rendered_cell() -> None:
    column = Column("mAP_delta", "ΔmAP", "delta", "mAP", "Δ")
    row = pd.Series({"mAP_delta": 0.5, "mAP_ci_lo": 0.2, "mAP_ci_hi": 0.8, "mAP_paired": True})
    assert format_cell(row, column) == "+0.50 [+0.20, +0.80 p]*"
    row = pd.Series({"mAP_delta": 0.5, "mAP_ci_lo": -0.2, "mAP_ci_hi": 1.2, "mAP_paired": False})
    assert format_cell(row, column) == "+0.50 [-0.20, +1.20]"
    row = pd.Series({"mAP_delta": 0.5, "mAP_ci_lo": math.nan, "mAP_ci_hi": math.nan, "mAP_paired": None})
    assert format_cell(row, column) == "+0.50"
