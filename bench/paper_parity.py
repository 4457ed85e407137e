"""How strong are the paper's λ under each reduction? DRKD's three terms, side by side, at the paper's setting.

Builds one DRKD distiller (the authors' GloRe units: nodes 64, 64, 256, 256, 256; no H·W
normalisation; γ = 1) on COCO-sized FPN features (2 images of 800×1333 per GPU, 256 channels,
P3-P7, instances on P3 and P4, 7 GT boxes per image), copies it into a second one that differs
only in `reduction`, and prints each term in both modes, the factor between them beside the one
the reductions predict (PR: levels·√images; IR: levels·images; INS: levels·images·√boxes), and
the authors' reduction recomputed with torch.dist from the same modules (PR and INS; their code
pools every image's boxes from image 0, which neither side copies). The row ``loss_ir[z]`` is L_IR
with ``ir_target: features`` (the authors' target: their non-local block's output, their random
mask seeded alike on both sides), beside the same recomputation. Features are random: the factors depend on the reductions, not on what the features hold.

    python bench/paper_parity.py [--images 2] [--height 800] [--width 1333] [--boxes 7] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from drkd.distill.drkd.distiller import DRKDDistiller
from drkd.distill.drkd.instance_relation import InstanceRelationLoss
from drkd.distill.instance_features import extract_instances

STRIDES = (8, 16, 32, 64, 128)  # one-stage P3-P7
INSTANCE_LEVELS = (0, 1)
AUTHORS_GLORE = {"glore_nodes": (64, 64, 256, 256, 256), "glore_normalize": False, "glore_zero_init": False}


def features(images: int, height: int, width: int, channels: int, g: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(images, channels, math.ceil(height / s), math.ceil(width / s), generator=g) for s in STRIDES]


def gt_boxes(images: int, per_image: int, height: int, width: int, g: torch.Generator) -> list[torch.Tensor]:
    """COCO-like boxes: sides from 16 to 400 px, inside the image."""
    out = []
    for _ in range(images):
        wh = 16 + torch.rand(per_image, 2, generator=g) * 384
        xy = torch.rand(per_image, 2, generator=g) * (torch.tensor([width, height]) - wh)
        out.append(torch.cat([xy, xy + wh], dim=1))
    return out


@torch.no_grad()
def authors_reference(d: DRKDDistiller, t: list[torch.Tensor], s: list[torch.Tensor], boxes, shape) -> dict:
    """The authors' forward_train formulas on the same modules: Σ_levels torch.dist for PR; Σ over
    levels and images of torch.dist over an image's ROI features for INS."""
    pr = sum(
        torch.dist(d.pr.adapters.adapters[i](d.pr.student_relation[i](s[i])), d.pr.teacher_relation[i](t[i]), p=2)
        for i in range(len(STRIDES))
    )
    ins = 0.0
    for index, level in enumerate(INSTANCE_LEVELS):
        for b, image_boxes in enumerate(boxes):
            s_roi = extract_instances(s[level][b : b + 1], [image_boxes], shape, 3, **d.ins.roi)
            t_roi = extract_instances(t[level][b : b + 1], [image_boxes], shape, 3, **d.ins.roi)
            ins = ins + torch.dist(d.ins.adapters[index](s_roi), t_roi, p=2)
    return {"loss_pr": float(pr), "loss_ins": float(ins)}


def authors_ir_reference(ir: InstanceRelationLoss, t: list[torch.Tensor], s: list[torch.Tensor], boxes, shape) -> float:
    """Σ over levels and images of torch.dist(conv1×1(z_s), z_t), the authors' order of mask draws."""
    total = 0.0
    for index, level in enumerate(ir.levels):
        for b, image_boxes in enumerate(boxes):
            s_roi = extract_instances(s[level][b : b + 1], [image_boxes], shape, ir.instance_size, **ir.roi)
            t_roi = extract_instances(t[level][b : b + 1], [image_boxes], shape, ir.instance_size, **ir.roi)
            z_s, _ = ir.student_relation[index](s_roi)
            z_t, _ = ir.teacher_relation[index](t_roi)
            total = total + torch.dist(ir.adapters[index](z_s), z_t, p=2)
    return float(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2, help="images per GPU (the paper: 2)")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--boxes", type=int, default=7, help="GT boxes per image (COCO train2017: about 7.3)")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    shape = (args.height, args.width)
    t = features(args.images, *shape, args.channels, g)
    s = features(args.images, *shape, args.channels, g)
    boxes = gt_boxes(args.images, args.boxes, *shape, g)
    built = {}
    for reduction in ("mean", "authors"):
        d = DRKDDistiller(
            args.channels,
            args.channels,
            len(STRIDES),
            instance_levels=INSTANCE_LEVELS,
            reduction=reduction,
            **AUTHORS_GLORE,
        )  # train mode, as in training: GloRe's BatchNorm uses the batch statistics
        if built:
            d.load_state_dict(built["mean"].state_dict())
        built[reduction] = d
    with torch.no_grad():
        values = {r: {k: float(v) for k, v in d(t, s, boxes, shape).items()} for r, d in built.items()}
    reference = authors_reference(built["authors"], t, s, boxes, shape)
    ir_z = {}
    for reduction in ("mean", "authors"):
        ir_z[reduction] = InstanceRelationLoss(
            args.channels, args.channels, levels=INSTANCE_LEVELS, target="features", reduction=reduction
        )
        if reduction == "authors":
            ir_z["authors"].load_state_dict(ir_z["mean"].state_dict())
    with torch.no_grad():
        for reduction, loss in ir_z.items():
            torch.manual_seed(args.seed + 1)  # the same random masks in every computation
            values[reduction]["loss_ir[z]"] = float(loss(t, s, boxes, shape))
        torch.manual_seed(args.seed + 1)
        reference["loss_ir[z]"] = authors_ir_reference(ir_z["authors"], t, s, boxes, shape)

    levels, images = len(STRIDES), args.images
    predicted = {
        "loss_pr": levels * math.sqrt(images),
        "loss_ir": len(INSTANCE_LEVELS) * images,
        "loss_ins": len(INSTANCE_LEVELS) * images * math.sqrt(args.boxes),
        "loss_ir[z]": len(INSTANCE_LEVELS) * images,
    }
    print(
        f"{images} images of {args.height}x{args.width}, {args.channels} channels, P3-P7, {args.boxes} boxes "
        f"per image on P3-P4, seed {args.seed}; modules in train mode"
    )
    print(f"{'term':9} {'mean':>12} {'authors':>12} {'authors/mean':>13} {'predicted':>10} {'authors red.':>13}")
    for key in ("loss_pr", "loss_ir", "loss_ins", "loss_ir[z]"):
        mean, authors = values["mean"][key], values["authors"][key]
        ref = f"{reference[key]:13.6g}" if key in reference else f"{'(ψ: theirs is z)':>13}"
        print(f"{key:9} {mean:12.6g} {authors:12.6g} {authors / mean:13.3f} {predicted[key]:10.3f} {ref}")
    print("Under `reduction: mean` the paper's λ1, λ2, λ3 act 1/(authors/mean) as strongly as in the authors' code.")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
