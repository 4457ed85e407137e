"""Training throughput of the same DDP job under Ray Train and under torchrun, side by side.

    python bench/ray_overhead.py [--workers 2] [--iters 30] [--warmup 5] [--repeats 3] [--quick]

The job: the embedded default's DRKD student (`drkd.config.presets.tiny_student_config`, RetinaNet
ResNet-18 / FPN-64, batch 8 per worker, 160-px images) distilled from an *untrained* teacher
(`teacher.checkpoint` unset: the weights do not matter for throughput) on a small synthetic
dataset (64 train images) generated once into a temporary directory. CPU only, gloo, one thread
per worker (`OMP_NUM_THREADS=1` and `torch.set_num_threads(1)`) under both launchers.

Both launchers run the same worker function, `train_and_time`: it builds the datasets,
DistributedSampler/DataLoader, models, SGD and LR schedule as `drkd.train.job.run_training`
does, wraps the model with the context's `wrap` (the DistributedDataParallel of
`drkd.sweeps.ray_worker.RayTrainContext`, used by both), runs `--warmup` iterations through
`drkd.train.engine.train_one_epoch`, then times `--iters` more between two barriers. Throughput =
iters × batch × workers / that time (rank 0's clock), so process and actor start-up, data
generation, model building and evaluation are all outside the measurement.

* torchrun: `python -m torch.distributed.run --standalone --nproc-per-node N bench/ray_overhead.py
  --worker SPEC`.
* Ray: `ray.train.torch.TorchTrainer` with `ScalingConfig(num_workers=N, resources_per_worker={"CPU": 1})`
  and gloo, on a fresh local Ray instance of its own (`ray.init(address="local", num_cpus=N + 1)`,
  see `drkd.sweeps.ray_instance.start_private_ray`) started once before the first round, so torchrun rounds run beside the
  same idle Ray processes.

Under both, rank 0 writes its numbers to a JSON file that the driver reads.

Where the time goes: over the same timed window each run also accounts the machine's CPU, as
shares of all its cores (`os.cpu_count()` × the window): the workers' own (process CPU time of
every rank, all threads, summed) and everything else's (the machine's busy time from /proc/stat
minus the workers'): the driver, Ray's daemons (idle during the torchrun rounds, as the instance
stays up), and in the Ray rounds Ray Train's controller and helper actors. Where the workers fill
the cores, what the others take in the Ray rounds beyond the torchrun ones is what Ray costs.

Ray runs its worker processes at niceness 15 (`RAY_worker_niceness`); on a machine busy with
other work that alone lowers their share of the CPUs. So torchrun and its workers run at the same
niceness (`--no-match-niceness`: at this script's own); on an idle machine it changes nothing.

Rounds alternate torchrun, Ray, torchrun, Ray, ... (`--repeats` rounds); each round's Ray/torchrun
ratio pairs neighbouring runs, so slow drifts in machine load cancel. The headline is the median
of those ratios (the speed issue's goal: ≥ 0.99). Run it on an otherwise idle machine for numbers worth quoting.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from drkd.config import Config, config_from_dict
from drkd.config.presets import tiny_student_config
from drkd.data.coco_dataset import collate_detection
from drkd.sweeps.ray_instance import start_private_ray
from drkd.sweeps.ray_worker import RayTrainContext
from drkd.train.engine import train_one_epoch
from drkd.train.job import build_datasets, build_models, prepare_data, seed_everything
from drkd.train.lr_schedule import build_scheduler, scaled_lr
from drkd.train.run_context import RunContext

THREADS_PER_WORKER = 1
GOAL = 0.99  # the speed issue's: Ray Train at least 0.99 x torchrun's throughput
NUM_TRAIN, NUM_VAL = 64, 16


def bench_config(data_root: Path) -> Config:
    cfg = tiny_student_config("one_stage", "drkd", teacher_checkpoint=None, root=data_root)
    cfg.distill.allow_untrained_teacher = True  # a speed benchmark: the teacher's weights do not matter
    cfg.data.synthetic_num_train, cfg.data.synthetic_num_val = NUM_TRAIN, NUM_VAL
    cfg.train.device = "cpu"
    return cfg


class TorchrunContext(RayTrainContext):
    """A torchrun worker: rank and world size from torchrun's environment, a gloo process group.

    Only the constructor differs from `RayTrainContext`, whose DDP wrapping and collectives are
    plain torch.distributed: both launchers train the very same DistributedDataParallel model.
    """

    def __init__(self) -> None:
        dist.init_process_group("gloo")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = torch.device("cpu")

    def report(self, metrics: dict[str, Any], state: dict[str, Any]) -> None:
        raise NotImplementedError("the benchmark worker returns its numbers instead")


def _endless(loader: DataLoader, sampler: DistributedSampler) -> Iterator[Any]:
    """The loader's batches, epoch after epoch (reshuffled per epoch as run_training does)."""
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        yield from loader


def train_and_time(ctx: RunContext, spec: dict[str, Any]) -> dict[str, float]:
    """Set up the job as run_training does, then time `spec["iters"]` iterations after `spec["warmup"]`."""
    torch.set_num_threads(int(spec["threads"]))
    logging.getLogger("drkd.train").setLevel(logging.ERROR)  # "untrained teacher" is intended here
    cfg = config_from_dict(spec["config"], "benchmark config")
    t = cfg.train
    seed_everything(t.seed)
    data = build_datasets(cfg) if ctx.rank == 0 else None
    ctx.barrier()
    data = data or build_datasets(cfg)
    sampler = DistributedSampler(
        data.train, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=t.seed, drop_last=True
    )
    loader = DataLoader(
        data.train,
        batch_size=cfg.data.batch_size,
        sampler=sampler,
        collate_fn=collate_detection,
        num_workers=cfg.data.loader_workers,
        drop_last=True,
    )
    model = build_models(cfg, data.num_classes).to(ctx.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        trainable,
        lr=scaled_lr(t.lr, cfg.data.batch_size * ctx.world_size),
        momentum=t.momentum,
        weight_decay=t.weight_decay,
    )
    scheduler = build_scheduler(optimizer, t.total_epochs, len(loader), t.warmup_iters, t.warmup_factor)
    wrapped = ctx.wrap(model)
    batches = _endless(loader, sampler)

    def run(n: int) -> None:
        if n > 0:
            its: Iterable[Any] = itertools.islice(batches, n)
            train_one_epoch(wrapped, optimizer, scheduler, its, epoch=1, device=ctx.device, grad_clip=t.grad_clip)

    run(int(spec["warmup"]))
    ctx.barrier()
    start, own_cpu, busy = time.perf_counter(), time.process_time(), machine_busy_s()
    run(int(spec["iters"]))
    ctx.barrier()
    elapsed, busy, own_cpu = time.perf_counter() - start, machine_busy_s() - busy, time.process_time() - own_cpu
    workers_cpu = torch.tensor([own_cpu], dtype=torch.float64)
    dist.all_reduce(workers_cpu)
    images = int(spec["iters"]) * cfg.data.batch_size * ctx.world_size
    capacity = elapsed * (os.cpu_count() or 1)
    return {
        "images_per_s": images / elapsed,
        "elapsed_s": elapsed,
        "iters": int(spec["iters"]),
        "world_size": ctx.world_size,
        "niceness": os.nice(0),
        # CPU accounting of the timed window, as shares of all the machine's cores
        "workers_cpu_share": float(workers_cpu) / capacity,
        "others_cpu_share": (busy - float(workers_cpu)) / capacity,
    }


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores; /proc/stat, Linux).

    Busy = user + nice + system + irq + softirq + steal; NaN where /proc/stat is missing.
    """
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_worker(ctx: RunContext, spec: dict[str, Any]) -> None:
    """Train and time; rank 0 writes the numbers to `spec["result"]` (JSON), for either launcher."""
    result = train_and_time(ctx, spec)
    if ctx.rank == 0:
        Path(spec["result"]).write_text(json.dumps(result))


def ray_worker(spec: dict[str, Any]) -> None:
    """TorchTrainer entry point (Ray set up the process group)."""
    run_worker(RayTrainContext(), spec)


def torchrun_worker(spec_path: Path) -> None:
    """Entry point of each torchrun process (`--worker SPEC`)."""
    ctx = TorchrunContext()
    try:
        run_worker(ctx, json.loads(spec_path.read_text()))
    finally:
        dist.destroy_process_group()


def worker_env() -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(THREADS_PER_WORKER)}


def read_result(spec: dict[str, Any]) -> dict[str, float]:
    return json.loads(Path(spec["result"]).read_text())


def run_torchrun(spec: dict[str, Any], workers: int, spec_path: Path, niceness: int) -> dict[str, float]:
    """torchrun and its workers at `niceness` (this process's own or higher)."""
    Path(spec["result"]).unlink(missing_ok=True)
    spec_path.write_text(json.dumps(spec))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(workers),
        str(Path(__file__).resolve()),
        "--worker",
        str(spec_path),
    ]
    increment = max(0, niceness - os.nice(0))
    subprocess.run(cmd, env={**os.environ, **worker_env()}, check=True, preexec_fn=lambda: os.nice(increment))
    return read_result(spec)


def ray_worker_niceness() -> int:
    """The niceness Ray gives its worker processes (RAY_worker_niceness, 15 by default)."""
    import ray

    return int(ray.get(ray.remote(num_cpus=0)(lambda: os.nice(0)).remote()))


def run_ray(spec: dict[str, Any], workers: int, storage: Path, name: str) -> dict[str, float]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    Path(spec["result"]).unlink(missing_ok=True)
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config=spec,
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=name, storage_path=str(storage)),
    )
    trainer.fit()
    return read_result(spec)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def print_table(runs: list[tuple[int, str, dict[str, float]]], ratios: list[float]) -> None:
    print(
        "\n| round | launcher | workers | worker niceness | timed iterations | time (s) | images/s "
        "| workers' CPU, % of the cores | other processes' CPU, % of the cores |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for rnd, launcher, r in runs:
        print(
            f"| {rnd} | {launcher} | {r['world_size']} | {r['niceness']} | {r['iters']} | {r['elapsed_s']:.2f} "
            f"| {r['images_per_s']:.2f} | {100 * r['workers_cpu_share']:.1f} | {100 * r['others_cpu_share']:.1f} |"
        )

    def median(launcher: str, key: str) -> float:
        return statistics.median(r[key] for _, name, r in runs if name == launcher)

    for launcher in ("torchrun", "ray"):
        print(
            f"median CPU in the timed window, {launcher}: workers {100 * median(launcher, 'workers_cpu_share'):.1f} %, "
            f"others {100 * median(launcher, 'others_cpu_share'):.1f} %"
        )
    print(
        f"\nmedian images/s: torchrun {median('torchrun', 'images_per_s'):.2f}, Ray {median('ray', 'images_per_s'):.2f}"
    )
    print("per-round ratio Ray/torchrun: " + ", ".join(f"{x:.3f}" for x in ratios))
    verdict = "meets" if statistics.median(ratios) >= GOAL else "misses"
    print(f"median ratio Ray/torchrun: {statistics.median(ratios):.3f} ({verdict} the ≥ {GOAL} goal)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="DDP workers under each launcher")
    parser.add_argument("--iters", type=int, default=30, help="timed training iterations per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of (torchrun run, Ray run)")
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 3 iterations after 1 warm-up: checks that it runs"
    )
    parser.add_argument(
        "--match-niceness",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the torchrun workers at the niceness Ray gives its workers (default: yes)",
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # internal: a torchrun process
    args = parser.parse_args()
    if args.worker is not None:
        torchrun_worker(args.worker)
        return
    if args.quick:
        args.iters, args.warmup, args.repeats = 3, 1, 1
    if min(args.workers, args.iters, args.repeats) < 1 or args.warmup < 0:
        parser.error("--workers, --iters and --repeats must be >= 1, --warmup >= 0")

    import ray

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="drkd_ray_overhead_") as tmp_name:
        tmp = Path(tmp_name)
        cfg = bench_config(tmp / "data")
        prepare_data(cfg)  # generated once, here: the workers find it complete
        if NUM_TRAIN // args.workers < cfg.data.batch_size:
            parser.error(
                f"--workers {args.workers}: fewer than a batch of {cfg.data.batch_size} training images per worker"
            )
        spec = {"config": cfg.to_dict(), "iters": args.iters, "warmup": args.warmup, "threads": THREADS_PER_WORKER}
        torchrun_spec = {**spec, "result": str(tmp / "torchrun_result.json")}
        ray_spec = {**spec, "result": str(tmp / "ray_result.json")}  # the workers share this machine's disk

        start_private_ray(num_cpus=args.workers + 1, env_vars=worker_env())
        niceness = ray_worker_niceness() if args.match_niceness else os.nice(0)
        runs: list[tuple[int, str, dict[str, float]]] = []
        ratios: list[float] = []
        try:
            for rnd in range(1, args.repeats + 1):
                log(f"round {rnd}/{args.repeats}: torchrun")
                base = run_torchrun(torchrun_spec, args.workers, tmp / "spec.json", niceness)
                log(f"round {rnd}/{args.repeats}: Ray Train")
                on_ray = run_ray(ray_spec, args.workers, tmp / "ray_storage", f"round_{rnd}")
                runs += [(rnd, "torchrun", base), (rnd, "ray", on_ray)]
                ratios.append(on_ray["images_per_s"] / base["images_per_s"])
        finally:
            log("shutting Ray down")
            ray.shutdown()
    print_table(runs, ratios)


if __name__ == "__main__":
    main()
