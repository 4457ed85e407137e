"""Rebuild the DRKD paper's tables and plots from finished (or interrupted) sweeps.

python analysis/make_tables.py                       # every experiment under $DRKD_RESULTS or ./results
python analysis/make_tables.py results/table1 s3://bucket/results --pick best --out report/
python analysis/make_tables.py --curves 3f2a1_00004  # training curves for chosen trials
"""

from __future__ import annotations

import argparse
import sys

from drkd.analysis.experiment_store import NoExperimentsFound
from drkd.analysis.report import make_report
from drkd.config.storage import default_results_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "experiments",
        nargs="*",
        help=f"experiment directories or results roots, local or URI (default: {default_results_dir()})",
    )
    parser.add_argument("--out", default=None, help="output directory (default: <results>/report)")
    parser.add_argument(
        "--pick",
        choices=("last", "best"),
        default="last",
        help="metric from each trial's last epoch (default) or its best epoch by mAP",
    )
    parser.add_argument(
        "--curves",
        nargs="+",
        metavar="TRIAL_ID",
        default=None,
        help="trials to draw training curves for (default: each experiment's best)",
    )
    args = parser.parse_args(argv)
    try:
        make_report(args.experiments, args.out, pick=args.pick, curves_for=args.curves, echo=print)
    except NoExperimentsFound as exc:
        print(f"make_tables: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
