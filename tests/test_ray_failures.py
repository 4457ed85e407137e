"""Real Ray, no mocks: DDP across two simulated nodes, a SIGKILLed worker, a killed sweep driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import ray
import yaml
from metadata_server import MetadataServer
from ray.cluster_utils import Cluster

from drkd.config.sweep_settings import SweepSettings
from drkd.sweeps.ray_instance import join_ray, start_private_ray
from drkd.sweeps.ray_worker import MID_EPOCH_KEY
from drkd.sweeps.tuner import SweepPlan, run_sweep

REPO = Path(__file__).resolve().parents[1]


def reports(exp: Path) -> dict[str, list[dict]]:
    """Every trial's result.json lines, by trial directory name."""
    out = {}
    for trial in sorted(p for p in exp.iterdir() if (p / "result.json").exists()):
        out[trial.name] = [json.loads(x) for x in (trial / "result.json").read_text().splitlines() if x.strip()]
    return out


def one_cell(tiny_config, teacher_ckpt: str, tmp_path: Path, name: str, epochs: int, **settings) -> SweepPlan:
    base = tiny_config("drkd", teacher_ckpt=teacher_ckpt)
    base.train.epochs = epochs
    cell = {"cell": "probe", "distill.method": "drkd", "train.epochs": epochs, "student.arch": "retinanet"}
    return SweepPlan("baseline", base, SweepSettings(name=name, storage_path=str(tmp_path), **settings), grid=[cell])


@pytest.mark.slow  # ~1½ min on 2 cores: a two-node Cluster and a 3-epoch DDP trial, the default run's longest test
def test_ddp_workers_on_two_nodes_stay_in_sync(tiny_config, teacher_ckpt: str, tmp_path: Path) -> None:
    """Two nodes; the second one alone advertises the driver resource, which the trial's driver asks for."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    driver_node = cluster.add_node(num_cpus=2, resources={"drkd_driver": 1})
    cluster.wait_for_nodes()
    join_ray(cluster.address, log_to_driver=False)
    try:
        plan = one_cell(
            tiny_config, teacher_ckpt, tmp_path, "two_nodes", 3, workers_per_trial=2, placement_strategy="STRICT_SPREAD"
        )
        run_sweep(plan)
    finally:
        ray.shutdown()
        cluster.shutdown()
    (lines,) = reports(tmp_path / "two_nodes").values()
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    for r in lines:
        assert r["ddp_workers"] == 2 and r["ddp_nodes"] == 2, r
        assert r["ddp_in_sync"] == 1.0  # identical student weights on both ranks after each epoch
        assert r["driver_node"] == driver_node.node_id  # pinned by the drkd_driver resource
    # of the three epochs' checkpoints only the best by mAP and the latest stay
    (train_run,) = (tmp_path / "two_nodes" / ".train").iterdir()
    kept = sorted(p.name for p in train_run.glob("checkpoint_*") if p.is_dir())
    assert 1 <= len(kept) <= 2, kept


def _pids_named(fragment: str) -> list[int]:
    """Processes whose command line (Ray's process title) contains `fragment`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and fragment in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _sweep_with_killer(plan: SweepPlan, killer, *args):
    """``run_sweep(plan)`` while ``killer(experiment path, *args, done)`` runs in a thread beside it."""
    done = threading.Event()
    thread = threading.Thread(target=killer, args=(Path(plan.path), *args, done))
    thread.start()
    try:
        return run_sweep(plan)
    finally:
        done.set()
        thread.join()


def _kill_a_worker_after_first_report(exp: Path, killed: list[int], done: threading.Event) -> None:
    while not done.is_set() and not killed:
        if any(lines for lines in reports(exp).values()) if exp.exists() else False:
            for pid in _pids_named("RayTrainWorker"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.2)


@pytest.mark.slow  # ~1-2 min: kills a live trial and waits for the recovery
def test_sigkilled_worker_resumes_from_checkpoint(tiny_config, teacher_ckpt: str, tmp_path: Path) -> None:
    start_private_ray(num_cpus=3, log_to_driver=False)
    killed: list[int] = []
    try:
        # 10 short epochs: the kill must land after the first checkpoint and before the last epoch.
        plan = one_cell(tiny_config, teacher_ckpt, tmp_path, "killed_worker", 10, workers_per_trial=2, max_failures=2)
        results = _sweep_with_killer(plan, _kill_a_worker_after_first_report, killed)
    finally:
        ray.shutdown()
    assert killed, "no training worker was found to kill"
    assert not results.errors
    (lines,) = reports(tmp_path / "killed_worker").values()
    epochs = [r["epoch"] for r in lines]
    assert epochs[-1] == 10
    assert epochs.count(1) == 1, f"the trial restarted from scratch instead of its checkpoint: {epochs}"


def _kill_a_worker_after_mid_epoch_checkpoint(
    exp: Path, server: MetadataServer, found: list[dict], done: threading.Event
) -> None:
    """What a reclaimed spot node does to a trial: once Ray Train has registered the notice's
    checkpoint (its latest in the run's checkpoint-manager snapshot), a worker dies, and the notice
    is gone (the replacement is not being reclaimed)."""
    while not done.is_set():
        for path in exp.glob(".train/*/checkpoint_manager_snapshot.json"):
            try:
                latest = json.loads(path.read_text())["latest_checkpoint_result"]
            except (OSError, ValueError, KeyError, TypeError):  # being written
                continue
            if latest and latest["metrics"].get(MID_EPOCH_KEY):
                server.notice = False
                for pid in _pids_named("RayTrainWorker"):
                    os.kill(pid, signal.SIGKILL)
                found.append(latest["metrics"])
                return
        time.sleep(0.05)


@pytest.mark.slow  # ~1-2 min: kills a live trial and waits for the recovery
def test_spot_notice_checkpoints_mid_epoch_and_a_killed_trial_resumes_there(
    tiny_config, teacher_ckpt: str, tmp_path: Path
) -> None:
    server = MetadataServer()
    server.post_notice()
    start_private_ray(num_cpus=3, log_to_driver=False)
    found: list[dict] = []
    try:
        plan = one_cell(tiny_config, teacher_ckpt, tmp_path, "spot", 2, workers_per_trial=2, max_failures=2)
        # 4 iterations per worker and epoch, slowed by the image size: time to kill after the checkpoint
        plan.base.data.batch_size, plan.base.data.min_size, plan.base.data.max_size = 2, 320, 320
        plan.base.train.spot_notice = server.url
        results = _sweep_with_killer(plan, _kill_a_worker_after_mid_epoch_checkpoint, server, found)
    finally:
        ray.shutdown()
        server.close()
    assert found, "no mid-epoch checkpoint reached storage"
    assert not results.errors
    (lines,) = reports(tmp_path / "spot").values()
    assert [r["epoch"] for r in lines] == [1, 2]  # one result per epoch, none for the checkpoint
    assert not any(MID_EPOCH_KEY in r for r in lines)
    # the epoch the kill interrupted was resumed at the checkpoint's iteration, not from its start
    assert lines[found[0]["epoch"]].get("resumed_iteration") == found[0]["iteration"], lines


def _sweep_cmd(config: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "sweeps" / "lambda_search.py"),
        "--config",
        str(config),
        "--name",
        "resumable",
        *extra,
    ]


@pytest.mark.slow  # ~1-2 min: kills a live trial and waits for the recovery
def test_killed_sweep_driver_resumes_without_rerunning(tiny_config, teacher_ckpt: str, tmp_path: Path) -> None:
    cfg = tiny_config("drkd", teacher_ckpt=teacher_ckpt).to_dict()
    cfg["sweep"] = {
        "num_trials": 3,
        "workers_per_trial": 1,
        "grace_period": 1,
        "storage_path": str(tmp_path / "results"),
    }
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "results" / "resumable"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _sweep_cmd(config),
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    finished: dict[str, str] = {}
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            done = (
                {t: json.dumps(v) for t, v in reports(exp).items() if v and v[-1]["epoch"] == 2} if exp.exists() else {}
            )
            started = [p for p in exp.iterdir() if p.is_dir() and (p / "params.json").exists()] if exp.exists() else []
            if done and len(started) > len(done) and list(exp.glob("experiment_state-*.json")):
                finished = done
                break
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the private local Ray it started
        proc.wait()
    assert finished, "the sweep never reached a finished trial followed by a running one"

    resumed = subprocess.run(
        _sweep_cmd(config, "--resume"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = reports(exp)
    assert len(after) == 3
    for trial, lines in finished.items():
        assert json.dumps(after[trial]) == lines, f"finished trial {trial} was run again"
    study = optuna.load_study(study_name="resumable", storage=f"sqlite:///{exp / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert len(study.trials) == 3, [(t.number, t.state) for t in study.trials]
    assert all(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states), states
