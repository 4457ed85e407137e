"""Report figures (PNG, matplotlib Agg): λ sensitivity, AP by object size, mAP per seed, search progress,
training curves."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from drkd.analysis.experiment_store import COMPLETED, EARLY_STOPPED  # noqa: E402
from drkd.analysis.paper_tables.settings import LAMBDA_SYMBOLS, LAMBDAS  # noqa: E402
from drkd.analysis.paper_tables.table_spec import TEACHER_PREFIX, PaperTable  # noqa: E402

OURS_COLOR, PAPER_COLOR = "#1f77b4", "#d62728"
SIZE_COLORS = {"AP_S": "#4c72b0", "AP_M": "#55a868", "AP_L": "#c44e52"}
DPI = 110
# per-seed plot: a run's dot (area DOT_AREA pt²), the widest spacing seed_offsets gives a row's dots
# (x-units), and the inches each row of a panel gets at least so that dots that far apart stay 1.5
# dot diameters apart however many rows
DOT_AREA = 18
SEED_STEP = 0.12
ROW_INCHES = 1.5 * DOT_AREA**0.5 / SEED_STEP / 72


def _save(fig: plt.Figure, path: Path, layout: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


def _no_data(ax: plt.Axes, text: str = "no completed runs yet") -> None:
    ax.text(0.5, 0.92, text, ha="center", va="top", transform=ax.transAxes, color="grey")
    ax.set_yticks([])


def plot_lambda_sensitivity(table5: PaperTable, path: Path) -> Path:
    """One panel per λ: our mAP (mean ± std) against λ, the paper's curve on its own right-hand axis.

    Two y axes because a small embedded run and COCO-scale numbers differ in level; the shapes
    (where the optimum lies, how flat the curve is) are what compare.
    """
    frame = table5.frame
    fig, axes = plt.subplots(1, len(LAMBDAS), figsize=(4.2 * len(LAMBDAS), 3.6))
    for ax, lam in zip(axes, LAMBDAS):
        switches = table5.meta.get("switches", {}).get(lam, [])
        ax.set_title(
            f"{LAMBDA_SYMBOLS[lam]} ({lam})" + (f" — ours: {', '.join(switches)}" if switches else ""), fontsize=9
        )
        ax.set_xlabel(LAMBDA_SYMBOLS[lam])
        ax.set_ylabel("our mAP (%)", color=OURS_COLOR)
        twin = ax.twinx()
        twin.set_ylabel("paper mAP (%)", color=PAPER_COLOR)
        drawn = False
        for model, block in frame.groupby("Model", sort=False):
            ours = block[[lam, f"{lam}_mAP", f"{lam}_mAP_std"]].dropna(subset=[lam, f"{lam}_mAP"])
            if len(ours):
                ax.errorbar(
                    ours[lam],
                    ours[f"{lam}_mAP"],
                    yerr=ours[f"{lam}_mAP_std"].fillna(0.0),
                    marker="o",
                    capsize=3,
                    color=OURS_COLOR,
                    label=f"ours, {model}",
                )
                drawn = True
            paper = block[[lam, f"{lam}_mAP_paper"]].dropna()
            if len(paper) and not twin.lines:
                twin.plot(
                    paper[lam],
                    paper[f"{lam}_mAP_paper"],
                    marker="s",
                    linestyle="--",
                    color=PAPER_COLOR,
                    label="paper (RetinaNet)",
                )
        if not drawn:
            _no_data(ax)
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        if handles:
            ax.legend(handles=handles, fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    fig.suptitle("λ sensitivity (Table 5)", fontsize=11)
    return _save(fig, path)


def _row_label(row: pd.Series) -> str:
    if row["Model"] != "Student":
        return str(row["Model"])
    return "+".join(t for t in ("PR", "IR", "INS") if row[t] == "✓") or "baseline"


def seed_offsets(n: int, span: float = 0.4) -> list[float]:
    """Horizontal offsets of a row's ``n`` dots, in seed order, centred on the row, evenly spaced at
    most :data:`SEED_STEP` (0.12) apart and at most ``span`` wide in all: runs that end at nearly the same mAP stay apart,
    each with its seed.

    Args:
        n: number of runs in the row.
        span: width they spread over, in x-axis units (a row is 1 wide); default 0.4.
    """
    if n <= 1:
        return [0.0] * n
    step = min(SEED_STEP, span / (n - 1))
    return [(k - (n - 1) / 2) * step for k in range(n)]


def in_seed_order(runs: Sequence[tuple[int | None, float]]) -> list[tuple[int | None, float]]:
    """A row's ``(seed, mAP)`` runs by ascending seed, runs without a seed last (stable otherwise)."""
    return sorted(runs, key=lambda run: (run[0] is None, run[0] if run[0] is not None else 0))


def per_seed_width(rows: int) -> float:
    """Figure width in inches for per-seed panels of ``rows`` rows: 9, or wider where ``rows`` rows of
    :data:`ROW_INCHES` need more (the inheriting rows give 18 per panel). The axes get matplotlib's
    default share of the width (``figure.subplot.left`` to ``right``), which ``tight_layout`` only widens."""
    share = plt.rcParams["figure.subplot.right"] - plt.rcParams["figure.subplot.left"]
    return max(9.0, ROW_INCHES * rows / share)


def plot_per_seed(table: PaperTable, path: Path, row_label: str = "Method") -> Path:
    """Write :func:`per_seed_figure` of ``table`` to the PNG ``path``; returns ``path``."""
    return _save(per_seed_figure(table, row_label), path)


def per_seed_figure(table: PaperTable, row_label: str = "Method") -> plt.Figure:
    """Each student row's mAP per seed beside the baseline's band, one panel per block (Table 6)
    that has a finished run; the blocks without one are named in the title.

    A dot per completed run (its seed beside it; a row's dots side by side in seed order,
    :func:`seed_offsets`), a bar at the row's mean; the grey band is the
    baseline row's mean ± one sample standard deviation over its seeds, the dashed line its mean.
    A row whose dots all sit outside the band differs from the baseline by more than its seed
    noise; the table's Δ interval says so exactly.

    Args:
        table: a built table whose ``meta["per_seed"]`` lists each student row's block, labels,
            baseline flag and (seed, mAP) runs (:func:`~drkd.analysis.paper_tables.build.build_table`).
        row_label: the label column that names a row on the x axis; default ``"Method"``.
    """
    rows = table.meta.get("per_seed", [])
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    # a block without a single run gets no panel of its own (an empty mAP axis says nothing); it is
    # named in the title instead, unless no block has runs at all
    drawn = [b for b in blocks if any(r["runs"] for r in rows if r["block"] == b)] or blocks[:1] or [None]
    empty = [b for b in blocks if b not in drawn]
    most = max((sum(r["block"] == b for r in rows) for b in drawn), default=1)
    fig, axes = plt.subplots(len(drawn), 1, figsize=(per_seed_width(most), 1.0 + 3.3 * len(drawn)), squeeze=False)
    for ax, block in zip(axes[:, 0], drawn):
        mine = [r for r in rows if r["block"] == block]
        ax.set_title(_block_name(block) if block else table.title, fontsize=9)
        if not any(r["runs"] for r in mine):
            _no_data(ax)
            continue
        base = [v for r in mine if r["baseline"] for _, v in r["runs"]]
        if base:
            mean = float(np.mean(base))
            std = float(np.std(base, ddof=1)) if len(base) > 1 else 0.0
            ax.axhspan(mean - std, mean + std, color="grey", alpha=0.2, label=f"baseline mean ± std (n = {len(base)})")
            ax.axhline(mean, color="grey", linestyle="--", linewidth=1)
        for x, r in enumerate(mine):
            values = [v for _, v in r["runs"]]
            if not values:
                # x in data, y in axes coordinates: a label at the panel's foot, not a mark on the mAP scale
                ax.text(
                    x,
                    0.02,
                    "not run",
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="grey",
                )
                continue
            color = "grey" if r["baseline"] else OURS_COLOR
            runs = in_seed_order(r["runs"])
            xs = [x + dx for dx in seed_offsets(len(runs))]
            ax.scatter(xs, [v for _, v in runs], s=DOT_AREA, color=color, zorder=3)
            ax.hlines(float(np.mean(values)), x - 0.3, x + 0.3, color=color, linewidth=2, zorder=3)
            for xi, (seed, v) in zip(xs, runs):
                if seed is not None:
                    ax.annotate(str(seed), (xi, v), xytext=(3, 0), textcoords="offset points", fontsize=6, va="center")
        ax.set_xlim(-0.5, len(mine) - 0.5)  # each row exactly 1 x-unit of the axes, as per_seed_width assumes
        ax.set_xticks(
            range(len(mine)), [str(r["labels"].get(row_label, "")) for r in mine], fontsize=8, rotation=30, ha="right"
        )
        ax.set_ylabel("mAP (%)")
        ax.grid(axis="y", alpha=0.3)
        if base:
            ax.legend(fontsize=7, loc="best")
    title = f"{table.title}: mAP per seed (dots, seed beside), row mean (bar), baseline band"
    if empty:
        title += "\nno completed runs yet: " + "; ".join(_block_name(b) for b in empty)
    fig.suptitle(title, fontsize=10)
    return fig


def _block_name(block: tuple) -> str:
    return " ".join(str(b) for b in block)


def plot_ap_by_size(table1: PaperTable, path: Path) -> Path:
    """AP_S / AP_M / AP_L per Table 1 row, one panel per block: ours solid, the paper's hatched."""
    frame = table1.frame
    blocks = list(dict.fromkeys(zip(frame["Schedule"], frame["Framework"])))
    fig, axes = plt.subplots(len(blocks), 1, figsize=(9, 3.2 * max(1, len(blocks))), squeeze=False)
    width = 0.13
    for ax, (schedule, fw) in zip(axes[:, 0], blocks):
        rows = frame[(frame["Schedule"] == schedule) & (frame["Framework"] == fw)]
        labels = [_row_label(r) for _, r in rows.iterrows()]
        x = np.arange(len(rows))
        for i, size in enumerate(("AP_S", "AP_M", "AP_L")):
            offset = (i - 1) * 2 * width
            ours = rows[size].to_numpy(dtype=float)
            ax.bar(
                x + offset - width / 2,
                np.nan_to_num(ours),
                width,
                yerr=rows[f"{size}_std"].to_numpy(dtype=float),  # NaN (n < 2): no error bar
                color=SIZE_COLORS[size],
                label=f"{size} ours",
                capsize=2,
            )
            ax.bar(
                x + offset + width / 2,
                rows[f"{size}_paper"].fillna(0.0),
                width,
                color=SIZE_COLORS[size],
                alpha=0.35,
                hatch="//",
                label=f"{size} paper",
            )
            for xi, v in zip(x, ours):
                if math.isnan(v):
                    ax.text(xi + offset - width / 2, 0, "—", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylabel("AP (%)")
        ax.set_title(f"{fw}, {schedule}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, ncol=6, fontsize=7, loc="lower center")
    fig.suptitle("AP by object size (Table 1 rows): ours solid, paper hatched; — = no completed run", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, path, layout=False)


def plot_search_progress(trials: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Best mAP so far against trial number and against cumulative compute time.

    Trials are taken in the order Tune created them (trial id); compute time is the sum of each
    trial's ``time_total_s``. Early-stopped trials are drawn as crosses.
    """
    ordered = trials.sort_values("trial_id", kind="stable").reset_index(drop=True)
    value = ordered["mAP"].astype(float)
    best = value.cummax()
    axes_x = {
        "trial #": np.arange(1, len(ordered) + 1),
        "compute time (s, cumulative)": ordered["time_total_s"].astype(float).cumsum().to_numpy(),
    }
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (xlabel, x) in zip(axes, axes_x.items()):
        ax.step(x, best, where="post", color=OURS_COLOR, label="best mAP so far")
        styles = {COMPLETED: ("o", "completed"), EARLY_STOPPED: ("x", "early-stopped")}
        for status, group in ordered.groupby("status", sort=True):
            marker, label = styles.get(status, ("^", status))
            idx = group.index.to_numpy()
            ax.scatter(
                x[idx],
                value.iloc[idx],
                marker=marker,
                s=36,
                label=f"trial ({label})",
                color="black" if status == COMPLETED else PAPER_COLOR,
                zorder=3,
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mAP (%)")
        ax.grid(alpha=0.3)
        if xlabel.startswith("trial"):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not len(ordered):
            _no_data(ax, "no trials")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Search progress{': ' + title if title else ''}", fontsize=11)
    return _save(fig, path)


def plot_training_curves(reports: pd.DataFrame, path: Path, title: str = "") -> Path:
    """mAP and every reported loss term per epoch for one trial (one panel each); a distillation run's
    teacher mAP (``teacher_mAP``) as a dashed line."""
    history = reports.sort_values("training_iteration", kind="stable")
    x = history["epoch"] if "epoch" in history else history["training_iteration"]
    losses = sorted(c for c in history.columns if c.startswith("loss_") and history[c].notna().any())
    losses = [c for c in ("loss_total", "loss_det") if c in losses] + [
        c for c in losses if c not in ("loss_total", "loss_det")
    ]
    panels: Sequence[str] = ["mAP", *losses]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, panels):
        ax.plot(
            x, history[name].astype(float), marker="o", markersize=3, color=OURS_COLOR if name == "mAP" else "#555555"
        )
        teacher = TEACHER_PREFIX + name  # a distillation run's teacher, evaluated once
        if teacher in history and history[teacher].notna().any():
            ax.axhline(float(history[teacher].dropna().iloc[-1]), color=PAPER_COLOR, linestyle="--", label="teacher")
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title or "training curves", fontsize=10)
    return _save(fig, path)
