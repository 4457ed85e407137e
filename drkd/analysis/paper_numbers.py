"""The DRKD paper's published numbers (Tables 1-6), transcribed once into ``analysis/paper_numbers.csv``.

Long format, one number per line::

    table,arch,schedule,role,method,inherit,pr,ir,ins,instance_size,relation_filter,pixel_module,
    lambda_pr,lambda_ir,lambda_ins,metric,value,source

The setting columns use the sweep config's vocabulary (``student.arch`` → ``arch``, ``distill.drkd.pr`` →
``pr``, ...), so a paper row is matched to our trials by config values. A blank setting means the
paper does not state it or it does not apply. ``arch`` is the student detector family of the block
the row sits in (teacher rows included). ``inherit`` is ``student.init_from_teacher`` (blank: the
student did not inherit). ``source`` names the paper table and row it came from; a number from
another paper than DRKD's (the peers' own published results) starts with that paper's name and names
its teacher, which the table's footnotes repeat.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PAPER_NUMBERS_CSV = Path(__file__).resolve().parent / "paper_numbers.csv"

SETTING_COLUMNS = (
    "arch",
    "schedule",
    "role",
    "method",
    "inherit",
    "pr",
    "ir",
    "ins",
    "instance_size",
    "relation_filter",
    "pixel_module",
    "lambda_pr",
    "lambda_ir",
    "lambda_ins",
)
BOOL_COLUMNS = ("pr", "ir", "ins", "relation_filter")
FLOAT_COLUMNS = ("lambda_pr", "lambda_ir", "lambda_ins")
COLUMNS = ("table", *SETTING_COLUMNS, "metric", "value", "source")


def _parse_bool(text: str) -> bool | None:
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    raise ValueError(f"expected true/false/blank, got {text!r}")


def load_paper_numbers(path: str | Path | None = None) -> pd.DataFrame:
    """The transcribed numbers as a DataFrame; blank settings are ``None``, in file order."""
    raw = pd.read_csv(path or PAPER_NUMBERS_CSV, dtype=str, keep_default_na=False)
    missing = set(COLUMNS) - set(raw.columns)
    if missing:
        raise ValueError(f"{path or PAPER_NUMBERS_CSV}: missing columns {sorted(missing)}")
    records = []
    for row in raw.to_dict("records"):
        record: dict[str, object] = {
            c: (row[c] or None)
            for c in ("table", "arch", "schedule", "role", "method", "inherit", "pixel_module", "metric", "source")
        }
        record.update({c: _parse_bool(row[c]) for c in BOOL_COLUMNS})
        record.update({c: (float(row[c]) if row[c] else None) for c in FLOAT_COLUMNS})
        record["instance_size"] = int(row["instance_size"]) if row["instance_size"] else None
        record["value"] = float(row["value"])
        records.append(record)
    return pd.DataFrame(records, columns=list(COLUMNS), dtype=object)  # keeps blanks as None


def paper_value(numbers: pd.DataFrame, table: str, metric: str = "mAP", **settings: object) -> float:
    """One published number, selected by table, metric and exact setting values (for tests and notes)."""
    mask = (numbers["table"] == table) & (numbers["metric"] == metric)
    for key, value in settings.items():
        mask &= numbers[key].map(lambda v, want=value: v == want)
    hits = numbers.loc[mask, "value"]
    if len(hits) != 1:
        raise KeyError(f"{len(hits)} paper numbers match table={table} metric={metric} {settings}")
    return float(hits.iloc[0])
