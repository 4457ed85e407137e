"""Faster R-CNN's box pooler on the CPU: torchvision's MultiScaleRoIAlign against drkd's gathered one.

    python bench/roi_pool.py [--reps 20] [--warmup 3]

The embedded default's two-stage student (`drkd.config.presets.tiny_student_config("two_stage")`:
Faster R-CNN, ResNet-18 with a 64-channel FPN, GroupNorm box head, 128 ROIs sampled per image) on a
batch of 8 160-px images of the synthetic dataset, generated into a temporary directory; float32,
torch's default threads. Timed side by side, interleaved per repetition, medians reported:

* pooler alone: forward + backward of the box pooler on the features and proposals one training
  step gave it (captured once), with ``torchvision.ops.MultiScaleRoIAlign`` and with
  ``drkd.models.roi_align_gather.GatherMultiScaleRoIAlign``;
* training step: one ``drkd.train.engine.train_one_epoch`` iteration of the student (``distill.method:
  none``: forward, losses, backward, SGD step) with either pooler in ``roi_heads.box_roi_pool``; both
  poolers run on the same model, whose weights the steps keep updating, so neighbouring steps differ
  only by the pooler.

Run it on an otherwise idle machine for numbers worth quoting.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torchvision.ops import MultiScaleRoIAlign

from drkd.config.presets import tiny_student_config
from drkd.data.coco_dataset import collate_detection
from drkd.models.roi_align_gather import box_pooler, torchvision_box_pooler
from drkd.train.engine import train_one_epoch
from drkd.train.job import build_datasets, build_models, seed_everything

POOLERS: dict[str, Callable[[], MultiScaleRoIAlign]] = {"torchvision": torchvision_box_pooler, "gather": box_pooler}


def timed(fn: Callable[[str], object], name: str) -> float:
    start = time.perf_counter()
    fn(name)
    return 1000 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions of each measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="drkd_roi_pool_"))
    cfg = tiny_student_config("two_stage", "none", teacher_checkpoint=None, root=root)
    cfg.data.synthetic_num_train, cfg.data.synthetic_num_val = cfg.data.batch_size, 2
    data = build_datasets(cfg)
    images, targets = collate_detection([data.train[i] for i in range(cfg.data.batch_size)])
    seed_everything(0)
    model = build_models(cfg, data.num_classes)
    heads = model.student.roi_heads
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    poolers = {name: make() for name, make in POOLERS.items()}

    captured: dict[str, object] = {}

    def capture(module, inputs, output) -> None:  # the pooler's (features, proposals, image sizes)
        captured.setdefault("inputs", inputs)

    def step(name: str) -> None:
        heads.box_roi_pool = poolers[name]
        train_one_epoch(model, optimizer, scheduler, [(images, targets)], epoch=1, device=torch.device("cpu"))

    hook = poolers["torchvision"].register_forward_hook(capture)
    step("torchvision")
    hook.remove()
    feats, proposals, image_sizes = captured["inputs"]  # type: ignore[misc]
    feats = {k: v.detach().requires_grad_() for k, v in feats.items()}
    num_rois = sum(len(p) for p in proposals)

    def pool(name: str) -> None:
        out = poolers[name](feats, proposals, image_sizes)
        out.backward(torch.ones_like(out))

    times: dict[str, list[float]] = {f"{kind} {name}": [] for kind in ("pooler", "step") for name in POOLERS}
    for rep in range(args.warmup + args.reps):
        for name in POOLERS:
            t_pool, t_step = timed(pool, name), timed(step, name)
            if rep >= args.warmup:
                times[f"pooler {name}"].append(t_pool)
                times[f"step {name}"].append(t_step)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"two-stage student, batch {cfg.data.batch_size}, {num_rois} ROIs, {torch.get_num_threads()} threads; "
        f"medians of {args.reps} interleaved repetitions after {args.warmup} warm-up ones\n"
    )
    print("| what | torchvision (ms) | gather (ms) | gather / torchvision |")
    print("|---|---:|---:|---:|")
    for kind, label in (("pooler", "box pooler, forward + backward"), ("step", "training step")):
        tv, ours = med[f"{kind} torchvision"], med[f"{kind} gather"]
        print(f"| {label} | {tv:.1f} | {ours:.1f} | {ours / tv:.3f} |")


if __name__ == "__main__":
    main()
