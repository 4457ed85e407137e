"""Where results live: a local directory or a storage URI (``s3://``, ``gs://``, ``file://``)."""

from __future__ import annotations

import os
from pathlib import Path


def is_uri(location: str | Path) -> bool:
    """True for a storage URI such as ``s3://bucket/results``, False for a local path."""
    return "://" in str(location)


def absolute_location(location: str) -> str:
    """A local path made absolute (against this process's working directory); a URI unchanged.

    Ray runs trials and their workers in other working directories, so a relative path in a
    sweep's config must be resolved on the driver before it reaches them.
    """
    return location if is_uri(location) else str(Path(location).resolve())


def default_results_dir() -> Path:
    """Where the sweeps write and the analysis reads: ``$DRKD_RESULTS`` or ``./results``."""
    env = os.environ.get("DRKD_RESULTS")
    return Path(env) if env else Path.cwd() / "results"
