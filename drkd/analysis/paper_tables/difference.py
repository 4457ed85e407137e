"""Whether a row differs from its baseline: a 95 % confidence interval on Δ, paired by seed where the seeds pair."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A two-sided 95 % interval on a difference of means.

    ``paired``: from per-seed differences (row and baseline ran the same seeds, each once);
    else Welch's unequal-variance interval. ``lo``/``hi`` are NaN when either side has fewer than 2 runs.
    """

    lo: float
    hi: float
    paired: bool

    @property
    def excludes_zero(self) -> bool:
        return not math.isnan(self.lo) and (self.lo > 0 or self.hi < 0)


NO_INTERVAL = Interval(math.nan, math.nan, False)


def _t(df: float) -> float:
    return float(scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, df))


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95 % t interval on the mean of ``values``: v̄ ± t_{0.975, n−1} · s / √n (NaN under 2 values)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return math.nan, math.nan
    half = _t(len(v) - 1) * float(np.std(v, ddof=1)) / math.sqrt(len(v))
    return float(v.mean()) - half, float(v.mean()) + half


def delta_interval(row: Sequence[tuple[int | None, float]], base: Sequence[tuple[int | None, float]]) -> Interval:
    """The 95 % interval on mean(row) − mean(base).

    Args:
        row, base: (seed, value) per completed run; a seed of ``None`` pairs with nothing.

    Paired (when row and baseline ran the same seeds, each once, n ≥ 2; then d̄ is exactly
    mean(row) − mean(base)): d_i = x_i − b_i, d̄ ± t_{0.975, n−1} · s_d / √n. Otherwise Welch: (x̄ − b̄) ± t_{0.975, ν} ·
    √(s_x²/n_x + s_b²/n_b), ν by Welch–Satterthwaite.
    """
    x = np.array([v for _, v in row], dtype=float)
    b = np.array([v for _, v in base], dtype=float)
    if len(x) < 2 or len(b) < 2:
        return NO_INTERVAL
    seeds, base_seeds = [s for s, _ in row], [s for s, _ in base]
    if None not in seeds and len(set(seeds)) == len(seeds) and sorted(seeds) == sorted(base_seeds):  # type: ignore[type-var]
        base_by_seed = dict(base)
        return Interval(*mean_interval(x - np.array([base_by_seed[s] for s in seeds])), True)
    vx, vb = float(np.var(x, ddof=1)) / len(x), float(np.var(b, ddof=1)) / len(b)
    se = math.sqrt(vx + vb)
    diff = float(x.mean() - b.mean())
    if se == 0:
        return Interval(diff, diff, False)
    df = (vx + vb) ** 2 / (vx**2 / (len(x) - 1) + vb**2 / (len(b) - 1))
    half = _t(df) * se
    return Interval(diff - half, diff + half, False)
