"""Full training checkpoints, written atomically and loaded safely (weights_only)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_atomic(obj: Any, path: str | Path, durable: bool = True) -> Path:
    """torch.save to a temporary file in the same directory, then rename: never a half-written file.

    Args:
        obj: what to save (tensors and plain containers, for :func:`load_checkpoint`).
        path: the destination file; its directory is created if missing.
        durable: fsync before the rename, so the file survives a power loss (default True); off for
            a scratch copy that is uploaded elsewhere and deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with `weights_only=True`: tensors and plain containers only, no pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "student" not in state:
        raise ValueError(f"{path}: not a drkd checkpoint (no 'student' entry)")
    return state
