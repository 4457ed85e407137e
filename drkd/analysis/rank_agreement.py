"""Does an early epoch rank trials as their last epoch does? (Where ASHA's grace period belongs.)"""

from __future__ import annotations

import math
from collections.abc import Mapping


def rank_agreement(
    histories: Mapping[str, Mapping[int, float]], early_epoch: int, final_epoch: int
) -> tuple[float | None, int]:
    """Spearman's rank correlation ρ between the trials' mAP at ``early_epoch`` and at ``final_epoch``.

    ρ = 1 − 6 Σ d² / (n (n² − 1)) without ties (scipy's ``spearmanr``, average ranks, with them):
    1 means the early epoch orders the trials exactly as the final one, so stopping at it loses
    nothing; near 0, an early cut is a coin toss.

    Args:
        histories: trial id -> {epoch: mAP}; trials lacking either epoch (stopped early, failed)
            are left out.
        early_epoch: the epoch compared (ASHA's grace period, or any rung).
        final_epoch: the last epoch (``train.total_epochs``).

    Returns:
        (ρ, n): ρ is ``None`` when fewer than 3 trials have both epochs or either side is constant.
    """
    pairs = [
        (float(h[early_epoch]), float(h[final_epoch]))
        for h in histories.values()
        if early_epoch in h and final_epoch in h and not math.isnan(h[early_epoch]) and not math.isnan(h[final_epoch])
    ]
    n = len(pairs)
    if n < 3 or len({e for e, _ in pairs}) < 2 or len({f for _, f in pairs}) < 2:
        return None, n
    from scipy.stats import spearmanr

    rho = spearmanr([e for e, _ in pairs], [f for _, f in pairs]).statistic
    return float(rho), n


def spearman_interval(rho: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """An approximate 95 % confidence interval for Spearman's ρ over ``n`` pairs.

    Fisher's transform with Fieller, Hartley and Pearson's variance for rank correlations:
    atanh(ρ) ± z · √(1.06 / (n − 3)), mapped back with tanh.

    Args:
        rho: the measured ρ, in [-1, 1].
        n: the number of trials it was measured over, at least 4.
        z: the normal quantile; default 1.96 (95 %).
    """
    if n < 4:
        raise ValueError(f"a confidence interval for Spearman's rho needs n >= 4, not {n}")
    centre = math.atanh(max(-0.999999, min(0.999999, rho)))
    half = z * math.sqrt(1.06 / (n - 3))
    return math.tanh(centre - half), math.tanh(centre + half)
