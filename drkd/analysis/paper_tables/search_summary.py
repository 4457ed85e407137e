"""The summary of one λ search: every trial, best first."""

from __future__ import annotations

import math

import pandas as pd

from drkd.analysis.experiment_store import CONFIG_PREFIX, Pick
from drkd.analysis.paper_tables.build import PICK_TEXT
from drkd.analysis.paper_tables.settings import DRKD, missing
from drkd.analysis.paper_tables.table_spec import METRICS, Column, PaperTable

SHORT_PREFIXES = (f"distill.{DRKD}.", "distill.", "train.", "student.")


def short_name(key: str) -> str:
    """A config key without ``config/`` and its section (``distill.drkd.lambda_pr`` -> ``lambda_pr``;
    other methods keep theirs: ``distill.nld.alpha`` -> ``nld.alpha``)."""
    key = key[len(CONFIG_PREFIX) :] if key.startswith(CONFIG_PREFIX) else key
    for prefix in SHORT_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def search_summary(trials: pd.DataFrame, experiment: str, pick: Pick = "last") -> PaperTable:
    """All trials of one λ search, best first: status, the settings it varied, and metrics."""
    exp = trials[trials["experiment"] == experiment].copy()
    config_cols = [
        c for c in exp.columns if c.startswith(CONFIG_PREFIX) and exp[c].astype(str).nunique(dropna=False) > 1
    ]
    exp["_rank_value"] = exp["mAP"].astype(float).fillna(-math.inf)
    exp = exp.sort_values(["_rank_value", "trial_id"], ascending=[False, True], kind="stable")
    frame = pd.DataFrame(
        {
            "Rank": range(1, len(exp) + 1),
            "Trial": exp["trial_id"].astype(str).tolist(),
            "Status": exp["status"].tolist(),
            "Epochs": [
                f"{int(e)}/{'?' if missing(t) else int(t)}" for e, t in zip(exp["last_epoch"], exp["target_epochs"])
            ],
            **{short_name(c): exp[c].tolist() for c in config_cols},
            **{m: exp[m].astype(float).tolist() for m in METRICS},
        }
    )
    columns = (
        [Column(c, c) for c in ("Rank", "Trial", "Status", "Epochs")]
        + [Column(short_name(c), short_name(c), "param") for c in config_cols]
        + [Column(m, m, "value") for m in METRICS]
    )
    counts = exp["status"].value_counts()
    count_text = ", ".join(f"{int(counts[s])} {s}" for s in sorted(counts.index))
    best = exp.iloc[0] if len(exp) else None
    best_text = (
        f" Best: {best['trial_id']} with mAP {best['mAP']:.2f} ({best['status']})."
        if best is not None and not missing(best["mAP"])
        else ""
    )
    title = f"λ search summary: {experiment}"
    caption = (
        f"{title}. Value per trial: {PICK_TEXT[pick]}. {len(exp)} trial(s): {count_text}."
        f"{best_text} Early-stopped trials were stopped by the scheduler before train.epochs; "
        f"their metrics are from the epoch they reached."
    )
    return PaperTable(
        f"search_{experiment}", title, caption, columns, frame.reset_index(drop=True), meta={"experiment": experiment}
    )
