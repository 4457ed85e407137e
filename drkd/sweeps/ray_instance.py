"""Which Ray instance, made unambiguous: a private local one, or a named cluster, that no other Ray
on the machine can be mistaken for by Ray's own internal actors."""

from __future__ import annotations

import os
import socket
from typing import Any

import ray


def free_port() -> int:
    """A TCP port the OS reports free now (another process may take it before it is used)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def start_private_ray(
    num_cpus: int,
    resources: dict[str, float] | None = None,
    env_vars: dict[str, str] | None = None,
    **init_kwargs: Any,
) -> str:
    """Start a fresh local Ray instance and return its GCS address.

    Ray Train's internal actors (its placement-group cleaner) find the cluster through the State
    API, which resolves RAY_ADDRESS, else the most recently started instance on the machine. Beside
    another instance (a second sweep, a test run, a benchmark) the cleaner asks that one whether
    our Train controller lives, is told no, and exits or removes our placement group. So the GCS
    and dashboard ports are chosen here and the address goes into every worker's RAY_ADDRESS. The
    dashboard stays on: the State API needs it.

    Args:
        num_cpus: CPUs the instance advertises.
        resources: custom resources it advertises (e.g. the trial-driver resource).
        env_vars: extra environment for every worker process (the job's runtime_env).
        **init_kwargs: passed to ``ray.init`` (e.g. ``log_to_driver``).
    """
    gcs_port, dashboard_port = free_port(), free_port()
    address = f"{ray.util.get_node_ip_address()}:{gcs_port}"
    os.environ["RAY_GCS_SERVER_PORT"] = str(gcs_port)
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            resources=resources,
            dashboard_port=dashboard_port,
            runtime_env={"env_vars": {**(env_vars or {}), "RAY_ADDRESS": address}},
            **init_kwargs,
        )
    finally:
        del os.environ["RAY_GCS_SERVER_PORT"]
    started = ray.get_runtime_context().gcs_address
    if started != address:
        ray.shutdown()
        raise RuntimeError(f"Ray started at {started}, expected {address} (port taken meanwhile?): run again")
    return address


def join_ray(address: str, **init_kwargs: Any) -> None:
    """Connect to the cluster at ``address`` and name it in every worker's RAY_ADDRESS (see
    `start_private_ray`: Ray Train's internal actors otherwise resolve the most recently started
    instance on their node, which on a machine hosting several is not necessarily this one).

    Args:
        address: a GCS address (``host:port``), ``auto``, or a Ray Client ``ray://`` address
            (the last two are passed through unchanged: a worker cannot use them).
        **init_kwargs: passed to ``ray.init``.
    """
    if address == "auto" or "://" in address:
        ray.init(address=address, **init_kwargs)
    else:
        ray.init(address=address, runtime_env={"env_vars": {"RAY_ADDRESS": address}}, **init_kwargs)
