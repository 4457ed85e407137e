"""drkd/analysis/paper_numbers.csv against the text of the DRKD paper (IJCAI 2023)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drkd.analysis.paper_numbers import load_paper_numbers, paper_value

PAPER = Path(__file__).resolve().parents[1] / ".." / "shared" / "papers" / "drkd_ijcai2023.md"

# the header line of each table in the paper's text (tab-separated)
HEADERS = {
    "table1": "Epochs\tFramewark\tModel\tPR\tIR\tINS\tmAP\t$AP_{50}$\t$AP_{75}$\t$AP_S$\t$AP_M$\t$AP_L$",
    "table2": "Model\tDistillation\tmAP",
    "table3": "Model\tDistillation\tSize\tmAP",
    "table4": "Model\tDistillation\tFilter\tmAP",
    "table5": "$\\lambda_1$\tmAP\t$\\lambda_2$\tmAP\t$\\lambda_3$\tmAP",
    "table6": "Framewark\tMethod\tBackbone\tmAP\t$AP_{50}$\t$AP_{75}$\t$AP_S$\t$AP_M$\t$AP_L$",
}
HEADER_NAMES = {
    "mAP": "mAP",
    "AP50": "$AP_{50}$",
    "AP75": "$AP_{75}$",
    "AP_S": "$AP_S$",
    "AP_M": "$AP_M$",
    "AP_L": "$AP_L$",
}

# (table, settings, metric, paper row (1-based, below the header), paper column (None: by metric name))
SAMPLE = [
    ("table1", dict(arch="retinanet", schedule="1x", role="student", method="none"), "mAP", 2, None),
    ("table1", dict(arch="retinanet", schedule="1x", method="drkd", pr=False, ir=True, ins=False), "AP75", 4, None),
    ("table1", dict(arch="retinanet", schedule="2x", method="drkd", pr=True, ir=True, ins=False), "AP_S", 10, None),
    ("table1", dict(arch="fasterrcnn", schedule="1x", role="teacher"), "AP50", 12, None),
    ("table1", dict(arch="fasterrcnn", schedule="1x", method="drkd", pr=True, ir=True, ins=True), "AP_L", 17, None),
    ("table2", dict(method="drkd", pixel_module="non_local"), "mAP", 3, None),
    ("table2", dict(method="drkd", pixel_module="glore"), "mAP", 4, None),
    ("table3", dict(method="drkd", pr=False, instance_size=5), "mAP", 4, None),
    ("table3", dict(method="drkd", pr=True, instance_size=1), "mAP", 5, None),
    ("table4", dict(method="drkd", pr=False, relation_filter=False), "mAP", 3, None),
    ("table4", dict(method="drkd", pr=True, relation_filter=True), "mAP", 6, None),
    ("table5", dict(lambda_pr=0.002), "mAP", 3, 1),
    ("table5", dict(lambda_ir=0.001), "mAP", 1, 3),
    ("table5", dict(lambda_ins=0.01), "mAP", 4, 5),
    ("table6", dict(arch="fasterrcnn", method="nld"), "mAP", 6, None),
    ("table6", dict(arch="fasterrcnn", method="gkd"), "AP50", 7, None),
    ("table6", dict(arch="retinanet", role="teacher"), "AP_M", 17, None),
    ("table6", dict(arch="retinanet", method="drkd"), "AP_S", 22, None),
    ("table6", dict(arch="reppoints", method="fgd"), "AP_L", 26, None),
]


@pytest.fixture(scope="module")
def paper_tables() -> dict[str, tuple[list[str], list[list[str]]]]:
    """Each table of the paper's text as (header cells, rows of cells)."""
    if not PAPER.is_file():
        pytest.skip(f"paper text not found at {PAPER.resolve()} (the shared papers directory is not mounted)")
    lines = PAPER.read_text(encoding="utf-8").splitlines()
    out = {}
    for table, header in HEADERS.items():
        start = lines.index(header)
        rows = []
        for line in lines[start + 1 :]:
            if not line.strip():
                break
            rows.append(line.split("\t"))
        out[table] = (header.split("\t"), rows)
    return out


@pytest.mark.parametrize("table,settings,metric,row,column", SAMPLE)
def test_sample_matches_paper_text(paper_tables, table, settings, metric, row, column) -> None:
    header, rows = paper_tables[table]
    cells = rows[row - 1]
    index = column if column is not None else header.index(HEADER_NAMES[metric])
    assert paper_value(load_paper_numbers(), table, metric, **settings) == float(cells[index])


def test_every_number_is_in_the_row_its_source_names(paper_tables) -> None:
    numbers = load_paper_numbers()
    assert len(numbers) >= 12
    for record in numbers.to_dict("records"):
        if record["source"].split(" ")[0] in PEER_PAPERS:  # the peers' own results: test_peer_numbers
            continue
        match = re.match(r"Table (\d) row (\d+): ", record["source"])
        assert match and f"table{match.group(1)}" == record["table"], record["source"]
        header, rows = paper_tables[record["table"]]
        cells = [c.strip() for c in rows[int(match.group(2)) - 1]]
        if record["table"] == "table5":  # three (λ, mAP) pairs per row: the pair of the λ named
            lam = next(k for k in ("lambda_pr", "lambda_ir", "lambda_ins") if record[k] is not None)
            pair = ("lambda_pr", "lambda_ir", "lambda_ins").index(lam)
            assert float(cells[2 * pair]) == record[lam] and float(cells[2 * pair + 1]) == record["value"]
        else:
            assert float(cells[header.index(HEADER_NAMES[record["metric"]])]) == record["value"], record


# Table 6's peers as their own papers or repositories publish them (mAP only): (arch, method) ->
# (value, inherit, the teacher the source names). Read from yzd-v/FGD's README, yzd-v/MGD's
# det/README and mmrazor's configs/distill/mmdet/pkd/README.md; their configs name the teacher and
# whether the student inherits (init_student=True).
PEER_PAPERS = ("FGD", "MGD", "PKD")
PEER_NUMBERS = {
    ("retinanet", "fgd"): (40.7, "neck_head", "teacher RetinaNet RX101-64x4d"),
    ("fasterrcnn", "fgd"): (42.0, None, "teacher Cascade Mask R-CNN RX101-32x4d DCN"),
    ("retinanet", "mgd"): (41.0, "neck_head", "teacher RetinaNet RX101-64x4d"),
    ("fasterrcnn", "mgd"): (42.1, None, "teacher Cascade Mask R-CNN RX101-32x4d DCN"),
    ("retinanet", "pkd"): (40.8, None, "teacher RetinaNet X101-64x4d (41.0)"),
    ("fasterrcnn", "pkd"): (40.3, None, "teacher Faster R-CNN R101 (39.8)"),
}


def test_peer_numbers() -> None:
    numbers = load_paper_numbers()
    peers = numbers[numbers["source"].map(lambda s: s.split(" ")[0] in PEER_PAPERS)]
    found = {(r["arch"], r["method"]): r for r in peers.to_dict("records")}
    assert set(found) == set(PEER_NUMBERS) and len(peers) == len(PEER_NUMBERS)  # one number each
    for (arch, method), (value, inherit, teacher) in PEER_NUMBERS.items():
        r = found[(arch, method)]
        assert (r["table"], r["schedule"], r["role"], r["metric"]) == ("table6", "2x", "student", "mAP")
        assert r["value"] == value and r["inherit"] == inherit and teacher in r["source"], r
        assert r["source"].startswith(method.upper()), r
        assert paper_value(numbers, "table6", arch=arch, method=method, inherit=inherit) == value


def test_coverage() -> None:
    counts = load_paper_numbers()["table"].value_counts().to_dict()
    # Table 1: 17 rows × 6 metrics; Table 6: 27 rows × 6 metrics less FGD's three "-" entries, and
    # the six peer numbers
    assert counts == {"table1": 102, "table2": 4, "table3": 7, "table4": 6, "table5": 12, "table6": 159 + 6}
