"""Does the teacher-side pixel relation module erode its own target?

The teacher-side GloRe φ_t of L_PR is trained by L_PR alone (as in the authors' code), so the
optimiser may move the target φ_t(t) towards what the student already produces instead of moving
the student. Two measurements:

* synthetic (default): L_PR alone, Adam, on fixed random teacher features and trainable student
  feature maps *unrelated* to them, with φ_t trainable (``pr_teacher: trainable``) and frozen
  (``pr_teacher: frozen``, γ = 1). Prints the loss, std(φ_t(t)) and the relative change
  ||φ_t(t) − φ_t⁰(t)|| / ||φ_t⁰(t)|| of the target from its initial value.
* ``--run DIR`` (repeatable): a finished DRKD training run (a ``checkpoint.pt`` of
  ``bench/distill_gain.py`` or ``drkd train``). On validation images, per FPN level, std(t) and
  std(φ_t(t)) with the trained teacher-side unit, and ||φ_t(t) − t|| / ||t||: a zero-γ unit starts
  as the identity, so that is how far training moved the target.

    python bench/pr_erosion.py [--steps 300] [--seeds 3] [--run runs/gain/one_stage/drkd_s0 ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from drkd.distill.drkd.pixel_relation import PixelRelationLoss


def synthetic(teacher_module: str, steps: int, seed: int, lr: float) -> dict[str, float]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    channels, size, batch = 32, 16, 4
    t = torch.nn.functional.interpolate(torch.randn(batch, channels, 4, 4, generator=g), size=(size, size)) * 2
    s = torch.randn(batch, channels, size, size, generator=g).requires_grad_(True)
    loss_fn = PixelRelationLoss(channels, channels, 1, teacher_module=teacher_module, glore_zero_init=True)
    params = [s] + [p for p in loss_fn.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    with torch.no_grad():
        target_start = loss_fn.teacher_relation[0](t).clone()
    first = None
    for _ in range(steps):
        loss = loss_fn([t], [s])
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        target_end = loss_fn.teacher_relation[0](t)
        final = loss_fn([t], [s]).item()
    return {
        "loss_start": first,
        "loss_end": final,
        "std_start": target_start.std().item(),
        "std_end": target_end.std().item(),
        "moved": ((target_end - target_start).norm() / target_start.norm()).item(),
    }


@torch.no_grad()
def real_run(run_dir: Path, batches: int) -> list[dict[str, float]]:
    """Per FPN level, over ``batches`` validation batches: std(t), std(φ_t(t)) and ||φ_t(t) − t|| / ||t||."""
    from drkd.config import config_from_dict
    from drkd.models.feature_taps import teacher_features
    from drkd.train.job import build_datasets, build_models, validation_loader

    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    cfg = config_from_dict(state["config"], str(run_dir / "checkpoint.pt"))
    model = build_models(cfg, state["num_classes"])
    model.distiller.load_state_dict(state["distiller"])
    pr = model.distiller.pr
    if pr is None:
        raise SystemExit(f"{run_dir}: the run has no L_PR term")
    pr.train()  # the target as L_PR sees it: BatchNorm on batch statistics
    loader, _ = validation_loader(build_datasets(cfg).val, cfg)
    sums: list[dict[str, float]] = []
    for index, (images, _) in enumerate(loader):
        if index == batches:
            break
        tensors = model.student.transform(list(images))[0].tensors
        for level, t in enumerate(teacher_features(model.teacher, tensors)):
            phi = pr.teacher_relation[level](t)
            row = {"std_t": t.std().item(), "std_phi": phi.std().item(), "moved": ((phi - t).norm() / t.norm()).item()}
            if len(sums) <= level:
                sums.append(dict.fromkeys(row, 0.0))
            for key, value in row.items():
                sums[level][key] += value / batches
    return sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--run", type=Path, action="append", default=[], help="a finished DRKD run directory")
    parser.add_argument("--batches", type=int, default=4, help="validation batches per --run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"synthetic: L_PR alone, Adam lr={args.lr}, {args.steps} steps, mean of {args.seeds} seeds")
    print(f"{'φ_t':>10} {'L_PR':>18} {'std φ_t(t)':>16} {'target moved':>13}")
    for mode in ("trainable", "frozen"):
        rows = [synthetic(mode, args.steps, seed, args.lr) for seed in range(args.seeds)]
        m = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        print(
            f"{mode:>10} {m['loss_start']:8.2f}->{m['loss_end']:7.2f} "
            f"{m['std_start']:6.3f}->{m['std_end']:6.3f} {m['moved']:13.3f}"
        )
    for run_dir in args.run:
        print(f"\n{run_dir}: per FPN level, mean over {args.batches} validation batches")
        print(f"{'level':>5} {'std t':>8} {'std φ_t(t)':>11} {'||φ_t(t) − t|| / ||t||':>24}")
        for level, row in enumerate(real_run(run_dir, args.batches)):
            print(f"{level:>5} {row['std_t']:8.3f} {row['std_phi']:11.3f} {row['moved']:24.3f}")


if __name__ == "__main__":
    main()
