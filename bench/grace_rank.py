"""Where ASHA's grace period belongs on the default search: the rank agreement of each epoch with the last.

    python bench/grace_rank.py [--trials 12] [--name grace_rank] [--search-seed 0] [--storage-path DIR] [--orders 200]
    python bench/grace_rank.py --experiment results/search_grid [--epochs 12]

Runs `python sweeps/lambda_search.py` on the embedded default with every trial trained to its last
epoch (``--grace-period`` = ``train.epochs``: ASHA stops nothing) and every trial sampled at random
(``--random-trials`` = ``--trials``: a random sample of the DRKD space, not TPE's narrowing one), then
prints, for each earlier epoch e, Spearman's ρ between the trials' mAP at e and at the last epoch,
with its 95 % confidence interval (:func:`drkd.analysis.rank_agreement.spearman_interval`). An ASHA
cut at epoch e keeps the right trials only where ρ is clearly above 0. Then it replays ASHA at each
grace period over the measured trials in ``--orders`` random orders
(:func:`drkd.sweeps.search_replay.replay_asha_cut`): the compute a cut there saves, and how often it
keeps the best trial. A different ``--search-seed`` draws other trials: a grace period chosen on one
sample is confirmed on another. An interrupted run continues
(``--resume``) when started again with the same name. The backbone is pretrained and the default
teacher trained first if they are not cached (as `lambda_search.py` does on a first run).

With ``--experiment`` it trains nothing: it measures the same over the trials of experiments already
run whose trials were not cut (`bench/search_efficiency.py`'s grid, an ablation grid), every trial
that reached ``--epochs`` counted once. Those trials are the grid's points, not a random sample of
the space, so their ρ says how well an early epoch ranks *those* configurations.
"""

from __future__ import annotations

import argparse
import posixpath
import statistics

import pandas as pd

from drkd.analysis.experiment_store import NoExperimentsFound, load_experiments
from drkd.analysis.rank_agreement import rank_agreement, spearman_interval
from drkd.config.storage import default_results_dir
from drkd.sweeps.commands import DEFAULT_SEARCH_EPOCHS, lambda_search
from drkd.sweeps.search_replay import replay_asha_cut


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12, help="random trials, each run to its last epoch (default 12)")
    parser.add_argument("--name", default="grace_rank", help="experiment name (default grace_rank)")
    parser.add_argument(
        "--search-seed", type=int, default=0, help="the Optuna sampler's seed: which trials are drawn (default 0)"
    )
    parser.add_argument("--storage-path", help="results root (default: $DRKD_RESULTS or ./results)")
    parser.add_argument("--orders", type=int, default=200, help="random trial orders for the ASHA replay (default 200)")
    parser.add_argument(
        "--experiment",
        nargs="+",
        help="measure over these finished experiments' trials instead of running a search (nothing is trained)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_SEARCH_EPOCHS,
        help=f"with --experiment: the trials' last epoch (default {DEFAULT_SEARCH_EPOCHS}, the search's)",
    )
    args = parser.parse_args()
    if args.experiment:
        try:
            data = load_experiments(args.experiment)
        except NoExperimentsFound as exc:
            raise SystemExit(f"grace_rank.py: {exc}") from None
        if data.skipped:  # a location named but not read would silently drop its trials
            raise SystemExit("grace_rank.py: skipped " + "; ".join(data.skipped))
        print_grace_rank(data.reports, args.epochs, args.orders, "")
        return
    storage = args.storage_path or str(default_results_dir().resolve())
    path = posixpath.join(storage, args.name)
    argv = ["--name", args.name, "--storage-path", storage, "--num-trials", str(args.trials)]
    argv += ["--random-trials", str(args.trials), "--grace-period", str(DEFAULT_SEARCH_EPOCHS)]
    argv += ["--search-seed", str(args.search_seed)]
    resume = ["--resume"] if posixpath.isdir(path) else []
    if lambda_search(argv + resume) != 0:
        raise SystemExit(f"grace_rank.py: the search failed (see above); rerun to continue it ({path})")

    print_grace_rank(load_experiments([path]).reports, DEFAULT_SEARCH_EPOCHS, args.orders, "random ")


def print_grace_rank(reports: pd.DataFrame, final: int, orders: int, kind: str) -> None:
    """Spearman's ρ of each epoch before ``final`` with ``final`` over the trials of ``reports``
    (Tune's per-epoch rows, one trial per (experiment, trial_id)), then the ASHA replay."""
    histories = {
        key: {int(e): float(m) for e, m in zip(rows["epoch"], rows["mAP"])}
        for key, rows in reports.groupby(["experiment", "trial_id"])
    }
    finals = [h[final] for h in histories.values() if final in h]
    if len(finals) < 4:
        raise SystemExit(f"grace_rank.py: {len(finals)} trials reached epoch {final}; a rank correlation needs 4")
    print(
        f"\n{len(finals)} of {len(histories)} {kind}trials reached epoch {final}; their final mAP: "
        f"{min(finals):.2f} to {max(finals):.2f}, mean {statistics.mean(finals):.2f} ± {statistics.stdev(finals):.2f}"
    )
    print(f"| epoch | Spearman rho with epoch {final} | 95 % interval | n | mean mAP at the epoch |")
    print("|---:|---:|---|---:|---:|")
    for epoch in range(1, final):
        rho, n = rank_agreement(histories, epoch, final)
        at = [h[epoch] for h in histories.values() if epoch in h]
        if rho is None:
            print(f"| {epoch} | not measurable | | {n} | {statistics.mean(at):.2f} |")
            continue
        low, high = spearman_interval(rho, n)
        print(f"| {epoch} | {rho:+.2f} | [{low:+.2f}, {high:+.2f}] | {n} | {statistics.mean(at):.2f} |")
    print_asha_cuts([h for h in histories.values() if final in h], final, orders)


def print_asha_cuts(histories: list[dict[int, float]], final: int, orders: int) -> None:
    """What ASHA (reduction factor 2, as the default search) would have done at each grace period
    with these trials arriving in ``orders`` random orders: compute spent, how often the best
    trial survived, and how far below the best the trial it kept ended."""
    curves = [[h[e] for e in range(1, final + 1)] for h in histories]
    best = max(c[-1] for c in curves)
    print(
        f"\nASHA cuts replayed over these {len(curves)} trials in {orders} random orders (drkd.sweeps.search_replay):"
    )
    print("| grace period | compute (share of all epochs) | best trial kept | mean gap to the best final mAP |")
    print("|---:|---:|---:|---:|")
    for grace in range(1, final + 1):
        outcomes = [replay_asha_cut(curves, grace, seed) for seed in range(orders)]
        compute = statistics.mean(o.epochs for o in outcomes) / (len(curves) * final)
        kept = sum(o.best_final == best for o in outcomes) / orders
        gap = statistics.mean(best - o.best_final for o in outcomes)
        print(f"| {grace} | {100 * compute:.0f} % | {100 * kept:.0f} % | {gap:.2f} |")


if __name__ == "__main__":
    main()
