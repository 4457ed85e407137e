"""Does the instance-wise relation loss collapse when the teacher's embeddings train?

Optimises only L_IR (the student's feature maps stand in for the student network, plus all
trainable IR modules) on fixed random teacher features, with the teacher-side g1, g2 frozen
under each teacher-side relation filter (``teacher_filter``: shared with the student, random of
its own, none) and with them trainable, and reports how uniform the teacher's relation matrix ψ_t
becomes or how far it drifts to a fixed pattern: the mean column entropy of ψ_t over log N
(1 = uniform, 0 = one-hot), the mean diagonal mass ψ_t[j, j] (1 for ψ = I, "every instance
relates only to itself") and the hub mass max_i Σ_j ψ_t[i, j] / N (1 when every column points at
one instance). Uniform, identity and hub matrices carry (next to) nothing about the teacher's
features, and a student can match them without learning from it. "filter" is how much the
teacher-side filter changes ψ_t at the end: mean |ψ_t − ψ_t without filter| / mean ψ_t (0: the
teacher side is unfiltered, as with a frozen zero-initialised filter).

    python bench/ir_collapse.py [--steps 600] [--seeds 3] [--lr 1e-3]
"""

from __future__ import annotations

import argparse
import math

import torch

from drkd.distill.drkd.instance_relation import InstanceRelationLoss
from drkd.distill.instance_features import extract_instances, instance_counts


def random_boxes(num_images: int, per_image: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    xy = torch.rand(num_images, per_image, 2, generator=generator) * (size * 0.7)
    wh = 4 + torch.rand(num_images, per_image, 2, generator=generator) * (size * 0.3)
    return list(torch.cat([xy, xy + wh], dim=-1))


@torch.no_grad()
def teacher_stats(loss: InstanceRelationLoss, t_feat: torch.Tensor, boxes, image_shape) -> tuple[float, ...]:
    """Means over images of: H(ψ_t[:, j]) / log N over columns, ψ_t[j, j], max_i Σ_j ψ_t[i, j] / N,
    and the filter's effect mean |ψ_t − ψ_t unfiltered| / mean ψ_t."""
    rois = extract_instances(t_feat, boxes, image_shape, loss.instance_size)
    entropy, diagonal, hub, effect = [], [], [], []
    teacher = loss.teacher_relation[0]
    shared = loss.student_relation[0].filter if loss.teacher_filter == "shared" else None
    for inst in rois.split(instance_counts(boxes)):
        psi = teacher(inst, shared)
        h = -(psi * psi.clamp_min(1e-12).log()).sum(dim=0)
        entropy.append((h / math.log(inst.shape[0])).mean())
        diagonal.append(psi.diagonal().mean())
        hub.append(psi.sum(dim=1).max() / psi.shape[1])
        x = inst.flatten(1)
        unfiltered = torch.softmax(teacher.g1(x) @ teacher.g2(x).t(), dim=0)
        effect.append((psi - unfiltered).abs().mean() / psi.mean())
    return tuple(float(torch.stack(v).mean()) for v in (entropy, diagonal, hub, effect))


def run(
    teacher_trainable: bool, relation_filter: bool, teacher_filter: str, steps: int, seed: int, lr: float
) -> dict[str, float]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    images, per_image, size, stride = 4, 8, 64, 4
    d_t, d_s = 32, 16
    image_shape = (size, size)
    boxes = random_boxes(images, per_image, size, g)
    # Teacher features with structure: a few smooth random patterns, so relations are not trivial.
    t_feat = torch.nn.functional.interpolate(
        torch.randn(images, d_t, size // 16, size // 16, generator=g), size=(size // stride,) * 2, mode="bilinear"
    )
    s_feat = torch.randn(images, d_s, size // stride, size // stride, generator=g).requires_grad_(True)
    loss_fn = InstanceRelationLoss(
        d_t,
        d_s,
        levels=(0,),
        relation_filter=relation_filter,
        teacher_embed_trainable=teacher_trainable,
        teacher_filter=teacher_filter,
    )
    params = [s_feat] + [p for p in loss_fn.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    entropy_start, diagonal_start, hub_start, _ = teacher_stats(loss_fn, t_feat, boxes, image_shape)
    first = None
    for _ in range(steps):
        loss = loss_fn([t_feat], [s_feat], boxes, image_shape)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = loss_fn([t_feat], [s_feat], boxes, image_shape).item()
    entropy_end, diagonal_end, hub_end, effect_end = teacher_stats(loss_fn, t_feat, boxes, image_shape)
    return {
        "entropy_start": entropy_start,
        "entropy_end": entropy_end,
        "diagonal_start": diagonal_start,
        "diagonal_end": diagonal_end,
        "hub_start": hub_start,
        "hub_end": hub_end,
        "filter_end": effect_end,
        "loss_start": first,
        "loss_end": final,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"Adam lr={args.lr}, {args.steps} steps, mean of {args.seeds} seeds; N = 8 instances per image")
    print(f"{'teacher':>9} {'filter':>8} {'H/logN':>14} {'diag ψ_t':>14} {'hub ψ_t':>14} {'filter':>7} {'L_IR':>16}")
    settings = [(False, True, mode) for mode in ("shared", "random", "identity")]
    settings += [(False, False, "identity"), (True, True, "random"), (True, False, "identity")]
    for trainable, relation_filter, mode in settings:
        rows = [run(trainable, relation_filter, mode, args.steps, seed, args.lr) for seed in range(args.seeds)]
        m = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        print(
            f"{'trainable' if trainable else 'frozen':>9} {mode if relation_filter else 'off':>8} "
            f"{m['entropy_start']:6.3f}->{m['entropy_end']:6.3f} "
            f"{m['diagonal_start']:6.3f}->{m['diagonal_end']:6.3f} "
            f"{m['hub_start']:6.3f}->{m['hub_end']:6.3f} "
            f"{m['filter_end']:7.3f} "
            f"{m['loss_start']:7.4f}->{m['loss_end']:7.4f}"
        )


if __name__ == "__main__":
    main()
