"""Search efficiency on the miniature: grid against random search, TPE and TPE + ASHA.

    python bench/search_efficiency.py [--replays 200] [--budgets 2,3,4,6] [--grace 2,4,6,8]
                                      [--name search_grid] [--storage-path DIR]
    python bench/search_efficiency.py --experiment results/table6 [results/table6_rest] --seeds 0,1,2

1. Trains every configuration of a small DRKD space on the embedded default's search budget, as
   `python sweeps/lambda_search.py` trains its trials (the same base config, teacher, backbone,
   seed 0, 2 DDP workers): λ1 (PR) and λ3 (INS) at ⅛, 1 and 8 × the paper's one-stage value (the
   ends of the range `lambda_search.py` samples), all three terms on, λ2 and the relation filter
   at the paper's; 9 trials of the search's epochs, one Ray Tune experiment
   (resumed when started again with the same name; make_tables reads it like any other).
2. Replays each strategy over that measured grid (:mod:`drkd.sweeps.search_replay`: the real
   Optuna samplers and Ray Tune's ASHA scheduler, each trial's mAP looked up; the default search
   trains every trial from seed 0, so a lookup is what retraining would give): random search, TPE
   (the default search's random start), and TPE under ASHA at each grace period of ``--grace``,
   ``--replays`` times each (sampler seeds 0, 1, ...) at each trial budget of ``--budgets``.
3. Prints, per strategy and budget, the compute spent (epochs, and their share of the grid's) and
   the best final mAP reached: its mean over replays, the mean gap to the grid's best with a 95 %
   interval, and how often it came within 0.2 mAP of the grid's best (the miniature issue's goal:
   TPE + ASHA within 0.2 mAP on at most 40 % of the grid's compute).

With ``--experiment`` it runs nothing: it replays over a grid already run, one axis of it, one grid
per training seed (Table 6's one-stage half is a 9-point grid of ``distill.method`` per seed).

What the replay cannot show: a search of the continuous space `lambda_search.py` samples (log-
uniform λ, the terms switched), nor another training seed; the grid's best is itself one seed's
measurement, so differences between configurations below the paired seed noise (README) are noise
that every strategy is ranked against alike.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections.abc import Iterator

import pandas as pd
from ray import tune

from drkd.analysis.experiment_store import load_experiments
from drkd.analysis.paper_tables.difference import mean_interval
from drkd.config.trial_labels import CELL_KEY, ROLE_KEY, STUDENT
from drkd.distill.drkd.params import paper_lambdas
from drkd.sweeps.commands import DEFAULT_SEARCH_EPOCHS, embedded_search_base
from drkd.sweeps.search_replay import MeasuredGrid, replay_search
from drkd.sweeps.tuner import SweepPlan, run_sweep

KIND = "search_grid"
LAMBDA_PR, LAMBDA_IR, LAMBDA_INS = paper_lambdas(two_stage=False)
AXES = {
    "distill.drkd.lambda_pr": [LAMBDA_PR / 8, LAMBDA_PR, LAMBDA_PR * 8],
    "distill.drkd.lambda_ins": [LAMBDA_INS / 8, LAMBDA_INS, LAMBDA_INS * 8],
}
WITHIN = 0.2  # mAP: the miniature issue's "within 0.2 mAP of the grid's best"


def grid_cells(epochs: int) -> list[dict]:
    """One trial per point of AXES (all three DRKD terms on, λ2 and the relation filter at the paper's)."""
    cells = []
    for point in itertools.product(*AXES.values()):
        values = dict(zip(AXES, point))
        label = " ".join(f"{k.split('.')[-1]}={v:g}" for k, v in values.items())
        cells.append(
            {
                CELL_KEY: label,
                ROLE_KEY: STUDENT,
                "train.epochs": epochs,
                "distill.drkd.pr": True,
                "distill.drkd.ir": True,
                "distill.drkd.ins": True,
                "distill.drkd.lambda_ir": LAMBDA_IR,
                "distill.drkd.relation_filter": True,
                **values,
            }
        )
    return cells


def trial_curves(reports: pd.DataFrame) -> Iterator[tuple[tuple, pd.Series, list[float]]]:
    """Per trial of ``reports`` (Tune's per-epoch rows): its (experiment, trial_id), its first row
    (the trial's config columns) and its mAP per epoch, in epoch order."""
    for key, rows in reports.groupby(["experiment", "trial_id"]):
        rows = rows.sort_values("epoch")
        yield key, rows.iloc[0], [float(m) for m in rows["mAP"]]


def measured_grid(path: str, cells: list[dict], epochs: int) -> MeasuredGrid:
    """The grid's per-epoch mAP by configuration, read back from its experiment; every trial must be
    one of ``cells`` (an experiment of another grid under the same name is refused), each once."""
    expected = {c[CELL_KEY]: c for c in cells}
    curves = {}
    for (_, trial_id), first, curve in trial_curves(load_experiments([path]).reports):
        cell = expected.get(first["config/cell"])
        if cell is None:
            raise SystemExit(
                f"search_efficiency.py: trial {trial_id} of {path} is the cell {first['config/cell']!r}, not one of "
                "this grid's: pass another --name"
            )
        point = tuple(_as(AXES[k], first[f"config/{k}"]) for k in AXES)
        if point != tuple(cell[k] for k in AXES) or point in curves:
            raise SystemExit(
                f"search_efficiency.py: trial {trial_id} of {path} repeats or mislabels {cell[CELL_KEY]!r}"
            )
        if len(curve) != epochs:
            raise SystemExit(
                f"search_efficiency.py: trial {trial_id} ({cell[CELL_KEY]}) reported {len(curve)} of {epochs} epochs "
                "(diverged or interrupted: rerun to resume it, or lower its λ)"
            )
        curves[point] = curve
    return MeasuredGrid(AXES, curves)


def _as(values: list, stored: object) -> object:
    """The axis value a stored config value stands for (floats round-trip through JSON)."""
    for v in values:
        if abs(float(stored) - v) <= 1e-9 * abs(v):
            return v
    raise SystemExit(f"search_efficiency.py: a trial's value {stored!r} is none of {values}")


def grid_of_experiment(paths: list[str], axis: str, seed: int, epochs: int) -> MeasuredGrid:
    """A one-axis grid read from experiments that ran every value of ``axis`` (for example Table 6's
    ``distill.method``, pooled over an interrupted run and its continuation): the trials of
    ``train.seed`` ``seed`` that ran all ``epochs`` epochs, one per value; an unfinished trial
    (interrupted, diverged) is left out and named."""
    reports = load_experiments(paths).reports
    column = f"config/{axis}"
    if column not in reports:
        raise SystemExit(f"search_efficiency.py: no trial of {', '.join(paths)} sets {axis}")
    curves: dict = {}
    for (experiment, trial_id), first, curve in trial_curves(reports[reports["config/train.seed"] == seed]):
        value = first[column]
        if len(curve) != epochs:
            print(
                f"left out: {experiment} trial {trial_id} ({axis}={value!r}) reported {len(curve)} of {epochs} epochs"
            )
            continue
        if (value,) in curves:
            raise SystemExit(f"search_efficiency.py: {axis}={value!r} finished twice with seed {seed}")
        curves[(value,)] = curve
    if not curves:
        raise SystemExit(f"search_efficiency.py: no trial of {', '.join(paths)} finished with train.seed {seed}")
    return MeasuredGrid({axis: sorted(v for (v,) in curves)}, curves)


def print_efficiency(grid: MeasuredGrid, budgets: list[int], graces: list[int], replays: int) -> None:
    """The grid's spread, then per budget and strategy the compute spent and the best final mAP reached."""
    finals = sorted((c[-1], p) for p, c in grid.curves.items())
    print(f"\nthe grid: {len(finals)} configurations x {grid.epochs} epochs = {grid.compute} epochs of training")
    print(f"final mAP {finals[0][0]:.2f} to {finals[-1][0]:.2f}, mean {statistics.mean(f for f, _ in finals):.2f} "
          f"± {statistics.stdev(f for f, _ in finals):.2f}; best {finals[-1][0]:.2f} at "
          + ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(grid.axes, finals[-1][1])))  # fmt: skip
    near = sum(f >= grid.best - WITHIN for f, _ in finals)
    print(f"{near} of {len(finals)} configurations end within {WITHIN} mAP of the best\n")
    print(
        f"| strategy | trials | epochs (share of the grid's) | best final mAP, mean | gap to the grid's best [95 % CI] | within {WITHIN} |"
    )
    print("|---|---:|---:|---:|---|---:|")
    print(f"| grid | {len(finals)} | {grid.compute} (100 %) | {grid.best:.2f} | 0 | 100 % |")
    strategies = [("random", "random", 0), ("tpe", "TPE", 0)] + [
        ("tpe_asha", f"TPE + ASHA (grace {g})", g) for g in graces
    ]
    for budget in budgets:
        for strategy, label, grace in strategies:
            outcomes = [replay_search(grid, strategy, budget, seed, grace_period=grace or 1) for seed in range(replays)]
            gaps = [grid.best - o.best_final for o in outcomes]
            spent = statistics.mean(o.epochs for o in outcomes)
            low, high = mean_interval(gaps)
            hit = sum(g <= WITHIN for g in gaps) / len(gaps)
            print(
                f"| {label} | {budget} | {spent:.1f} ({100 * spent / grid.compute:.0f} %) | "
                f"{statistics.mean(o.best_final for o in outcomes):.2f} | {statistics.mean(gaps):.2f} [{low:.2f}, {high:.2f}] | {100 * hit:.0f} % |"
            )


def grace_periods(given: str | None, epochs: int) -> list[int]:
    """``--grace`` as a list; by default the same places in any schedule: 1/6 to 4/6 of its epochs."""
    if given:
        return [int(g) for g in given.split(",")]
    return sorted({max(1, epochs * k // 6) for k in range(1, 5)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replays", type=int, default=200, help="replays of each strategy and budget (default 200)")
    parser.add_argument("--budgets", default="2,3,4,6", help="trial budgets, comma-separated (default 2,3,4,6)")
    parser.add_argument(
        "--grace",
        help="ASHA grace periods to replay, comma-separated (default: 1/6, 2/6, 3/6 and 4/6 of the trials' "
        "epochs, 2,4,6,8 at the search's 12)",
    )
    parser.add_argument("--name", default=KIND, help=f"the grid's experiment name (default {KIND})")
    parser.add_argument("--storage-path", help="results root (default: $DRKD_RESULTS or ./results)")
    parser.add_argument(
        "--experiment",
        nargs="+",
        help="replay over this finished grid experiment instead of running the λ grid (with --axis; "
        "one grid per seed of --seeds)",
    )
    parser.add_argument(
        "--axis", default="distill.method", help="with --experiment: the grid's axis (default distill.method)"
    )
    parser.add_argument(
        "--seeds", default="0", help="with --experiment: the train.seed values, each its own grid (default 0)"
    )
    parser.add_argument(
        "--epochs", type=int, default=DEFAULT_SEARCH_EPOCHS, help="with --experiment: the trials' epochs"
    )
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    if args.experiment:
        graces = grace_periods(args.grace, args.epochs)
        for seed in (int(s) for s in args.seeds.split(",")):
            print(f"\n## {', '.join(args.experiment)}, {args.axis}, train.seed {seed}")
            print_efficiency(
                grid_of_experiment(args.experiment, args.axis, seed, args.epochs), budgets, graces, args.replays
            )
        return
    base, settings = embedded_search_base(args.name)
    if args.storage_path:
        settings.storage_path = args.storage_path
    epochs = base.train.total_epochs
    graces = grace_periods(args.grace, epochs)
    cells = grid_cells(epochs)
    plan = SweepPlan(KIND, base, settings, grid=cells)
    run_sweep(plan, resume=tune.Tuner.can_restore(plan.path))
    print_efficiency(measured_grid(plan.path, cells, epochs), budgets, graces, args.replays)


if __name__ == "__main__":
    main()
