"""Under DDP every rank stops at the iteration where any rank's loss stops being finite: two real gloo
processes, a NaN on rank 1 only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from drkd.train.engine import NonFiniteLossError, train_one_epoch


class _Quadratic(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, images, targets):
        loss = (self.w**2).sum() * images[0].sum()
        return loss, {"loss_total": loss, "loss_det": loss}


def _any_rank(flag: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag


def _worker(rank: int, store: str, out: str, agree: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model = DistributedDataParallel(_Quadratic())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        second = torch.full((1,), float("nan")) if rank == 1 else torch.ones(1)
        # two batches: without agreement, rank 0's epoch ends after the NaN step (no later collective
        # waits for the rank that stopped)
        loader = [([torch.ones(1)], []), ([second], [])]
        steps: list[int] = []
        optimizer.register_step_post_hook(lambda *_: steps.append(1))
        error = None
        try:
            train_one_epoch(
                model,
                optimizer,
                scheduler,
                loader,
                epoch=1,
                device=torch.device("cpu"),
                any_rank=_any_rank if agree else None,
            )
        except NonFiniteLossError as err:
            error = str(err)
        Path(out, f"rank{rank}.json").write_text(
            json.dumps({"error": error, "steps": len(steps), "w": model.module.w.detach().tolist()})
        )
        del model  # DDP's reducer holds the process group: release it before destroying the group
    finally:
        dist.destroy_process_group()
    # Leave without the interpreter's teardown: on a loaded machine, gloo's threads met C++ static
    # destructors at exit once ("terminate called without an active exception", SIGABRT) after
    # this rank had written its result; what the test checks is in the file.
    os._exit(0)


def _run(tmp_path: Path, agree: bool) -> list[dict]:
    out = tmp_path / ("agree" if agree else "alone")
    out.mkdir()
    mp.spawn(_worker, args=(str(tmp_path / f"store_{agree}"), str(out), agree), nprocs=2, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_every_rank_stops_at_the_iteration_where_one_rank_saw_a_nan(tmp_path: Path) -> None:
    rank0, rank1 = _run(tmp_path, agree=True)
    assert rank1["error"] == "loss_total = nan at epoch 1, iteration 1: stopping"  # its own term, named
    assert rank0["error"] == "a loss term on another rank is not finite at epoch 1, iteration 1"
    for rank in (rank0, rank1):
        assert rank["steps"] == 1  # the NaN step reached no optimiser
        assert rank["w"] == pytest.approx([0.8] * 3)  # w - 0.1 * 2w after the one good step, on both


def test_without_agreement_the_healthy_rank_steps_into_nan_weights(tmp_path: Path) -> None:
    """Why the agreement exists: DDP averaged rank 1's NaN gradient into rank 0's, which saw a finite
    loss, stepped, and kept training on NaN weights while rank 1 stopped."""
    rank0, rank1 = _run(tmp_path, agree=False)
    assert rank1["error"] is not None and rank1["steps"] == 1
    assert rank0["error"] is None and rank0["steps"] == 2 and all(w != w for w in rank0["w"])  # NaN
