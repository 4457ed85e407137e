"""Write a :class:`~drkd.analysis.paper_tables.PaperTable` as Markdown, LaTeX (booktabs) and CSV.

Output is a pure function of the table: fixed number formats, the table's own row order, no dates.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from drkd.analysis.paper_tables.table_spec import Column, PaperTable

MISSING = "—"
CSV_FLOAT_FORMAT = "%.6g"


def _absent(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def format_cell(row: pd.Series, column: Column) -> str:
    """The text of one cell: ours as ``mean ± std (n=k)``, paper to 0.1, Δ signed with its 95 %
    interval ``[lo, hi]`` (`` p``: paired by seed) and ``*`` when the interval excludes zero."""
    value = row[column.key]
    if column.kind == "label":
        return "" if _absent(value) else str(value)
    if column.kind == "param":
        if _absent(value):
            return ""
        return f"{value:g}" if isinstance(value, float) else str(value)
    if column.kind == "value":
        return MISSING if _absent(value) else f"{float(value):.2f}"
    if column.kind == "paper":
        return MISSING if _absent(value) else f"{float(value):.1f}"
    if column.kind == "delta":
        if _absent(value):
            return MISSING
        lo, hi = row.get(f"{column.key[: -len('_delta')]}_ci_lo"), row.get(f"{column.key[: -len('_delta')]}_ci_hi")
        if _absent(lo) or _absent(hi):
            return f"{float(value):+.2f}"
        paired = " p" if row.get(f"{column.key[: -len('_delta')]}_paired") is True else ""
        mark = "*" if lo > 0 or hi < 0 else ""
        return f"{float(value):+.2f} [{float(lo):+.2f}, {float(hi):+.2f}{paired}]{mark}"
    if column.kind == "ours":
        if _absent(value):
            return MISSING
        n = row[f"{column.key}_n"]
        std = row[f"{column.key}_std"]
        spread = "" if _absent(std) else f" ± {float(std):.2f}"
        return f"{float(value):.2f}{spread} (n={int(n)})"
    raise ValueError(f"unknown column kind {column.kind!r}")


def _blank_row(row: pd.Series, column: Column, table: PaperTable) -> bool:
    """Table 5 pads short λ panels; those padding cells stay empty rather than '—'."""
    if column.kind not in ("ours", "paper", "delta") or not column.group:
        return False
    param = next((c for c in table.columns if c.kind == "param" and c.group == column.group), None)
    return param is not None and _absent(row[param.key])


def cell_texts(table: PaperTable) -> list[list[str]]:
    """All body cells as text, in display order."""
    return [
        ["" if _blank_row(row, c, table) else format_cell(row, c) for c in table.columns]
        for _, row in table.frame.iterrows()
    ]


# --- Markdown -------------------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(table: PaperTable, heading_level: int = 3) -> str:
    """A Markdown section: heading, caption, pipe table, footnotes."""
    lines = [f"{'#' * heading_level} {table.title}", "", f"*{_md_escape(table.caption)}*", ""]
    headers = [_md_escape(c.header) for c in table.columns]
    aligns = ["---" if c.kind == "label" else "---:" for c in table.columns]
    lines += ["| " + " | ".join(headers) + " |", "|" + "|".join(aligns) + "|"]
    for cells in cell_texts(table):
        lines.append("| " + " | ".join(_md_escape(t) for t in cells) + " |")
    if table.frame.empty:
        lines.append("| " + " | ".join(MISSING for _ in table.columns) + " |")
    if table.footnotes:
        lines.append("")
        lines += [f"- {note}" for note in table.footnotes]
    return "\n".join(lines) + "\n"


# --- LaTeX ----------------------------------------------------------------------------------------

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_UNICODE = [
    ("λ1", r"$\lambda_1$"),
    ("λ2", r"$\lambda_2$"),
    ("λ3", r"$\lambda_3$"),
    ("λ", r"$\lambda$"),
    ("✓", r"\checkmark"),
    ("×", r"$\times$"),
    ("±", r"$\pm$"),
    ("Δ", r"$\Delta$"),
    ("—", "---"),
    ("−", "-"),
    ("→", r"$\to$"),
]
_LATEX_METRICS = {"AP50": r"AP$_{50}$", "AP75": r"AP$_{75}$", "AP_S": r"AP$_S$", "AP_M": r"AP$_M$", "AP_L": r"AP$_L$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials, then spell the few symbols the tables use; `code` becomes texttt."""
    parts = text.split("`")
    out = []
    for i, part in enumerate(parts):
        if part in _LATEX_METRICS and i % 2 == 0:
            out.append(_LATEX_METRICS[part])
            continue
        escaped = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in part)
        for symbol, latex in _LATEX_UNICODE:
            escaped = escaped.replace(symbol, latex)
        out.append(rf"\texttt{{{escaped}}}" if i % 2 else escaped)
    return "".join(out)


def to_latex(table: PaperTable) -> str:
    """A booktabs ``table`` float; metric groups get a spanning header with a cmidrule."""
    cols = table.columns
    spec = "".join("l" if c.kind == "label" else "r" for c in cols)
    grouped = any(c.group for c in cols)
    lines = [
        r"% requires \usepackage{booktabs,amssymb}",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    if grouped:
        top, rules, start = [], [], 1
        i = 0
        while i < len(cols):
            j = i
            while j + 1 < len(cols) and cols[j + 1].group and cols[j + 1].group == cols[i].group:
                j += 1
            if cols[i].group:
                top.append(rf"\multicolumn{{{j - i + 1}}}{{c}}{{{latex_escape(cols[i].group)}}}")
                rules.append(rf"\cmidrule(lr){{{start + i}-{start + j}}}")
            else:
                top.append("")
            i = j + 1
        lines.append(" & ".join(top) + r" \\")
        lines.append(" ".join(rules))
    lines.append(" & ".join(latex_escape(c.sub if c.group else c.header) for c in cols) + r" \\")
    lines.append(r"\midrule")
    for cells in cell_texts(table):
        lines.append(" & ".join(latex_escape(t) for t in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.footnotes:
        lines.append(r"\par\smallskip\footnotesize")
        lines.append(r" \\ ".join(latex_escape(n) for n in table.footnotes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# --- CSV ------------------------------------------------------------------------------------------


def to_csv(table: PaperTable) -> str:
    """The numeric frame (means, std, n, paper, Δ as separate columns), empty where missing."""
    return table.frame.to_csv(index=False, float_format=CSV_FLOAT_FORMAT, lineterminator="\n")


def safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_table(table: PaperTable, out_dir: Path) -> dict[str, Path]:
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = safe_stem(table.name)
    paths = {"md": out_dir / f"{stem}.md", "tex": out_dir / f"{stem}.tex", "csv": out_dir / f"{stem}.csv"}
    paths["md"].write_text(to_markdown(table), encoding="utf-8")
    paths["tex"].write_text(to_latex(table), encoding="utf-8")
    paths["csv"].write_text(to_csv(table), encoding="utf-8")
    return paths
