"""`drkd aws-setup`: the one-time AWS resources `cluster.yaml` names, so the file holds no
placeholder and `ray up cluster.yaml` works with nothing but AWS credentials.

What it creates (each found and reused when it exists, so a rerun is harmless):

- the security group ``drkd-ray-cluster`` in the region's default VPC: all traffic between its
  members (Ray's ports, NFS to the EFS mount targets) and 22/tcp from ``--ssh-cidr`` only. Ray fills
  a group only when it has no rules (ray/autoscaler/_private/aws/config.py,
  ``_upsert_security_group_rules``), so a group made here keeps exactly these rules; an SSH rule
  open to the world (which Ray adds when it creates the group itself, e.g. by a `ray up` before
  this command) is revoked.
- IAM roles and instance profiles ``drkd-head`` (what Ray's autoscaler needs to launch workers:
  EC2, S3, passing ``drkd-worker``, reading the image and EFS parameters) and ``drkd-worker``
  (reading the parameters, S3 read-only). `cluster.yaml` names them by name: no account id.
- the EFS file system (creation token ``drkd-results``) with a mount target in every default
  subnet, its id kept in the SSM parameter ``/drkd/efs-id``, which every node reads at boot.
- with ``--bake-ami``, the node image: the region's Deep Learning AMI with Python 3.11, the NFS
  client and every pin of constraints.txt installed once; its id in ``/drkd/ami-id``, the
  ``ImageId`` of every node type, so a node starts without installing torch. Without a baked
  image, ``/drkd/ami-id`` is the Deep Learning AMI itself and nodes install the pins at first boot.

The AWS calls are not run by the test suite (no account); the rules, policies and boot script are
plain data built by the functions below, which tests/test_aws_setup.py checks.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

GROUP_NAME = "drkd-ray-cluster"
HEAD_PROFILE = "drkd-head"
WORKER_PROFILE = "drkd-worker"
EFS_TOKEN = "drkd-results"
EFS_PARAMETER = "/drkd/efs-id"
AMI_PARAMETER = "/drkd/ami-id"
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
WORLD = ("0.0.0.0/0", "::/0")


class SetupError(RuntimeError):
    """A setting or an AWS state that this command cannot fix by itself; the message says what to do."""


def ssh_cidr(value: str) -> str:
    """The ``--ssh-cidr`` value, checked: a network, not the whole internet.

    Raises:
        SetupError: not a CIDR, or one that opens SSH to everyone.
    """
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError as err:
        raise SetupError(f"--ssh-cidr {value!r}: not a CIDR such as 198.51.100.0/24 ({err})") from None
    if net.prefixlen == 0:
        raise SetupError(f"--ssh-cidr {value}: opens SSH to the whole internet; give your network's CIDR")
    return str(net)


def ingress_rules(group_id: str, cidr: str) -> list[dict[str, Any]]:
    """The group's inbound rules (EC2 ``IpPermissions``): all traffic from the group, SSH from ``cidr``."""
    ranges = {"Ipv6Ranges": [{"CidrIpv6": cidr}]} if ":" in cidr else {"IpRanges": [{"CidrIp": cidr}]}
    return [
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id, "Description": "within the cluster"}]},
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **ranges},
    ]


def world_open_rules(permissions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules of ``permissions`` (EC2 ``IpPermissions``) that admit anyone to any port, reduced to
    their world-open ranges, ready for ``revoke_security_group_ingress``."""
    out = []
    for rule in permissions:
        v4 = [r for r in rule.get("IpRanges", []) if r.get("CidrIp") in WORLD]
        v6 = [r for r in rule.get("Ipv6Ranges", []) if r.get("CidrIpv6") in WORLD]
        if v4 or v6:
            keep = {k: rule[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in rule}
            out.append({**keep, "IpRanges": [{"CidrIp": r["CidrIp"]} for r in v4]} if v4 else keep)
            if v6:
                out[-1]["Ipv6Ranges"] = [{"CidrIpv6": r["CidrIpv6"]} for r in v6]
    return out


def missing_rules(permissions: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules of ``wanted`` not already in ``permissions`` (compared on protocol, ports and sources)."""

    def key(rule: dict[str, Any]) -> tuple:
        sources = [g["GroupId"] for g in rule.get("UserIdGroupPairs", [])]
        sources += [r["CidrIp"] for r in rule.get("IpRanges", [])] + [r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])]
        # all traffic ("-1") has no ports; EC2 and Ray write them as absent or -1
        ports = (None, None) if rule["IpProtocol"] == "-1" else (rule.get("FromPort"), rule.get("ToPort"))
        return rule["IpProtocol"], *ports, tuple(sorted(sources))

    have = {key(r) for r in permissions}
    return [r for r in wanted if key(r) not in have]


def role_policies(region: str, account: str) -> dict[str, dict[str, Any]]:
    """The inline policy of each role (``{role name: policy document}``).

    The head also gets AWS's managed AmazonEC2FullAccess and AmazonS3FullAccess (what Ray's own
    default head role has); the worker AmazonS3ReadOnlyAccess.
    """
    params = f"arn:aws:ssm:{region}:{account}:parameter/drkd/*"
    public = f"arn:aws:ssm:{region}::parameter/aws/service/deeplearning/*"
    read_params = {"Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:GetParameters"], "Resource": [params, public]}
    return {
        HEAD_PROFILE: {
            "Version": "2012-10-17",
            "Statement": [
                read_params,  # EC2 resolves resolve:ssm: ImageIds with the launcher's rights
                {
                    "Effect": "Allow",
                    "Action": "iam:PassRole",
                    "Resource": f"arn:aws:iam::{account}:role/{WORKER_PROFILE}",
                },
            ],
        },
        WORKER_PROFILE: {"Version": "2012-10-17", "Statement": [read_params]},
    }


MANAGED_POLICIES = {
    HEAD_PROFILE: ["arn:aws:iam::aws:policy/AmazonEC2FullAccess", "arn:aws:iam::aws:policy/AmazonS3FullAccess"],
    WORKER_PROFILE: ["arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"],
}


def bake_script(constraints: str) -> str:
    """The boot script (EC2 UserData) of the instance a node image is made from: Python 3.11, the
    NFS client and every pin of ``constraints`` (the text of constraints.txt) in Python 3.11's
    system site-packages, then power off. The nodes' venv (``--system-site-packages``) sees them,
    so `pip install -e ~/drkd[cluster] -c constraints.txt` at boot installs only the project."""
    pins = "\n".join(line for line in constraints.splitlines() if line.strip() and not line.startswith("#"))
    return f"""#!/bin/bash
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -y
apt-get -o DPkg::Lock::Timeout=600 install -y software-properties-common
add-apt-repository -y --no-update ppa:deadsnakes/ppa
apt-get -o DPkg::Lock::Timeout=600 update -y
apt-get -o DPkg::Lock::Timeout=600 install -y python3.11 python3.11-venv python3.11-dev nfs-common rsync
python3.11 -m ensurepip --upgrade
cat > /tmp/drkd-pins.txt <<'PINS'
{pins}
PINS
python3.11 -m pip install --no-cache-dir -r /tmp/drkd-pins.txt
python3.11 -c "import torch, torchvision, ray, optuna, pycocotools"
touch /var/lib/drkd-baked
poweroff
"""


def aws_setup(
    ssh_cidr_value: str,
    region: str,
    bake_ami: bool,
    constraints: Path,
    session: Any | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, str]:
    """Create or reuse everything `cluster.yaml` names (see the module docstring).

    Args:
        ssh_cidr_value: the only network SSH is open to, e.g. ``198.51.100.0/24``.
        region: the AWS region; must be ``provider.region`` of `cluster.yaml` (``us-west-2``).
        bake_ami: also bake the node image (about 20 minutes, once per constraints.txt).
        constraints: constraints.txt, the pins the image gets.
        session: a ``boto3.Session``; default: one from the environment's credentials.
        say: where progress lines go.

    Returns:
        ``{"security_group": id, "efs": id, "ami": id}``.

    Raises:
        SetupError: a bad argument, no default VPC, or missing credentials.
    """
    cidr = ssh_cidr(ssh_cidr_value)
    if bake_ami and not constraints.is_file():
        raise SetupError(f"--constraints {constraints}: no such file (run from the repository root)")
    try:
        import boto3
        import botocore.exceptions
    except ImportError as err:
        raise SetupError("drkd aws-setup needs boto3: pip install -e '.[cluster]' -c constraints.txt") from err
    session = session or boto3.Session(region_name=region)
    try:
        account = session.client("sts").get_caller_identity()["Account"]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise SetupError(f"no usable AWS credentials ({err}); run `aws configure` or `aws sso login` first") from err
    try:
        return _create_all(session, region, account, cidr, bake_ami, constraints, say)
    except botocore.exceptions.ClientError as err:  # AccessDenied, limits: AWS's message says which
        raise SetupError(f"AWS refused: {err}") from err


def _create_all(
    session: Any, region: str, account: str, cidr: str, bake_ami: bool, constraints: Path, say: Callable[[str], None]
) -> dict[str, str]:
    ec2, ssm = session.client("ec2", region_name=region), session.client("ssm", region_name=region)
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise SetupError(f"region {region} has no default VPC: create one (`aws ec2 create-default-vpc`)")
    vpc = vpcs[0]["VpcId"]
    group = _security_group(ec2, vpc, cidr, say)
    _instance_profiles(session.client("iam"), region, account, say)
    efs = _file_system(session.client("efs", region_name=region), ec2, vpc, group, say)
    ssm.put_parameter(Name=EFS_PARAMETER, Value=efs, Type="String", Overwrite=True)
    dlami = ssm.get_parameter(Name=DLAMI_PARAMETER)["Parameter"]["Value"]
    ami = _bake(ec2, dlami, group, constraints.read_text(), say) if bake_ami else _current(ssm, dlami)
    ssm.put_parameter(Name=AMI_PARAMETER, Value=ami, Type="String", Overwrite=True)
    say(f"{AMI_PARAMETER} = {ami}; {EFS_PARAMETER} = {efs}; security group {GROUP_NAME} = {group}")
    return {"security_group": group, "efs": efs, "ami": ami}


def _security_group(ec2: Any, vpc: str, cidr: str, say: Callable[[str], None]) -> str:
    found = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [GROUP_NAME]}, {"Name": "vpc-id", "Values": [vpc]}]
    )["SecurityGroups"]
    if found:
        group, permissions = found[0]["GroupId"], found[0]["IpPermissions"]
    else:
        group = ec2.create_security_group(GroupName=GROUP_NAME, Description="drkd Ray cluster", VpcId=vpc)["GroupId"]
        permissions = []
        say(f"created security group {GROUP_NAME} ({group})")
    if opened := world_open_rules(permissions):
        ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=opened)
        say(f"revoked {len(opened)} rule(s) of {GROUP_NAME} open to the whole internet")
    if add := missing_rules(permissions, ingress_rules(group, cidr)):
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=add)
    say(f"security group {GROUP_NAME}: SSH from {cidr} only, all traffic within the group")
    return group


def _instance_profiles(iam: Any, region: str, account: str, say: Callable[[str], None]) -> None:
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    for name, policy in role_policies(region, account).items():
        try:
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
            say(f"created IAM role {name}")
        except iam.exceptions.EntityAlreadyExistsException:
            pass
        iam.put_role_policy(RoleName=name, PolicyName="drkd-cluster", PolicyDocument=json.dumps(policy))
        for arn in MANAGED_POLICIES[name]:
            iam.attach_role_policy(RoleName=name, PolicyArn=arn)
        try:
            iam.create_instance_profile(InstanceProfileName=name)
        except iam.exceptions.EntityAlreadyExistsException:
            pass
        roles = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
        if not any(r["RoleName"] == name for r in roles):
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    say(f"instance profiles {HEAD_PROFILE}, {WORKER_PROFILE} ready")


def _file_system(efs: Any, ec2: Any, vpc: str, group: str, say: Callable[[str], None]) -> str:
    fs = (
        efs.create_file_system(
            CreationToken=EFS_TOKEN,
            Encrypted=True,
            ThroughputMode="elastic",
            Tags=[{"Key": "Name", "Value": EFS_TOKEN}],
        )
        if not (found := efs.describe_file_systems(CreationToken=EFS_TOKEN)["FileSystems"])
        else found[0]
    )
    fs_id = fs["FileSystemId"]
    while efs.describe_file_systems(FileSystemId=fs_id)["FileSystems"][0]["LifeCycleState"] != "available":
        time.sleep(5)
    zones = {t["AvailabilityZoneName"] for t in efs.describe_mount_targets(FileSystemId=fs_id)["MountTargets"]}
    subnets = ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "default-for-az", "Values": ["true"]}]
    )
    for subnet in subnets["Subnets"]:
        if subnet["AvailabilityZone"] not in zones:
            efs.create_mount_target(FileSystemId=fs_id, SubnetId=subnet["SubnetId"], SecurityGroups=[group])
    say(f"EFS {fs_id} ({EFS_TOKEN}) with a mount target in every default subnet")
    return fs_id


def _current(ssm: Any, dlami: str) -> str:
    """Without a baked image: keep a baked one already recorded, else the Deep Learning AMI."""
    try:
        return ssm.get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        return dlami


def _bake(ec2: Any, dlami: str, group: str, constraints: str, say: Callable[[str], None]) -> str:
    say(f"baking the node image from {dlami} (about 20 minutes)")
    instance = ec2.run_instances(
        ImageId=dlami,
        InstanceType="m5.2xlarge",
        MinCount=1,
        MaxCount=1,
        SecurityGroupIds=[group],
        UserData=bake_script(constraints),
        InstanceInitiatedShutdownBehavior="stop",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 150, "VolumeType": "gp3"}}],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "drkd-bake"}]}],
    )["Instances"][0]["InstanceId"]
    try:
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance], WaiterConfig={"Delay": 30, "MaxAttempts": 120})
        image = ec2.create_image(InstanceId=instance, Name=f"drkd-node-{int(time.time())}")["ImageId"]
        ec2.get_waiter("image_available").wait(ImageIds=[image], WaiterConfig={"Delay": 30, "MaxAttempts": 120})
    finally:
        ec2.terminate_instances(InstanceIds=[instance])
    say(f"baked {image}")
    return image
