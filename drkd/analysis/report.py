"""One call from finished sweeps to the paper's tables (Markdown, LaTeX, CSV), plots, and ``report.md``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from drkd.analysis.experiment_store import ExperimentData, Pick, load_experiments
from drkd.analysis.paper_numbers import load_paper_numbers
from drkd.analysis.paper_tables import SEARCH_KIND, build_all, table1, table5, table6, trial_results
from drkd.analysis.plots import (
    plot_ap_by_size,
    plot_lambda_sensitivity,
    plot_per_seed,
    plot_search_progress,
    plot_training_curves,
)
from drkd.analysis.render import safe_stem, to_markdown, write_table
from drkd.config.storage import default_results_dir, is_uri

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _curve_trials(
    data: ExperimentData, trials: pd.DataFrame, curves_for: Sequence[str] | None, warnings: list[str]
) -> list[tuple[str, str]]:
    """(experiment, trial_id) pairs to draw: those asked for, else each experiment's best completed trial."""
    if curves_for:
        chosen = []
        for wanted in curves_for:
            hits = trials[(trials["trial_id"] == wanted) | (trials["trial_dir"] == wanted)]
            if hits.empty:
                warnings.append(f"--curves {wanted}: no such trial in the experiments read")
            chosen += list(zip(hits["experiment"], hits["trial_id"]))
        return list(dict.fromkeys(chosen))
    chosen = []
    for exp in data.experiments:
        mine = trials[(trials["experiment"] == exp.name) & trials["mAP"].notna()]
        done = mine[mine["status"] == "completed"]
        pool = done if not done.empty else mine
        if not pool.empty:
            best = pool.sort_values(["mAP", "trial_id"], ascending=[False, True], kind="stable").iloc[0]
            chosen.append((exp.name, str(best["trial_id"])))
    return chosen


def _figure(title: str, path: Path, out_dir: Path) -> str:
    return f"![{title}]({path.relative_to(out_dir).as_posix()})"


def make_report(
    experiment_dirs: Sequence[str | Path] | None,
    out_dir: str | Path | None = None,
    pick: Pick = "last",
    curves_for: Sequence[str] | None = None,
    echo: Echo | None = None,
) -> Path:
    """Read experiments, write every table in three formats, the plots, and ``report.md``; return its path.

    Tables go to ``<out_dir>/tables`` (Markdown, LaTeX, CSV), plots to ``<out_dir>/plots``: AP by
    object size (Table 1), λ sensitivity (Table 5), mAP per seed (Table 6), search progress per λ search,
    and training curves.

    Args:
        experiment_dirs: experiment directories or results roots (local or URI); empty or ``None``
            means every experiment under :func:`default_results_dir`.
        out_dir: where the report is written; ``None`` (default): ``<results>/report``. A local
            ``out_dir`` is not searched for experiments.
        pick: the value taken from each trial: ``"last"`` (default, the last reported epoch) or
            ``"best"`` (the best epoch by mAP).
        curves_for: trial ids or trial directories whose training curves to draw; ``None`` or empty
            (default): each experiment's best trial by mAP (completed ones first). Unknown ones are
            listed as warnings.
        echo: receives one line per file read, skipped and written, and per warning; ``None``
            (default): silent.

    Returns:
        The path of ``report.md``.

    Raises:
        NoExperimentsFound: nothing at all is found (:class:`~drkd.analysis.experiment_store.NoExperimentsFound`).
    """
    echo = echo or _quiet
    locations = list(experiment_dirs or [default_results_dir()])
    out = Path(out_dir) if out_dir else default_results_dir() / "report"
    data = load_experiments(locations, ignore=[] if is_uri(out) else [out])
    for line in data.read:
        echo(f"read     {line}")
    for line in data.skipped:
        echo(f"skipped  {line}")
    warnings = list(data.warnings)

    tables = build_all(data, load_paper_numbers(), pick)
    trials = trial_results(data, pick)
    tables_dir, plots_dir = out / "tables", out / "plots"
    by_name = {t.name: t for t in tables}
    figures: dict[str, list[str]] = {}
    if table1.SPEC.name in by_name:
        path = plot_ap_by_size(by_name[table1.SPEC.name], plots_dir / "ap_by_size.png")
        figures[table1.SPEC.name] = [_figure("AP by object size, Table 1 rows", path, out)]
    if table5.SPEC.name in by_name:
        path = plot_lambda_sensitivity(by_name[table5.SPEC.name], plots_dir / "lambda_sensitivity.png")
        figures[table5.SPEC.name] = [_figure("λ sensitivity, ours against the paper", path, out)]
    if table6.SPEC.name in by_name:
        path = plot_per_seed(by_name[table6.SPEC.name], plots_dir / "per_seed_table6.png")
        figures[table6.SPEC.name] = [_figure("mAP per seed against the baseline's band, Table 6 rows", path, out)]
    for table in tables:
        experiment = table.meta.get("experiment")
        if experiment and data.experiment(experiment).kind == SEARCH_KIND:
            path = plot_search_progress(
                trials[trials["experiment"] == experiment],
                plots_dir / f"search_progress_{safe_stem(experiment)}.png",
                experiment,
            )
            figures[table.name] = [_figure(f"search progress, {experiment}", path, out)]
    curves = []
    for experiment, trial_id in _curve_trials(data, trials, curves_for, warnings):
        history = data.reports[(data.reports["experiment"] == experiment) & (data.reports["trial_id"] == trial_id)]
        path = plot_training_curves(
            history,
            plots_dir / f"curves_{safe_stem(experiment)}_{safe_stem(trial_id)}.png",
            f"{experiment} / {trial_id}",
        )
        curves.append(_figure(f"training curves, {experiment} / {trial_id}", path, out))

    sections = [
        "# DRKD: the paper's tables, rebuilt from our sweeps",
        "",
        f"Value taken from each trial: **{pick}** "
        f"({'last reported epoch' if pick == 'last' else 'best epoch by mAP'}).",
        "",
        "## Experiments read",
        "",
    ]
    sections += [f"- {line}" for line in data.read] or ["- (none)"]
    for table in tables:
        written = write_table(table, tables_dir)
        sections += [
            "",
            to_markdown(table, heading_level=2).rstrip("\n"),
            "",
            "Files: " + ", ".join(f"[{fmt}]({p.relative_to(out).as_posix()})" for fmt, p in sorted(written.items())),
        ]
        sections += ["", *figures.get(table.name, [])]
        echo(f"wrote    {written['md']} (+ .tex, .csv)")
    if curves:
        sections += ["", "## Training curves", ""] + [line for fig in curves for line in (fig, "")]
    sections += ["", "## Skipped and warnings", ""]
    sections += [f"- skipped: {line}" for line in data.skipped] + [f"- warning: {line}" for line in warnings] or [
        "- nothing skipped"
    ]
    for line in warnings:
        echo(f"warning  {line}")
    report = out / "report.md"
    report.write_text("\n".join(sections).rstrip() + "\n", encoding="utf-8")
    echo(f"wrote    {report}")
    return report
