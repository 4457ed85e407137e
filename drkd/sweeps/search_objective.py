"""What every sweep optimises, and the ASHA early stopping of a search: shared by the real Tune run
(:mod:`drkd.sweeps.tuner`) and its replay over measured trials (:mod:`drkd.sweeps.search_replay`),
so the replay cuts where the search would."""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler

METRIC, MODE = "mAP", "max"  # every sweep maximises COCO mAP


def asha_scheduler(max_t: int, grace_period: int, reduction_factor: int) -> ASHAScheduler:
    """Ray Tune's ASHA on the trials' ``epoch``, first cut at ``grace_period`` (at most ``max_t``).

    Args:
        max_t: the trials' last epoch (``train.total_epochs``).
        grace_period: epochs every trial runs before it may be stopped (``sweep.grace_period``);
            clamped to ``max_t``, where nothing is stopped.
        reduction_factor: ASHA's η (``sweep.reduction_factor``): at each rung the best 1/η go on.

    Metric and mode are left to the caller: Tune sets them from its ``TuneConfig``; a replay
    without Tune calls ``set_search_properties(METRIC, MODE)``.
    """
    return ASHAScheduler(
        time_attr="epoch",
        max_t=max_t,
        grace_period=min(grace_period, max_t),
        reduction_factor=reduction_factor,
    )
