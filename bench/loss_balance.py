"""How large each method's weighted distillation loss is against the detection loss, at the start of
training on the embedded default, and the factor that would give it DRKD's ratio.

    python bench/loss_balance.py [--framework one_stage] [--batches 4]
                                 [--teacher runs/gain/one_stage/teacher_s0/checkpoint.pt]
                                 [--backbone results/cache/backbone_resnet18/backbone.pt]

Every method is built with its default (paper) parameters, from the same seed, on the same batches,
and measured side by side. The printed scale is what a method's `embedded_weight_scale` (in its
params.py; collected by `drkd.config.presets.tiny_weight_scale`) applies to its weights on the embedded
default; rerun this when a method's loss or the tiny presets change.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from drkd.config.methods import method_names
from drkd.config.presets import tiny_student_config
from drkd.data.coco_dataset import collate_detection
from drkd.train.job import build_datasets, build_models, prepare_data, seed_everything


def measure(cfg, batches: list, num_classes: int) -> tuple[float, float]:
    """Mean detection loss and mean weighted distillation loss over `batches`, at initialisation."""
    seed_everything(cfg.train.seed)
    model = build_models(cfg, num_classes)
    model.train()
    det, distill = [], []
    with torch.no_grad():
        for images, targets in batches:
            _, terms = model(images, targets)
            det.append(float(terms["loss_det"]))
            distill.append(float(terms["loss_total"] - terms["loss_det"]))
    return statistics.mean(det), statistics.mean(distill)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--framework", default="one_stage", choices=("one_stage", "two_stage"))
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument(
        "--teacher", default=None, help="teacher checkpoint (default: runs/gain/<framework>/teacher_s0)"
    )
    parser.add_argument(
        "--backbone",
        default=None,
        help="crop-pretrained body the students start from, as the search's trials do (default: random init)",
    )
    args = parser.parse_args()
    if args.backbone and not Path(args.backbone).exists():
        parser.error(f"--backbone {args.backbone}: no such file (drkd pretrain writes it)")
    teacher = Path(args.teacher or f"runs/gain/{args.framework}/teacher_s0/checkpoint.pt")
    if not teacher.exists():
        parser.error(f"--teacher {teacher}: no such checkpoint (train it with bench/distill_gain.py --roles teacher)")
    base = tiny_student_config(args.framework, "drkd", teacher_checkpoint=teacher, backbone_checkpoint=args.backbone)
    prepare_data(base)
    data = build_datasets(base)
    loader = DataLoader(
        data.train,
        batch_size=base.data.batch_size,
        shuffle=True,
        collate_fn=collate_detection,
        generator=torch.Generator().manual_seed(0),
    )
    batches = [b for _, b in zip(range(args.batches), loader)]
    ratios = {}
    print(
        f"{args.framework}: {args.batches} batches of {base.data.batch_size}, default (paper) weights, at initialisation,"
        f" student body {args.backbone or 'random init'}"
    )
    print("| method | detection loss | weighted distillation loss | ratio | scale to DRKD's ratio |")
    print("|---|---:|---:|---:|---:|")
    for method in ("drkd", *(m for m in method_names() if m != "drkd")):
        cfg = tiny_student_config(
            args.framework, method, teacher_checkpoint=teacher, default_weights=True, backbone_checkpoint=args.backbone
        )
        det, distill = measure(cfg, batches, data.num_classes)
        ratios[method] = distill / det
        print(
            f"| {method} | {det:.3f} | {distill:.3f} | {ratios[method]:.3f} | {ratios['drkd'] / ratios[method]:.3g} |"
        )


if __name__ == "__main__":
    main()
