"""Teacher, undistilled student and distilled students on the embedded default, over several seeds.

    python bench/distill_gain.py [--seeds 3] [--framework one_stage] [--out runs/gain]
                                 [--roles teacher,none,fitnet,nld,mkd,drkd] [--jobs 2] [--default-weights]
                                 [--random-init] [--epochs N] [--train-images N] [--best-config FILE]
                                 [--val-images N]

A role is `teacher` or a distillation method (`none` is the undistilled student). Every student
trains for the same epochs from the seed-0 teacher, with the embedded default's settings
(`drkd.config.presets.tiny_student_config`: paper parameters, peers' weights scaled by tiny_weight_scale()).
Runs `--jobs` trainings at a time, each in its own process on cores / jobs threads; a finished run
is skipped and an interrupted one resumes from its checkpoint, so the script can be stopped and
started again. `--default-weights` trains the peers at their published weights instead (run
directories and summary keys `<role>-paper`). A finished run is reused whatever settings made it: after changing the presets,
pass a new `--out`. The teacher and every student start from the embedded default's ResNet-18
pretrained once on the dataset's object crops (`drkd.train.default_teacher.ensure_default_backbone`,
cached in `<results>/cache/backbone_resnet18/`), as COCO runs start from ImageNet's;
`--random-init` starts them from random initialisation instead (the embedded default before it had
the pretrained backbone). `--epochs` and
`--train-images` set the students' `train.epochs` and `data.train_limit` (default: the preset's
12 epochs on all 400 images, which is also the default search's budget since 2026-12-07; it was
`--epochs 6 --train-images 200`); the teacher keeps its own. `--best-config FILE` (a
`best_config.yaml` that `sweeps/lambda_search.py` wrote) adds the role `best`: the student with
that file's `distill` section and everything else as the other roles have it, so that it and `drkd`
(the paper's λ) differ only in what the search chose. Prints mean ± std of the COCO metrics and
wall time per role, each distilled role's Δ against `none` (and `best`'s against `drkd`) with its
95 % interval paired by seed, and merges them into `<out>/<framework>/summary.json`. `--val-images N`
then evaluates every student's last checkpoint once more on N validation images of the same generator
(`data/synthetic_val<N>`, generated once, its first 100 the default split's; 22 s per checkpoint
for N = 1000 on 2 cores) and prints the same tables for them: how much of the spread is the
100-image validation set's.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from drkd.analysis.paper_tables.difference import delta_interval
from drkd.config import ConfigError, load_config
from drkd.config.methods import DEFAULT_METHOD, method_names
from drkd.config.presets import DEFAULT_DATA_ROOT, tiny_student_config, tiny_teacher_config, tiny_weight_scale
from drkd.config.schema import validate
from drkd.config.storage import default_results_dir
from drkd.train.checkpoint_eval import evaluate_checkpoint
from drkd.train.default_teacher import ensure_default_backbone
from drkd.train.job import run_training
from drkd.train.run_context import LocalContext

BEST = "best"  # the student with a search's best distill section (--best-config)
ROLES = ("teacher", *method_names(with_none=True), BEST)
PEERS = tuple(tiny_weight_scale())
METRICS = ("mAP", "AP_S", "AP_M", "AP_L")


@dataclass(frozen=True)
class Budget:
    """What every run of this invocation shares beside its role and seed."""

    default_weights: bool = False
    backbone: str | None = None  # crop-pretrained body for teacher and students
    epochs: int | None = None  # students' train.epochs; None: the preset's
    train_images: int | None = None  # students' data.train_limit; None: all
    best_config: str | None = None  # role `best`: the distill section of this config file


def _config(framework: str, role: str, seed: int, teacher_ckpt: Path, budget: Budget):
    if role == "teacher":
        return tiny_teacher_config(framework, seed=seed, backbone_checkpoint=budget.backbone)
    cfg = tiny_student_config(
        framework,
        DEFAULT_METHOD if role == BEST else role,
        teacher_checkpoint=teacher_ckpt,
        seed=seed,
        default_weights=budget.default_weights,
        backbone_checkpoint=budget.backbone,
    )
    if role == BEST:
        assert budget.best_config is not None
        cfg.distill = load_config(budget.best_config).distill
    cfg.train.epochs = budget.epochs or cfg.train.epochs
    cfg.data.train_limit = budget.train_images or cfg.data.train_limit
    return validate(cfg)


def _key(role: str, default_weights: bool) -> str:
    """Run directory prefix and summary key: peers at published weights are `<role>-paper`."""
    return f"{role}-paper" if default_weights and role in PEERS else role


def run(framework: str, role: str, seed: int, out: Path, threads: int, budget: Budget) -> tuple[dict, float]:
    """Train (or resume, or skip) one role/seed; its last-epoch metrics and summed epoch time."""
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cfg = _config(framework, role, seed, out / "teacher_s0" / "checkpoint.pt", budget)
    run_dir = out / f"{_key(role, budget.default_weights)}_s{seed}"
    ctx = LocalContext(run_dir, resume=True)
    done = ctx.history()
    if not (done and done[-1]["epoch"] == cfg.train.total_epochs):
        cfg.train.output_dir = str(run_dir)
        start = time.perf_counter()
        run_training(cfg, ctx)
        logging.info("%s seed %d done in %.0f s", role, seed, time.perf_counter() - start)
        done = ctx.history()
    return done[-1], sum(h["epoch_time_s"] for h in done)


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0:.2f}"


def _print_effects(runs: dict[str, list[tuple[int, float]]], reference: str = "none") -> None:
    """Each other student role's mAP gain over ``reference`` with its 95 % interval (paired by seed
    where the seeds pair), against the seed-to-seed spread: the signal-to-noise the miniature issue
    asks for. ``runs``: role -> [(seed, mAP)]."""
    base = runs.get(reference)
    if not base or len(base) < 2:
        return
    base_std = statistics.stdev(v for _, v in base)
    print(
        f"\n| role | Δ mAP vs {reference} [95 % interval] | std {reference}, role | Δ / larger std | std / mean (role) |"
    )
    print("|---|---|---|---:|---:|")
    for role, own in runs.items():
        if role in (reference, "teacher") or len(own) < 2:
            continue
        values = [v for _, v in own]
        gap = statistics.mean(values) - statistics.mean(v for _, v in base)
        ci = delta_interval(own, base)
        std = statistics.stdev(values)
        print(
            f"| {role} | {gap:+.2f} [{ci.lo:+.2f}, {ci.hi:+.2f}{' paired' if ci.paired else ''}] | "
            f"{base_std:.2f}, {std:.2f} | {abs(gap) / max(base_std, std, 1e-9):.1f} | "
            f"{100 * std / max(statistics.mean(values), 1e-9):.0f} % |"
        )


def _reevaluate(out: Path, seeds: dict[str, list[int]], val_images: int) -> dict[str, list[tuple[int, float]]]:
    """Each student run's last checkpoint evaluated on ``val_images`` validation images of the same
    generator (``<DEFAULT_DATA_ROOT>_val<N>``, generated once; its first 100 are the default split),
    cached in ``<run>/eval_val<N>.json``. ``seeds``: run key -> seeds; returns key -> [(seed, mAP)]."""
    overrides = {"data.root": f"{DEFAULT_DATA_ROOT}_val{val_images}", "data.synthetic_num_val": val_images}
    per_seed: dict[str, list[tuple[int, float]]] = {}
    for key, own in seeds.items():
        if key == "teacher":
            continue
        for seed in own:
            run_dir = out / f"{key}_s{seed}"
            cached = run_dir / f"eval_val{val_images}.json"
            if cached.exists():
                metrics = json.loads(cached.read_text())
            else:
                metrics = evaluate_checkpoint(run_dir / "checkpoint.pt", overrides=overrides)
                cached.write_text(json.dumps(metrics, sort_keys=True))
                logging.info("%s seed %d on %d validation images: mAP %.2f", key, seed, val_images, metrics["mAP"])
            per_seed.setdefault(key, []).append((seed, metrics["mAP"]))
    return per_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--framework", default="one_stage", choices=("one_stage", "two_stage"))
    parser.add_argument("--out", default="runs/gain")
    parser.add_argument("--roles", default="teacher,none,drkd", help=f"comma-separated subset of {','.join(ROLES)}")
    parser.add_argument("--jobs", type=int, default=1, help="trainings run at once (processes)")
    parser.add_argument(
        "--default-weights", action="store_true", help="peers at their published weights (no weight_scale)"
    )
    parser.add_argument(
        "--random-init", action="store_true", help="teacher and students from random init, not the crop-pretrained body"
    )
    parser.add_argument("--epochs", type=int, help="students' train.epochs (default: the preset's 12)")
    parser.add_argument("--train-images", type=int, help="students' data.train_limit (default: all 400)")
    parser.add_argument(
        "--val-images",
        type=int,
        help="also evaluate every student's last checkpoint on this many validation images (evaluation noise)",
    )
    parser.add_argument("--best-config", help=f"role {BEST!r}: the distill section of this config (a best_config.yaml)")
    args = parser.parse_args()
    roles = args.roles.split(",")
    for role in roles:
        if role not in ROLES:
            parser.error(f"--roles: unknown role {role!r} (known: {', '.join(ROLES)})")
    if (BEST in roles) != bool(args.best_config):
        parser.error(f"--best-config FILE and the role {BEST!r} go together")
    if args.best_config:
        try:
            load_config(args.best_config)
        except (ConfigError, OSError) as err:
            parser.error(f"--best-config: {err}")
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    if args.val_images is not None and args.val_images < 2:
        parser.error(f"--val-images {args.val_images}: must be at least 2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out) / args.framework
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    backbone = None if args.random_init else str(ensure_default_backbone(default_results_dir()))
    budget = Budget(args.default_weights, backbone, args.epochs, args.train_images, args.best_config)
    jobs = [(role, seed) for role in roles for seed in range(args.seeds)]
    results: dict[str, list[tuple[dict, float]]] = {}
    seeds: dict[str, list[int]] = {}
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        # Students need the seed-0 teacher: train it first if it is missing.
        if any(role != "teacher" for role, _ in jobs) and not (out / "teacher_s0" / "checkpoint.pt").exists():
            pool.submit(run, args.framework, "teacher", 0, out, threads, budget).result()
        futures = {job: pool.submit(run, args.framework, *job, out, threads, budget) for job in jobs}
        failed: dict[str, list[str]] = {}
        for (role, seed), future in futures.items():
            try:
                outcome = future.result()
            except Exception as err:  # e.g. a diverged run (NonFiniteLossError): report it, keep the rest
                logging.error("%s seed %d failed: %s", role, seed, err)
                failed.setdefault(_key(role, args.default_weights), []).append(f"seed {seed}: {err}")
            else:
                results.setdefault(_key(role, args.default_weights), []).append(outcome)
                seeds.setdefault(_key(role, args.default_weights), []).append(seed)

    print(f"\n{args.framework}: mean ± std over {args.seeds} seeds")
    print("| role | " + " | ".join(METRICS) + " | epochs | wall time per run (s) |")
    print("|---|" + "---|" * len(METRICS) + "---|---|")
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for role, runs in results.items():
        cells = " | ".join(_mean_std([m[k] for m, _ in runs]) for k in METRICS)
        wall = [t for _, t in runs]
        print(f"| {role} | {cells} | {runs[0][0]['epoch']} | {statistics.mean(wall):.0f} |")
        summary[role] = {**{k: [m[k] for m, _ in runs] for k in METRICS}, "wall_s": wall}
    for role, errors in failed.items():
        print(f"| {role} | failed: {'; '.join(errors)} |")
        summary.setdefault(role, {})["failed"] = errors
    per_seed = {role: list(zip(seeds[role], (m["mAP"] for m, _ in runs))) for role, runs in results.items()}
    _print_effects(per_seed)
    if BEST in per_seed and DEFAULT_METHOD in per_seed:  # what the search chose against the paper's λ
        _print_effects({r: per_seed[r] for r in (DEFAULT_METHOD, BEST)}, reference=DEFAULT_METHOD)
    if args.val_images:
        wide = _reevaluate(out, seeds, args.val_images)
        print(f"\nthe same last checkpoints on {args.val_images} validation images:")
        print("| role | mAP per seed | mAP |\n|---|---|---|")
        for role, own in wide.items():
            print(f"| {role} | {', '.join(f'{v:.2f}' for _, v in own)} | {_mean_std([v for _, v in own])} |")
            summary[role][f"mAP_val{args.val_images}"] = [v for _, v in own]
        _print_effects(wide)
    summary_path.write_text(json.dumps(summary, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
