"""`ray up cluster-onprem.yaml` brings up a real one-machine cluster over SSH, runs a smoke sweep
on it and `ray down` stops it: the only run of the cluster file's file_mounts, setup and start
commands before a user pays for a cluster.

The "machine" is this one, reached through a real OpenSSH server the test starts on 127.0.0.1 (a
free port; Ray's SSH has no port setting, so ``auth.ssh_proxy_command`` relays to it). The SSH
user is a uid-0 alias with a temporary home, so the node's files (~/drkd, ~/drkd-venv, ~/.bashrc,
~/ray_bootstrap_config.yaml, ~/drkd-results) stay in the test's directory, and the node's system
Python is this one (the venv is made with --system-site-packages, so the pinned packages are
reused and the setup installs only the project). The cluster file is used as shipped except the
fields a user fills in (head_ip, worker_ips, ssh_user, ssh_private_key), the proxy command and the
cluster name.

The head's start commands run `ray stop`, which stops every Ray on the machine: CI runs the slow
tests one at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ONPREM = REPO / "cluster-onprem.yaml"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _missing() -> str | None:
    """Why this machine cannot host the test's SSH node, or None."""
    if os.geteuid() != 0:
        return "needs root (a uid-0 SSH user with a temporary home, and sshd's privilege separation)"
    for tool in (SSHD, "ssh", "ssh-keygen", "rsync", "useradd", "userdel"):
        if not (shutil.which(tool) or Path(tool).is_file()):
            return f"{tool} is not installed (Debian: apt-get install openssh-server rsync)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ssh_node(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real sshd on 127.0.0.1:<free port> admitting one uid-0 user, whose home is a temporary directory."""
    if why := _missing():
        pytest.skip(why)
    user = f"drkdnode{uuid.uuid4().hex[:6]}"
    home = tmp_path / "node_home"
    home.mkdir()
    etc = tmp_path / "sshd"
    etc.mkdir()
    key = tmp_path / "id_ed25519"
    for path in (key, etc / "host_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    (etc / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    # The node's own environment: its system Python (this one) first on PATH, as on a machine
    # where python3.11 and the pinned packages are installed system-wide.
    (home / ".bashrc").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')
    port = _free_port()
    (etc / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {etc / 'host_key'}\nPidFile {etc / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {etc / 'authorized_keys'}\nAllowUsers {user}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "MaxSessions 50\nMaxStartups 50\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    # -p '*': no password, but not locked (sshd refuses a locked account even with a key)
    useradd = ["useradd", "-o", "-u", "0", "-g", "0", "-M", "-p", "*", "-d", str(home), "-s", "/bin/bash", user]
    subprocess.run(useradd, check=True, capture_output=True)
    sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(etc / "sshd_config")], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if sshd.poll() is not None or time.time() > deadline:
                    pytest.skip(f"sshd did not start: {sshd.stderr.read()[-2000:] if sshd.stderr else ''}")
                time.sleep(0.2)
        yield {"user": user, "home": str(home), "key": str(key), "port": str(port)}
    finally:
        sshd.send_signal(signal.SIGTERM)
        sshd.wait(timeout=30)
        subprocess.run(["userdel", "-f", user], check=False, capture_output=True)  # -f: uid 0 always has processes


def _cluster_file(tmp_path: Path, node: dict[str, str]) -> Path:
    """cluster-onprem.yaml with the fields a user fills in pointed at the test's node."""
    cfg = yaml.safe_load(ONPREM.read_text())
    cfg["cluster_name"] = f"drkd-test-{uuid.uuid4().hex[:6]}"
    cfg["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    cfg["auth"] = {
        "ssh_user": node["user"],
        "ssh_private_key": node["key"],
        "ssh_proxy_command": f"{sys.executable} {REPO / 'tests' / 'tcp_relay.py'} 127.0.0.1 {node['port']}",
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.slow  # ~5 min: installs the project on the node, starts Ray over SSH, runs a smoke sweep
@pytest.mark.timeout(2400)
def test_ray_up_onprem_runs_a_smoke_sweep_and_ray_down(ssh_node: dict[str, str], tmp_path: Path) -> None:
    cluster = _cluster_file(tmp_path, ssh_node)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    home = Path(ssh_node["home"])

    def ray(*argv: str, timeout: int = 1200) -> str:
        done = subprocess.run(
            ["ray", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert done.returncode == 0, f"ray {argv[0]}:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
        return done.stdout + done.stderr

    try:
        ray("up", "-y", "--no-config-cache", str(cluster))
        # the setup commands ran on the node: the checkout synced, the project installed in the venv
        assert (home / "drkd" / "pyproject.toml").is_file() and not (home / "drkd" / ".git").exists()
        bashrc = (home / ".bashrc").read_text()
        assert "drkd-venv/bin" in bashrc and "DRKD_RESULTS" in bashrc
        status = ray("exec", str(cluster), "ray status")
        assert "drkd_driver" in status, status
        # from / : in the home directory the checkout ~/drkd would import as a namespace package
        where = ray("exec", str(cluster), "cd / && python -c 'import drkd; print(drkd.__file__)'")
        assert str(home / "drkd" / "drkd" / "__init__.py") in where, where

        out = ray("exec", str(cluster), "cd ~/drkd && python sweeps/lambda_search.py --smoke-test")
        assert "smoke test: the config with these sizes changed, nothing else:" in out, out[-3000:]
        experiment = home / "drkd-results" / "smoke_test" / "lambda_search_drkd"
        assert f"experiment: {experiment}" in out, out[-3000:]
        trials = [p for p in experiment.iterdir() if (p / "result.json").is_file()]
        assert len(trials) == 2, sorted(p.name for p in experiment.iterdir())
        for trial in trials:
            lines = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
            assert lines and lines[-1]["epoch"] == 1 and lines[-1]["mAP"] >= 0, lines
        best = yaml.safe_load((experiment / "best_config.yaml").read_text())
        assert best["distill"]["method"] == "drkd"
    finally:
        down = subprocess.run(
            ["ray", "down", "-y", str(cluster)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
    assert down.returncode == 0, down.stderr[-3000:]
    # `ray down` stopped the head: nothing of this cluster is left running
    left = subprocess.run(["pgrep", "-f", "gcs_server"], capture_output=True, text=True)
    assert left.returncode != 0, left.stdout
