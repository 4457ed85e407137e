"""cluster.yaml (AWS) and cluster-onprem.yaml are valid Ray 2.58 cluster-launcher configs, checked offline.

`ray up` runs `prepare_config` (merge with ray/autoscaler/aws/defaults.yaml, fold
setup_commands into head/worker_setup_commands, fill per-type min/max_workers) and then
`validate_config` (ray-schema.json + cross-field checks) before it touches AWS
(`fillout_available_node_types_resources` and `bootstrap_aws` are the first calls that do).
This test runs exactly those two functions, with sockets disabled to prove nothing is contacted.
"""

from __future__ import annotations

import copy
import re
import socket
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
ONPREM_YAML = ROOT / "cluster-onprem.yaml"
DLAMI = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
PIP_INSTALL = re.compile(r'pip install -q -e "\$HOME/drkd\[cluster\]" -c \$HOME/drkd/constraints\.txt')


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture(scope="module")
def raw(text) -> dict:
    return yaml.safe_load(text)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"cluster.yaml validation tried to open a connection: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def prepared(raw, no_network) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def test_validates_with_rays_own_validator(raw, prepared):
    from ray.autoscaler._private.util import validate_config

    validate_config(copy.deepcopy(raw))  # the file as written, before defaults are merged
    assert prepared["cluster_name"] == "drkd"
    provider = prepared["provider"]
    assert provider["type"] == "aws" and provider["region"] == "us-west-2"
    assert provider["cache_stopped_nodes"] is False
    assert prepared["max_workers"] >= 1 and prepared["idle_timeout_minutes"] > 0


def test_head_is_cpu_only(prepared):
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    assert head["min_workers"] == 0 and head["max_workers"] == 0
    assert not head["node_config"]["InstanceType"].startswith(("p", "g"))


def test_autoscaling_gpu_worker_type(prepared):
    types = prepared["available_node_types"]
    gpu = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) == 8}
    assert gpu, "no worker type with 8 GPUs"
    for name, t in gpu.items():
        assert name != prepared["head_node_type"]
        assert t["min_workers"] == 0
        assert 1 <= t["max_workers"] <= prepared["max_workers"]
        assert t["node_config"]["InstanceType"] in {"p4d.24xlarge", "p3.16xlarge", "p5.48xlarge"}


def test_every_node_has_an_ami_and_an_instance_profile(prepared):
    for t in prepared["available_node_types"].values():
        nc = t["node_config"]
        # AWS's public parameter for the current Deep Learning AMI, resolved by EC2 at launch
        assert nc["ImageId"] == DLAMI
        assert re.fullmatch(r"arn:aws:iam::\d{12}:instance-profile/[\w+=,.@-]+", nc["IamInstanceProfile"]["Arn"])


def test_no_credentials_in_the_file(text, raw):
    for pattern in (
        r"aws_access_key_id",
        r"aws_secret_access_key",
        r"aws_session_token",
        r"AWS_SECRET",
        r"\bAKIA[0-9A-Z]{16}\b",
        r"\bASIA[0-9A-Z]{16}\b",
    ):
        assert not re.search(pattern, text, re.IGNORECASE), pattern
    assert "aws_credentials" not in raw["provider"]


def test_security_group_opens_ssh_only(raw):
    sg = raw["provider"]["security_group"]
    assert sg["GroupName"]
    assert sg["IpPermissions"]
    for rule in sg["IpPermissions"]:
        assert rule["IpProtocol"] == "tcp"
        assert rule["FromPort"] == 22 and rule["ToPort"] == 22
    # No user-chosen groups that would bypass the one above.
    for t in raw["available_node_types"].values():
        assert "SecurityGroupIds" not in t["node_config"]


def test_dashboard_stays_on_localhost(raw):
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in raw["worker_start_ray_commands"])


def test_every_node_installs_the_pinned_project(raw, prepared):
    assert raw["file_mounts"] == {"~/drkd": "."}
    # `ray up` runs from the repository root, so "." is this checkout.
    assert (ROOT / "pyproject.toml").is_file() and (ROOT / "constraints.txt").is_file()
    assert any(PIP_INSTALL.search(c) for c in raw["setup_commands"])
    # prepare_config folds setup_commands into both the head's and the workers' commands.
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any(PIP_INSTALL.search(c) for c in prepared[key]), key
    for t in prepared["available_node_types"].values():
        assert "worker_setup_commands" not in t  # a per-type list would replace the common one


def test_shared_storage_on_every_node(raw):
    node_wide = raw["initialization_commands"] + raw["setup_commands"]
    assert any(
        re.search(r"sudo mount -t (efs|nfs4)\b.*\$DRKD_MNT", c) and "DRKD_MNT=/mnt/drkd-results" in c for c in node_wide
    )
    assert any("export DRKD_RESULTS=/mnt/drkd-results" in c and "~/.bashrc" in c for c in raw["setup_commands"])
    for t in raw["available_node_types"].values():
        assert "initialization_commands" not in t  # would replace the EFS mount for that type


def test_validator_is_not_a_no_op(raw, no_network):
    """The same validator rejects a typo'd node-type key and a head without a node type."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    typo = copy.deepcopy(raw)
    typo["available_node_types"]["gpu_worker"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(typo))
    orphan = copy.deepcopy(raw)
    orphan["head_node_type"] = "nope"
    with pytest.raises(ValueError):
        validate_config(prepare_config(orphan))


def _without_results_line(commands: list[str]) -> list[str]:
    return [c for c in commands if "DRKD_RESULTS" not in c]


def test_onprem_file_validates_and_runs_the_same_setup(raw, no_network):
    """cluster-onprem.yaml passes Ray's validator (local provider), installs the project with the
    AWS file's setup commands (they differ only in where the results live), keeps the dashboard on
    localhost and the trial drivers on the head, and holds no credentials. tests/test_ray_up.py runs it."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    text = ONPREM_YAML.read_text()
    onprem = yaml.safe_load(text)
    prepared = prepare_config(copy.deepcopy(onprem))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "local" and prepared["provider"]["worker_ips"] == []
    assert set(onprem["auth"]) == {"ssh_user", "ssh_private_key"}
    assert onprem["file_mounts"] == raw["file_mounts"]
    assert _without_results_line(onprem["setup_commands"]) == _without_results_line(raw["setup_commands"])
    assert any(PIP_INSTALL.search(c) for c in prepared["head_setup_commands"])
    head_start = " ".join(onprem["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    assert """--resources='{"drkd_driver": 1}'""" in head_start
    for pattern in (r"password", r"BEGIN [A-Z ]*PRIVATE KEY", r"aws_secret_access_key"):
        assert not re.search(pattern, text, re.IGNORECASE), pattern
