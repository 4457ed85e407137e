"""Teacher, undistilled student and DRKD student on the embedded default, over several seeds.

    python bench/distill_gain.py [--seeds 3] [--framework one_stage] [--out runs/gain]

Runs in this process, one job after another; a finished job is skipped and an interrupted one
resumes from its checkpoint, so the script can be stopped and started again. Students are
distilled from the seed-0 teacher. Prints mean ± std mAP and wall time per role.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

from drkd.presets import tiny_student_config, tiny_teacher_config
from drkd.run_context import LocalContext
from drkd.training_job import run_training


def run(cfg, out: Path) -> tuple[dict, float]:
    ctx = LocalContext(out, resume=True)
    done = ctx.history()
    if done and done[-1]["epoch"] == cfg.train.total_epochs:
        return done[-1], sum(h["epoch_time_s"] for h in done)
    cfg.train.output_dir = str(out)
    run_training(cfg, ctx)
    history = ctx.history()
    return history[-1], sum(h["epoch_time_s"] for h in history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--framework", default="one_stage", choices=("one_stage", "two_stage"))
    parser.add_argument("--out", default="runs/gain")
    parser.add_argument("--roles", default="teacher,none,drkd", help="comma-separated subset of teacher,none,drkd")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out) / args.framework
    results: dict[str, list[tuple[dict, float]]] = {}
    teacher_ckpt = out / "teacher_s0" / "checkpoint.pt"
    for role in args.roles.split(","):
        for seed in range(args.seeds):
            if role == "teacher":
                cfg = tiny_teacher_config(args.framework, seed=seed)
            else:
                cfg = tiny_student_config(args.framework, role, teacher_checkpoint=teacher_ckpt, seed=seed)
            start = time.perf_counter()
            results.setdefault(role, []).append(run(cfg, out / f"{role}_s{seed}"))
            logging.info("%s seed %d done in %.0f s", role, seed, time.perf_counter() - start)
    print(f"\n{args.framework}: mean ± std over {args.seeds} seeds")
    print("| role | mAP | AP_S | AP_M | AP_L | epochs | wall time per run (s) |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for role, runs in results.items():
        def ms(key: str) -> str:
            vals = [m[key] for m, _ in runs]
            return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals) if len(vals) > 1 else 0:.2f}"
        wall = [t for _, t in runs]
        print(f"| {role} | {ms('mAP')} | {ms('AP_S')} | {ms('AP_M')} | {ms('AP_L')} | {runs[0][0]['epoch']} | {statistics.mean(wall):.0f} |")
        summary[role] = {"mAP": [m["mAP"] for m, _ in runs], "wall_s": wall}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
