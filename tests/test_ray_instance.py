"""A sweep's Ray is never mistaken for another instance on the same machine (a second sweep, a test
run, a benchmark): RAY_ADDRESS=local starts a private one, and every worker is told its address."""

from __future__ import annotations

import json
import subprocess
import sys

from ray.cluster_utils import Cluster

PROBE = """
import json, os, ray
from drkd.config.sweep_settings import SweepSettings
from drkd.sweeps.tuner import init_ray

init_ray(SweepSettings(name="probe", max_concurrent_trials=1, workers_per_trial=1))
worker = ray.get(ray.remote(lambda: os.environ.get("RAY_ADDRESS")).remote())
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "worker": worker,
                  "driver_resource": ray.cluster_resources().get(SweepSettings().driver_resource, 0)}))
ray.shutdown()
"""


def _start_probe(address: str) -> subprocess.Popen:
    import os

    env = {**os.environ, "RAY_ADDRESS": address}
    return subprocess.Popen(
        [sys.executable, "-c", PROBE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _result(probe: subprocess.Popen) -> dict:
    out, err = probe.communicate(timeout=300)
    assert probe.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_local_starts_a_private_instance_beside_another_and_workers_know_it() -> None:
    other = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})  # the most recently started
    probes: list[subprocess.Popen] = []
    try:
        # both at once (most of a Ray start is waiting for its processes): the private instance
        # starts while a second driver is joining the other one
        probes = [_start_probe("local"), _start_probe(other.address)]
        private, joined = (_result(p) for p in probes)
        assert private["gcs"] != other.address
        assert private["worker"] == private["gcs"]
        assert private["driver_resource"] == 1  # sized for the trials, advertising the driver resource
        assert joined["gcs"] == other.address
        assert joined["worker"] == other.address
    finally:
        for probe in probes:  # a probe left running after a failure (a timeout, the other's error)
            if probe.poll() is None:
                probe.kill()
                probe.communicate()
        other.shutdown()
