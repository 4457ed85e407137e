"""A search strategy replayed over a measured grid: what Ray Tune with Optuna (random or TPE) and
ASHA would have found, and at what compute, had it searched the grid's space for real.

Every trial of the default search trains from the same seed (``train.seed``), so training one
configuration twice gives (up to floating-point nondeterminism) the same mAP at every epoch. A grid
that trained every configuration of a discrete space once is then a lookup table for any search of
that space: the searcher and the scheduler run for real (Ray Tune, Optuna's samplers, ASHA), only
each trial's training is replaced by its measured per-epoch mAP. Many replays with
different sampler seeds give the spread of a strategy's outcome that one real search cannot.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import optuna
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from drkd.sweeps.optuna_searcher import PrunedAwareOptunaSearch, startup_trials
from drkd.sweeps.search_objective import METRIC, MODE, asha_scheduler

STRATEGIES = ("random", "tpe", "tpe_asha")

# a configuration: its value on each axis, in the order of the axes
Point = tuple[Any, ...]


@dataclass(frozen=True)
class MeasuredGrid:
    """Every configuration of a discrete space with its measured mAP after each epoch.

    Args:
        axes: dotted config key -> the values the grid tried, in order.
        curves: configuration (one value per axis, in the axes' order) -> mAP after epochs 1..E.
    """

    axes: Mapping[str, Sequence[Any]]
    curves: Mapping[Point, Sequence[float]]

    def __post_init__(self) -> None:
        points = set(itertools.product(*self.axes.values()))
        if set(self.curves) != points:
            missing, extra = len(points - set(self.curves)), len(set(self.curves) - points)
            raise ValueError(
                f"the grid's measured configurations are not the {len(points)} its axes span: "
                f"{missing} missing, {extra} outside the axes"
            )
        _common_epochs(self.curves.values(), "configuration")

    @property
    def epochs(self) -> int:
        return len(next(iter(self.curves.values())))

    @property
    def best(self) -> float:
        """The grid's best final (last-epoch) mAP: what searching the whole grid finds."""
        return max(c[-1] for c in self.curves.values())

    @property
    def compute(self) -> int:
        """Epochs the whole grid trained."""
        return self.epochs * len(self.curves)


@dataclass(frozen=True)
class ReplayOutcome:
    """One replayed search: the final mAP of the trial it would call best, and the epochs it trained."""

    best_final: float
    epochs: int
    trials: int


@dataclass(frozen=True)
class _CategoricalSpace:
    """Optuna define-by-run over the grid's axes, each categorical (picklable: Tune saves the searcher)."""

    axes: Mapping[str, Sequence[Any]]

    def __call__(self, trial: optuna.trial.Trial) -> None:
        for key, values in self.axes.items():
            trial.suggest_categorical(key, list(values))


def report_measured_curve(config: dict[str, Any], grid: MeasuredGrid) -> None:
    """A Ray Tune trainable that trains nothing: it reports the configuration's measured mAP after
    each epoch, as a real trial would (checks :func:`replay_search` against a real Tune run)."""
    from ray import tune

    for epoch, value in enumerate(grid.curves[tuple(config[key] for key in grid.axes)], start=1):
        tune.report({METRIC: value, "epoch": epoch})


def replay_search(
    grid: MeasuredGrid, strategy: str, budget: int, seed: int, grace_period: int = 1, reduction_factor: int = 2
) -> ReplayOutcome:
    """One search of ``grid``'s space, every trial's per-epoch mAP looked up in ``grid``.

    The searcher (:class:`PrunedAwareOptunaSearch`, as ``lambda_search.py`` builds it) and the
    scheduler (Ray Tune's ``ASHAScheduler`` or FIFO) are the real objects, called as Ray Tune 2.58's
    controller calls them when one trial runs at a time (``sweep.max_concurrent_trials`` 1, the
    embedded default; ``TuneController._process_trial_result`` and ``stop_trial``): suggest, then
    each epoch's result to the scheduler, and to the searcher only where the scheduler lets the
    trial continue; on a stop, or after the last epoch, completion to the scheduler and then the
    searcher with the last result. Starting a Tune trial actor per lookup (tens of seconds each
    here) would only add time, not change a decision.

    Args:
        grid: the measured grid.
        strategy: ``random`` (Optuna's RandomSampler, every trial run to the end), ``tpe`` (TPE with
            the default search's random start, :func:`startup_trials`, every trial to the end) or
            ``tpe_asha`` (the same TPE under ASHA over epochs).
        budget: trials the search samples (``sweep.num_trials``).
        seed: the sampler's seed (and ASHA's bracket draw); replays differ only in it.
        grace_period: ASHA's first cut, in epochs (``tpe_asha`` only; default 1).
        reduction_factor: ASHA's reduction factor (default 2, ``sweep.reduction_factor``'s default).

    Returns:
        The final mAP of the best trial that ran every epoch (as ``write_best_config`` picks it),
        the epochs all trials trained, and the trial count.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    if budget < 1:
        raise ValueError(f"budget {budget}: a search needs at least one trial")
    sampler = (
        optuna.samplers.RandomSampler(seed=seed)
        if strategy == "random"
        else optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(budget, None))
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = PrunedAwareOptunaSearch(
        space=_CategoricalSpace(grid.axes), metric=METRIC, mode=MODE, sampler=sampler, total_epochs=grid.epochs
    )
    scheduler: TrialScheduler = (
        _asha(grid.epochs, grace_period, reduction_factor) if strategy == "tpe_asha" else FIFOScheduler()
    )

    def trials() -> Iterator[tuple[str, Sequence[float]]]:  # lazily: each suggestion sees the trials before it
        for index in range(budget):
            trial_id = f"replay_{index:05d}"
            config = searcher.suggest(trial_id)
            yield trial_id, grid.curves[tuple(config[key] for key in grid.axes)]

    with _numpy_seeded(seed):
        finals, epochs = _one_trial_at_a_time(scheduler, trials(), searcher)
    return ReplayOutcome(best_final=max(finals), epochs=epochs, trials=budget)


def replay_asha_cut(
    curves: Sequence[Sequence[float]], grace_period: int, seed: int, reduction_factor: int = 2
) -> ReplayOutcome:
    """ASHA over already measured trials, run one at a time in a random order: which of them it would
    have let finish, and the epochs it would have spent.

    For trials that were sampled at random and all trained to the end (``bench/grace_rank.py``): the
    order stands in for the random search's, so many seeds give how often a cut at
    ``grace_period`` keeps the best trial and what it saves. Ray Tune's ``ASHAScheduler`` is called
    as in :func:`replay_search`.

    Args:
        curves: each trial's mAP after epochs 1..E (the same E for all).
        grace_period: ASHA's first cut, in epochs (1..E; E cuts nothing).
        seed: the order's seed (and ASHA's bracket draw).
        reduction_factor: ASHA's reduction factor (default 2, ``sweep.reduction_factor``'s default).

    Returns:
        The best final mAP among the trials ASHA let finish, the epochs trained, the trial count.
    """
    epochs = _common_epochs(curves, "trial")
    if not 1 <= grace_period <= epochs:
        raise ValueError(f"grace_period {grace_period}: between 1 and the trials' {epochs} epochs")
    scheduler = _asha(epochs, grace_period, reduction_factor)
    order = np.random.default_rng(seed).permutation(len(curves))
    with _numpy_seeded(seed):
        finals, spent = _one_trial_at_a_time(scheduler, ((f"trial_{i:05d}", curves[i]) for i in order))
    return ReplayOutcome(best_final=max(finals), epochs=spent, trials=len(curves))


def _common_epochs(curves: Iterable[Sequence[float]], what: str) -> int:
    """The number of epochs every curve has; ValueError (naming ``what`` each curve is) unless they
    all have the same number, at least 1."""
    lengths = {len(c) for c in curves}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"every {what} needs the same number (>= 1) of epochs; found {sorted(lengths)}")
    return lengths.pop()


def _asha(epochs: int, grace_period: int, reduction_factor: int) -> ASHAScheduler:
    """The search's ASHA (:func:`~drkd.sweeps.search_objective.asha_scheduler`) on its metric, which
    Tune would otherwise set from its ``TuneConfig``."""
    scheduler = asha_scheduler(epochs, grace_period, reduction_factor)
    scheduler.set_search_properties(METRIC, MODE)
    return scheduler


@contextlib.contextmanager
def _numpy_seeded(seed: int) -> Iterator[None]:
    """numpy's global generator seeded (ASHAScheduler draws each trial's bracket from it), then given
    back as it was, so that a replay leaves no trace in the caller's draws."""
    outer = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(outer)


def _one_trial_at_a_time(
    scheduler: TrialScheduler,
    trials: Iterable[tuple[str, Sequence[float]]],
    searcher: PrunedAwareOptunaSearch | None = None,
) -> tuple[list[float], int]:
    """Feed each (trial id, measured curve) to the scheduler (and searcher) epoch by epoch, as Ray
    Tune's controller does with one trial running, until the scheduler stops it or it ends.

    Returns:
        The final mAP of every trial that ran all its epochs, and the epochs all trials trained.
    """
    finals, spent = [], 0
    for trial_id, curve in trials:
        trial = SimpleNamespace(trial_id=trial_id)  # all the scheduler reads of a Trial
        scheduler.on_trial_add(None, trial)
        for epoch, value in enumerate(curve, start=1):
            result = {METRIC: value, "epoch": epoch, TRAINING_ITERATION: epoch}  # as Tune adds it
            if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                break
            if searcher is not None:
                searcher.on_trial_result(trial_id, result)
        spent += epoch
        if epoch == len(curve):
            finals.append(value)
        scheduler.on_trial_complete(None, trial, result)
        if searcher is not None:
            searcher.on_trial_complete(trial_id, result)
    return finals, spent
