"""The COCO path rehearsed: the shipped COCO configs, changed only by `--smoke-test`, `data.root` and the
storage path, run the user's commands end to end on a COCO-2017-shaped miniature and a two-node Ray
cluster with shared storage: teachers trained and handed over, a λ search per config, Table 1's grid,
then the tables. ImageNet backbone weights come from a pre-filled torch hub cache (random weights under
the real file names); nothing is downloaded and nothing is read from the checkout's data/ or results/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
import yaml
from ray.cluster_utils import Cluster

from drkd.cli import main as drkd_cli

pytestmark = pytest.mark.timeout(3000)  # about 21 minutes on 2 cores

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("coco_retinanet.yaml", "coco_faster_rcnn.yaml")
BACKBONES = {"resnet50": "ResNet50_Weights", "resnext101_64x4d": "ResNeXt101_64X4D_Weights"}


def _prefill_imagenet_weights(torch_home: Path) -> None:
    """Randomly initialised backbones saved where torch hub keeps the real IMAGENET1K_V1 files."""
    for arch, enum in BACKBONES.items():
        weights = torchvision.models.get_weight(f"{enum}.IMAGENET1K_V1")
        path = torch_home / "hub" / "checkpoints" / Path(weights.url).name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(getattr(torchvision.models, arch)().state_dict(), path)


def _config_with_data_root(name: str, data_root: Path, out_dir: Path) -> Path:
    """The shipped config with `data.root` pointed at the miniature, nothing else changed."""
    values = yaml.safe_load((REPO / "configs" / name).read_text())
    values["data"]["root"] = str(data_root)
    path = out_dir / name
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def _snapshot(path: Path) -> set[tuple[str, float]]:
    return {(str(p), p.stat().st_mtime) for p in path.rglob("*")} if path.exists() else set()


@pytest.mark.slow
def test_coco_rehearsal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_root, shared, work = tmp_path / "coco", tmp_path / "shared", tmp_path / "work"
    work.mkdir()
    assert (
        drkd_cli(
            [
                "synth",
                "--layout",
                "coco2017",
                "--root",
                str(data_root),
                "--num-train",
                "24",
                "--num-val",
                "8",
                "--image-size",
                "96",
            ]
        )
        == 0
    )
    assert (data_root / "annotations" / "instances_val2017.json").is_file() and (data_root / "train2017").is_dir()
    torch_home = tmp_path / "torch_home"
    _prefill_imagenet_weights(torch_home)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))  # the Ray nodes started below inherit it
    monkeypatch.setenv("DRKD_RESULTS", str(work / "results"))
    configs = {name: _config_with_data_root(name, data_root, tmp_path) for name in CONFIGS}
    checkout = {d: _snapshot(REPO / d) for d in ("data", "results")}

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "resources": {"drkd_driver": 1}})
    cluster.add_node(num_cpus=3)
    cluster.wait_for_nodes()
    head_node = cluster.head_node.node_id
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "PYTHONPATH": str(REPO)}

    def run(*argv: str) -> str:
        done = subprocess.run(
            [sys.executable, *argv], cwd=work, env=env, capture_output=True, text=True, timeout=1500, check=False
        )
        assert done.returncode == 0, f"{argv}\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
        return done.stdout

    try:
        smoke = ["--smoke-test", "--storage-path", str(shared)]
        out = run(str(REPO / "sweeps" / "ablations.py"), "teacher", "--config", str(configs[CONFIGS[0]]), *smoke)
        assert "smoke test: the config with these sizes changed, nothing else:" in out
        assert "data.min_size: 800 -> 128" in out and "sweep.gpus_per_worker (no GPU in the cluster): 1.0 -> 0" in out
        teachers = shared / "smoke_test" / "teachers"
        for arch in ("retinanet", "fasterrcnn"):
            assert (teachers / f"{arch}_resnext101_64x4d" / "checkpoint.pt").is_file()
            assert f"published teacher {'one_stage' if arch == 'retinanet' else 'two_stage'} teacher" in out
        for name in CONFIGS:
            out = run(
                str(REPO / "sweeps" / "lambda_search.py"),
                "--config",
                str(configs[name]),
                *smoke,
                "--name",
                f"search_{name[:-5]}",
            )
            assert "best config:" in out
            best = yaml.safe_load((shared / "smoke_test" / f"search_{name[:-5]}" / "best_config.yaml").read_text())
            assert best["teacher"]["checkpoint"].startswith(str(teachers))  # the handed-over teacher
        run(str(REPO / "sweeps" / "ablations.py"), "table1", "--config", str(configs[CONFIGS[0]]), *smoke)
        run(str(REPO / "analysis" / "make_tables.py"), str(shared / "smoke_test"), "--out", str(tmp_path / "report"))
    finally:
        cluster.shutdown()

    table1 = pd.read_csv(tmp_path / "report" / "tables" / "table1.csv", keep_default_na=False, na_values=[""])
    # the paper's 17 rows plus the Faster R-CNN 2x block the grid runs (its baseline included), every
    # one measured (teachers from the students' recorded teacher evaluations)
    assert len(table1) == 22 and table1["mAP"].notna().all(), table1.to_string()
    # every trial trained with two DDP workers packed on one node (the configs' STRICT_PACK), its
    # replicas in sync, its driver on the head (the node advertising drkd_driver)
    reports = [
        json.loads(line)
        for result in (shared / "smoke_test").glob("*/*/result.json")
        for line in result.read_text().splitlines()
    ]
    assert len(reports) >= 20 + 2 + 2 * 2  # table1's 20 cells, 2 teachers, 2 trials per search
    for report in reports:
        assert report["ddp_workers"] == 2 and report["ddp_nodes"] == 1 and report["ddp_in_sync"] == 1.0, report
        assert report["driver_node"] == head_node, report
    for d, before in checkout.items():
        assert _snapshot(REPO / d) == before, f"the rehearsal touched the checkout's {d}/"
