"""Replaying a search strategy over a measured grid (bench/search_efficiency.py's engine)."""

from __future__ import annotations

import itertools
import random

import numpy as np
import optuna
import pytest
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from drkd.sweeps.optuna_searcher import PrunedAwareOptunaSearch, startup_trials
from drkd.sweeps.ray_instance import start_private_ray
from drkd.sweeps.search_replay import (
    MeasuredGrid,
    _CategoricalSpace,
    replay_asha_cut,
    replay_search,
    report_measured_curve,
)

AXES = {"distill.drkd.lambda_pr": [0.001, 0.004, 0.016], "distill.drkd.relation_filter": [False, True]}


def _random_grid(seed: int, epochs: int = 4) -> MeasuredGrid:
    rng = random.Random(seed)
    curves = {}
    for point in itertools.product(*AXES.values()):
        final = rng.uniform(1.0, 2.0)
        curves[point] = [final * e / epochs + rng.uniform(-0.1, 0.1) for e in range(1, epochs + 1)]
    return MeasuredGrid(AXES, curves)


def test_a_grid_must_measure_every_configuration_for_the_same_epochs() -> None:
    grid = _random_grid(0)
    assert grid.epochs == 4 and grid.compute == 24 and grid.best == max(c[-1] for c in grid.curves.values())
    with pytest.raises(ValueError, match="not the 6 its axes span: 1 missing, 0 outside"):
        MeasuredGrid(AXES, dict(list(grid.curves.items())[:5]))
    with pytest.raises(ValueError, match="1 missing, 1 outside the axes"):
        MeasuredGrid(AXES, {**dict(list(grid.curves.items())[:5]), (0.002, True): [1.0] * 4})
    uneven = dict(grid.curves)
    uneven[(0.001, False)] = [1.0, 2.0]
    with pytest.raises(ValueError, match=r"same number \(>= 1\) of epochs; found \[2, 4\]"):
        MeasuredGrid(AXES, uneven)
    with pytest.raises(ValueError, match="strategy 'grid'"):
        replay_search(grid, "grid", 4, 0)
    with pytest.raises(ValueError, match="budget 0"):
        replay_search(grid, "tpe", 0, 0)


def test_random_search_replays_exactly_what_optunas_random_sampler_proposes() -> None:
    grid = _random_grid(1)
    outcome = replay_search(grid, "random", budget=5, seed=3)
    # the same sampler and seed asked directly, without Tune's searcher or the replay
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    proposed = []
    for _ in range(5):
        trial = study.ask()
        _CategoricalSpace(AXES)(trial)
        point = tuple(trial.params[k] for k in AXES)
        proposed.append(point)
        study.tell(trial, grid.curves[point][-1])
    assert outcome.best_final == max(grid.curves[p][-1] for p in proposed)
    assert outcome.epochs == 5 * grid.epochs and outcome.trials == 5  # no scheduler stops a random trial


def test_with_a_budget_far_beyond_the_grid_every_strategy_finds_its_best() -> None:
    grid = _random_grid(2)
    for strategy in ("random", "tpe"):
        assert replay_search(grid, strategy, budget=40, seed=0).best_final == grid.best


def test_asha_spends_less_when_its_grace_epoch_ranks_as_the_last_does_and_loses_the_best_when_it_inverts() -> None:
    epochs = 4
    points = list(itertools.product(*AXES.values()))
    finals = {p: 1.0 + i for i, p in enumerate(points)}
    # early epochs rank the configurations as the last one does
    agreeing = MeasuredGrid(AXES, {p: [f * e for e in range(1, epochs + 1)] for p, f in finals.items()})
    # epoch 1 ranks them in reverse: the eventual best looks worst when ASHA first cuts
    inverted = MeasuredGrid(AXES, {p: [10.0 - f] + [f] * (epochs - 1) for p, f in finals.items()})
    budget, seeds = 12, range(10)
    for grid in (agreeing, inverted):
        fifo = [replay_search(grid, "tpe", budget, s) for s in seeds]
        asha = [replay_search(grid, "tpe_asha", budget, s, grace_period=1) for s in seeds]
        assert all(o.epochs == budget * epochs for o in fifo)
        assert sum(o.epochs for o in asha) < sum(o.epochs for o in fifo)  # ASHA stopped trials
    asha_inverted = [replay_search(inverted, "tpe_asha", budget, s, grace_period=1) for s in seeds]
    tpe_inverted = [replay_search(inverted, "tpe", budget, s) for s in seeds]
    assert sum(o.best_final for o in asha_inverted) < sum(o.best_final for o in tpe_inverted)
    # a grace period at the last epoch stops nothing: TPE + ASHA is then TPE, trial for trial
    assert [replay_search(inverted, "tpe_asha", budget, s, grace_period=epochs) for s in seeds] == tpe_inverted


def test_a_replay_gives_numpys_global_generator_back_as_it_found_it() -> None:
    """ASHA draws from numpy's global generator, which the replay seeds: the caller's draws after a
    replay are the ones it would have made without it, and the replay's outcome does not depend on
    what the caller drew before."""
    grid = _random_grid(3)
    np.random.seed(11)
    expected = np.random.random_sample(3)
    np.random.seed(11)
    first = replay_search(grid, "tpe_asha", budget=8, seed=5, grace_period=1)
    assert np.array_equal(np.random.random_sample(3), expected)
    np.random.seed(99)
    assert replay_search(grid, "tpe_asha", budget=8, seed=5, grace_period=1) == first


def test_an_asha_cut_over_measured_trials_keeps_the_best_where_its_epoch_ranks_as_the_last_does() -> None:
    epochs, finals = 4, [1.0 + 0.1 * i for i in range(12)]
    agreeing = [[f * e / epochs for e in range(1, epochs + 1)] for f in finals]
    inverted = [[3.0 - f] + [f] * (epochs - 1) for f in finals]  # epoch 1 ranks them in reverse
    best, everything = max(finals), len(finals) * epochs
    for seed in range(20):
        cut = replay_asha_cut(agreeing, grace_period=1, seed=seed)
        assert cut.best_final == best and cut.epochs < everything and cut.trials == 12
        # a grace period at the last epoch stops nothing
        assert replay_asha_cut(inverted, grace_period=epochs, seed=seed) == replay_asha_cut(agreeing, epochs, seed)
        assert replay_asha_cut(agreeing, epochs, seed).epochs == everything
    # in reverse at the cut, the best trial is stopped unless it happens to come first
    lost = sum(replay_asha_cut(inverted, grace_period=1, seed=s).best_final < best for s in range(20))
    assert lost >= 15
    with pytest.raises(ValueError, match="grace_period 5: between 1 and the trials' 4 epochs"):
        replay_asha_cut(agreeing, grace_period=5, seed=0)
    with pytest.raises(ValueError, match=r"same number \(>= 1\) of epochs; found \[2, 4\]"):
        replay_asha_cut([*agreeing, [1.0, 2.0]], grace_period=1, seed=0)


@pytest.mark.slow
def test_the_replay_decides_as_a_real_ray_tune_run_of_the_same_searcher_and_scheduler(tmp_path) -> None:
    # at 12 trials TPE's "good" set (the top tenth) is filled from pruned trials when fewer have
    # finished, so the value each was stopped on, and when Optuna learns it, decide the proposals
    epochs = 4
    points = list(itertools.product(*AXES.values()))
    grid = MeasuredGrid(AXES, {p: [10.0 - i] + [1.0 + i] * (epochs - 1) for i, p in enumerate(points)})
    budget, seed = 12, 2
    start_private_ray(num_cpus=2, log_to_driver=False, configure_logging=False)
    try:
        np.random.seed(seed)  # ASHA's bracket draw, as the replay seeds it
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(budget, None))
        results = tune.Tuner(
            tune.with_parameters(report_measured_curve, grid=grid),
            tune_config=tune.TuneConfig(
                metric="mAP",
                mode="max",
                search_alg=PrunedAwareOptunaSearch(
                    space=_CategoricalSpace(AXES), metric="mAP", mode="max", sampler=sampler, total_epochs=grid.epochs
                ),
                scheduler=ASHAScheduler(time_attr="epoch", max_t=grid.epochs, grace_period=1, reduction_factor=2),
                num_samples=budget,
                max_concurrent_trials=1,
            ),
            run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    epochs = sum(int(r.metrics["epoch"]) for r in results)
    finals = [r.metrics["mAP"] for r in results if r.metrics["epoch"] == grid.epochs]
    outcome = replay_search(grid, "tpe_asha", budget, seed, grace_period=1)
    assert (outcome.epochs, outcome.best_final) == (epochs, max(finals))
    assert epochs < budget * grid.epochs  # the case exercises ASHA's cuts
