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


def test_every_node_runs_the_baked_image_with_a_profile_aws_setup_makes(prepared):
    from drkd.cloud import aws_setup

    for name, t in prepared["available_node_types"].items():
        nc = t["node_config"]
        # the parameter `drkd aws-setup` writes, resolved by EC2 at launch: no account-specific id
        assert nc["ImageId"] == f"resolve:ssm:{aws_setup.AMI_PARAMETER}"
        head = name == prepared["head_node_type"]
        assert nc["IamInstanceProfile"] == {"Name": aws_setup.HEAD_PROFILE if head else aws_setup.WORKER_PROFILE}
    assert prepared["provider"]["security_group"]["GroupName"] == aws_setup.GROUP_NAME


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


class _Group:
    """What Ray's AWS provider reads and calls of a boto3 SecurityGroup."""

    def __init__(self, group_id: str, ip_permissions: list[dict]) -> None:
        self.id, self.ip_permissions, self.added = group_id, ip_permissions, []

    def authorize_ingress(self, IpPermissions: list[dict]) -> None:  # noqa: N803 (boto3's name)
        self.added += IpPermissions


def _world(rules: list[dict]) -> list[str]:
    return [r["CidrIp"] for rule in rules for r in rule.get("IpRanges", []) if r["CidrIp"] == "0.0.0.0/0"]


def test_security_group_opens_ssh_only_as_ray_will_treat_it(prepared):
    """Run Ray's own rule filling (ray/autoscaler/_private/aws/config.py) on the group as
    `drkd aws-setup` leaves it: Ray adds nothing, so SSH is open to --ssh-cidr only. On a group with
    no rules (Ray created it, e.g. a `ray up` before aws-setup) Ray opens SSH to the world, which
    is why aws-setup revokes world-open rules of a group it finds."""
    from ray.autoscaler._private.aws.config import _upsert_security_group_rules

    from drkd.cloud.aws_setup import ingress_rules, missing_rules, world_open_rules

    conf = copy.deepcopy(prepared)
    ours = _Group("sg-0ours", ingress_rules("sg-0ours", "198.51.100.0/24"))
    _upsert_security_group_rules(conf, {"head": ours, "gpu_worker": ours})
    assert ours.added == []
    ports = [(r["IpProtocol"], r.get("FromPort")) for r in ours.ip_permissions if "IpRanges" in r]
    assert ports == [("tcp", 22)] and not _world(ours.ip_permissions)
    assert [g["GroupId"] for g in ours.ip_permissions[0]["UserIdGroupPairs"]] == ["sg-0ours"]

    empty = _Group("sg-0ray", [])
    _upsert_security_group_rules(conf, {"head": empty})
    assert _world(empty.added) == ["0.0.0.0/0"]  # what Ray 2.58 does to a group it fills
    revoke = world_open_rules(empty.added)
    assert revoke == [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    # after the revoke, aws-setup adds its own two rules and nothing it already has
    kept = [r for r in empty.added if not _world([r])]
    assert len(missing_rules(kept, ingress_rules("sg-0ray", "198.51.100.0/24"))) == 1  # SSH from the CIDR
    # No user-chosen groups that would bypass the one above.
    for t in prepared["available_node_types"].values():
        assert "SecurityGroupIds" not in t["node_config"]


def test_commands_each_node_runs_have_no_placeholder_and_install_no_torch(prepared):
    """The commands Ray runs on the head and on a GPU worker after its config preparation (what
    `ray up` and the autoscaler run, defaults filled): nothing left to fill in, the image pinned, and
    no torch installed at boot, because the baked image holds every pin and the venv sees it."""
    from drkd.cloud.aws_setup import EFS_PARAMETER, bake_script

    region = prepared["provider"]["region"]
    nodes = {
        "head": prepared["initialization_commands"]
        + prepared["head_setup_commands"]
        + prepared["head_start_ray_commands"],
        "gpu_worker": prepared["initialization_commands"]
        + prepared["worker_setup_commands"]
        + prepared["worker_start_ray_commands"],
    }
    rendered = yaml.safe_dump(prepared)
    for pattern in (r"123456789012", r"fs-0123456789abcdef0", r"203\.0\.113\.", r"ami-0123", r"PLACEHOLDER", r"YOURS"):
        assert not re.search(pattern, rendered), pattern
    for name, commands in nodes.items():
        text = "\n".join(commands)
        assert not re.search(r"\btorch", text), (name, text)  # nothing names torch at boot
        assert f"aws ssm get-parameter --region {region} --name {EFS_PARAMETER}" in text
        assert f".efs.{region}.amazonaws.com" in text
        assert "--system-site-packages" in text and PIP_INSTALL.search(text), name
    # the image's boot script installs every pin: `pip install -e .[cluster] -c constraints.txt`
    # on the node then finds them all and installs only the project (as tests/test_ray_up.py shows)
    script = bake_script((ROOT / "constraints.txt").read_text())
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line]
    assert "torch==2.14.1" in pins and all(f"\n{pin}\n" in script for pin in pins)
    assert "python3.11 -m pip install --no-cache-dir -r /tmp/drkd-pins.txt" in script


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
