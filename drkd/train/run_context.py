"""Where a training job runs: one local process, or one worker of a distributed (Ray Train) job.

The training job talks only to this interface, so the same code runs under `drkd train` and
inside a Ray Train worker.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from drkd.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_atomic

log = logging.getLogger("drkd.train")


class RunContext:
    """Rank, device, and the collective operations a training job needs."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    started_at: float | None = None  # time.time() when the run (a sweep's trial) started; None: now

    def wrap(self, model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        """Wrap the trainable model for data-parallel training (identity for one process).

        ``find_unused_parameters``: DDP's search for parameters without a gradient, needed only by a
        method that leaves some out of a step (its ``MethodSpec.ddp_find_unused_parameters``).
        """
        return model

    def gather(self, items: list) -> list:
        """Concatenate every rank's list on rank 0 (other ranks get [])."""
        return items

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        return obj

    def barrier(self) -> None:
        """Wait for every rank."""

    def any_rank(self, flag: torch.Tensor) -> torch.Tensor:
        """``flag`` (a small tensor of 0/1 values) reduced elementwise with max over every rank: 1 where
        any rank has 1."""
        return flag

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        """Record one epoch's metrics and its full checkpoint `state` (``None``: metrics only, as for
        the final report of a diverged run, whose weights are not worth resuming)."""
        raise NotImplementedError

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Save a mid-epoch checkpoint to resume from (``state["partial"]`` says how far the epoch got),
        before the machine is reclaimed; no metrics are recorded. Every rank calls it."""
        raise NotImplementedError

    def restore(self) -> dict[str, Any] | None:
        """The checkpoint to resume from, if any."""
        return None

    def log(self, message: str) -> None:
        if self.rank == 0:
            log.info(message)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class LocalContext(RunContext):
    """One process: checkpoints and a metrics log (JSON lines) in `output_dir`."""

    def __init__(self, output_dir: str | Path, device: str = "auto", resume: bool = False) -> None:
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(device)
        self.resume = resume
        self.checkpoint_path = self.output_dir / CHECKPOINT_NAME
        self.metrics_path = self.output_dir / "metrics.jsonl"

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if state is not None:
            save_atomic(state, self.checkpoint_path)
        # Rewrite the history up to this epoch so a resumed run never duplicates lines.
        history = self.history()
        history = [h for h in history if h.get("epoch", 0) < metrics["epoch"]] + [metrics]
        tmp = self.metrics_path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(h, sort_keys=True) + "\n" for h in history))
        tmp.replace(self.metrics_path)
        self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))

    def checkpoint(self, state: dict[str, Any]) -> None:
        save_atomic(state, self.checkpoint_path)
        self.log(f"mid-epoch checkpoint {self.checkpoint_path} ({state['partial']})")

    def history(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def restore(self) -> dict[str, Any] | None:
        if self.resume and self.checkpoint_path.is_file():
            self.log(f"resuming from {self.checkpoint_path}")
            return load_checkpoint(self.checkpoint_path)
        return None
