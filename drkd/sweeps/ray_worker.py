"""The training job as one worker of a Ray Train (DDP) run."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import CheckpointUploadMode
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from drkd.config import config_from_dict
from drkd.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_atomic
from drkd.train.run_context import RunContext

SCORE_KEY = "mAP"  # the metric that ranks a trial's checkpoints (the best one is kept)
MID_EPOCH_KEY = "mid_epoch_checkpoint"  # marks a report that only carries a mid-epoch checkpoint


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-1 of the learned weights; BatchNorm running statistics are left out, as each DDP rank
    updates its own after the last broadcast."""
    h = hashlib.sha1()
    for key in sorted(state):
        if "running_" in key or key.endswith("num_batches_tracked"):
            continue
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class RayTrainContext(RunContext):
    """Rank and device from Ray Train; collectives over the process group Ray Train set up."""

    def __init__(self, started_at: float | None = None, driver_node: str | None = None) -> None:
        self.started_at, self.driver_node = started_at, driver_node
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def wrap(self, model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        if not self.distributed:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # The shipped methods reach every parameter in every step, images without objects included
        # (their modules run on empty tensors; tests/test_distillation_sanity.py checks it), so DDP
        # skips its per-step graph traversal unless a method asks for it.
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)

    def gather(self, items: list) -> list:
        if not self.distributed:
            return items
        out: list[list] | None = [None] * self.world_size if self.rank == 0 else None  # type: ignore[list-item]
        dist.gather_object(items, out, dst=0)
        return [x for part in out for x in part] if out is not None else []

    def broadcast(self, obj: Any) -> Any:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def any_rank(self, flag: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        """Every rank reports (Ray Train needs it); rank 0 alone writes the checkpoint.

        Rank 0's metrics also say how many nodes the workers ran on, whether every replica
        holds the same student weights (`ddp_in_sync`: a cheap guard against silent desync) and the
        node of the trial's driver (`driver_node`, a Ray node id). The
        checkpoint is uploaded in the background (Ray Train's ASYNC mode, which deletes the local
        copy afterwards), so training goes on while it reaches shared storage; ``state`` ``None``
        (every rank alike, as after an agreed divergence) reports metrics only.
        """
        checkpoint = None
        if state is not None:
            replicas = self.gather([(ray.get_runtime_context().get_node_id(), weights_digest(state["student"]))])
            if self.rank == 0:
                metrics = {
                    **metrics,
                    "ddp_workers": self.world_size,
                    "ddp_nodes": len({node for node, _ in replicas}),
                    "ddp_in_sync": float(len({digest for _, digest in replicas}) == 1),
                    **({"driver_node": self.driver_node} if self.driver_node else {}),
                }
                checkpoint = _scratch_checkpoint(state)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_upload_mode=CheckpointUploadMode.ASYNC)

    def checkpoint(self, state: dict[str, Any]) -> None:
        """A report that carries only the checkpoint, uploaded before training goes on (the machine
        may be gone soon) and kept from Tune (:class:`~drkd.sweeps.trial.EpochReportCallback`). Its
        score is -inf, so it never displaces the best epoch's checkpoint; Ray Train keeps it as the
        latest, the one a restarted worker group resumes from."""
        partial = state["partial"]
        metrics = {MID_EPOCH_KEY: 1.0, "epoch": partial["epoch"], "iteration": partial["iterations"]}
        checkpoint = _scratch_checkpoint(state) if self.rank == 0 else None
        ray.train.report(
            {**metrics, SCORE_KEY: float("-inf")},
            checkpoint=checkpoint,
            checkpoint_upload_mode=CheckpointUploadMode.SYNC,
        )
        self.log(f"mid-epoch checkpoint saved: epoch {partial['epoch'] + 1}, iteration {partial['iterations']}")

    def restore(self) -> dict[str, Any] | None:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as path:
            self.log(f"resuming from {checkpoint.path}")
            return load_checkpoint(Path(path) / CHECKPOINT_NAME)


def _scratch_checkpoint(state: dict[str, Any]) -> ray.train.Checkpoint:
    """``state`` in a fresh local directory, as a Ray Train checkpoint to upload (not fsynced: the
    directory is a scratch copy)."""
    local = Path(tempfile.mkdtemp(prefix="drkd_checkpoint_"))
    save_atomic(state, local / CHECKPOINT_NAME, durable=False)
    return ray.train.Checkpoint.from_directory(str(local))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point: everything comes from `loop_config["config"]` (a Config as a dict)."""
    from drkd.train.job import run_training

    torch.set_num_threads(max(1, int(loop_config.get("threads_per_worker", 1))))
    cfg = config_from_dict(loop_config["config"], "trial config")
    run_training(cfg, RayTrainContext(loop_config.get("started_at"), loop_config.get("driver_node")))
