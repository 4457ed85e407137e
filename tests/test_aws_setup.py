"""`drkd aws-setup`: the rules, policies and boot script it sends to AWS, and its errors.

No AWS account is reachable here, so the AWS calls themselves are not run; what Ray does with the
group aws-setup leaves is checked by running Ray's own code in tests/test_cluster_yaml.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drkd.cli import main
from drkd.cloud.aws_setup import (
    HEAD_PROFILE,
    WORKER_PROFILE,
    SetupError,
    bake_script,
    ingress_rules,
    missing_rules,
    role_policies,
    ssh_cidr,
    world_open_rules,
)

ROOT = Path(__file__).resolve().parents[1]


def test_ssh_cidr_must_be_a_network_smaller_than_the_internet() -> None:
    assert ssh_cidr("198.51.100.7/24") == "198.51.100.0/24"  # host bits dropped
    assert ssh_cidr("2001:db8::/48") == "2001:db8::/48"
    for bad, says in (("0.0.0.0/0", "whole internet"), ("::/0", "whole internet"), ("office", "not a CIDR")):
        with pytest.raises(SetupError, match=says):
            ssh_cidr(bad)


def test_ingress_rules_admit_the_group_and_ssh_from_the_cidr_only() -> None:
    v4 = ingress_rules("sg-1", "198.51.100.0/24")
    assert v4 == [
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-1", "Description": "within the cluster"}]},
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "198.51.100.0/24"}]},
    ]
    assert ingress_rules("sg-1", "2001:db8::/48")[1]["Ipv6Ranges"] == [{"CidrIpv6": "2001:db8::/48"}]


def test_world_open_rules_keep_only_the_world_ranges() -> None:
    permissions = [
        {
            "IpProtocol": "tcp",
            "FromPort": 22,
            "ToPort": 22,
            "IpRanges": [{"CidrIp": "0.0.0.0/0"}, {"CidrIp": "10.0.0.0/8"}],
        },
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "Ipv6Ranges": [{"CidrIpv6": "::/0", "Description": "x"}]},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-1"}]},
    ]
    assert world_open_rules(permissions) == [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
    ]
    assert world_open_rules(ingress_rules("sg-1", "198.51.100.0/24")) == []


def test_missing_rules_ignores_descriptions_and_all_traffic_ports() -> None:
    wanted = ingress_rules("sg-1", "198.51.100.0/24")
    as_ec2_lists_them = [
        {"IpProtocol": "-1", "FromPort": -1, "ToPort": -1, "UserIdGroupPairs": [{"GroupId": "sg-1"}]},
        {
            "IpProtocol": "tcp",
            "FromPort": 22,
            "ToPort": 22,
            "IpRanges": [{"CidrIp": "198.51.100.0/24", "Description": "d"}],
        },
    ]
    assert missing_rules(as_ec2_lists_them, wanted) == []
    assert missing_rules(as_ec2_lists_them[:1], wanted) == wanted[1:]
    assert missing_rules([], wanted) == wanted


def test_role_policies_pass_only_the_worker_role_and_read_only_drkd_parameters() -> None:
    policies = role_policies("us-west-2", "111122223333")
    assert set(policies) == {HEAD_PROFILE, WORKER_PROFILE}
    head = policies[HEAD_PROFILE]["Statement"]
    assert {
        "Effect": "Allow",
        "Action": "iam:PassRole",
        "Resource": "arn:aws:iam::111122223333:role/drkd-worker",
    } in head
    for name, policy in policies.items():
        json.dumps(policy)  # an IAM document
        reads = [s for s in policy["Statement"] if "ssm:GetParameter" in s["Action"]]
        assert reads and reads[0]["Resource"] == [
            "arn:aws:ssm:us-west-2:111122223333:parameter/drkd/*",
            "arn:aws:ssm:us-west-2::parameter/aws/service/deeplearning/*",
        ], name
        assert all(not str(s["Action"]).startswith(("ssm:Put", "ssm:*")) for s in policy["Statement"])


def test_bake_script_installs_every_pin_then_powers_off() -> None:
    constraints = (ROOT / "constraints.txt").read_text()
    script = bake_script(constraints)
    assert script.startswith("#!/bin/bash\nset -euxo pipefail\n")
    pins = [line for line in constraints.splitlines() if "==" in line]
    assert "# Versions tested" not in script and all(f"\n{pin}\n" in script for pin in pins)
    # the import check comes after the install and before poweroff: a failed install leaves the
    # instance running, so no image is made from it
    order = [script.index(s) for s in ("pip install --no-cache-dir -r", "import torch, torchvision", "poweroff")]
    assert order == sorted(order)
    assert len(script.encode()) < 16384  # EC2's UserData limit


def test_cli_names_a_bad_cidr_before_touching_aws(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["aws-setup", "--ssh-cidr", "0.0.0.0/0"]) == 2
    assert "drkd aws-setup: error: --ssh-cidr 0.0.0.0/0: opens SSH to the whole internet" in capsys.readouterr().err


def test_cli_without_credentials_says_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real boto3 with no credentials anywhere (no files, no environment, no instance metadata)."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["aws-setup", "--ssh-cidr", "198.51.100.0/24"]) == 2
    err = capsys.readouterr().err
    assert "no usable AWS credentials" in err and "aws sso login" in err


def test_cli_bake_needs_the_constraints_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "constraints.txt"
    assert main(["aws-setup", "--ssh-cidr", "198.51.100.0/24", "--bake-ami", "--constraints", str(missing)]) == 2
    assert f"--constraints {missing}: no such file" in capsys.readouterr().err
