"""What `python sweeps/lambda_search.py` and `python sweeps/ablations.py` do (the scripts stay thin)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drkd.analysis.paper_tables import GRIDS, NEEDS_TEACHER, SEARCH_KIND, TEACHER_GRID
from drkd.analysis.paper_tables.cells import (
    frameworks_used,
    only_frameworks,
    only_methods,
    only_schedules,
    only_terms,
    with_seeds,
)
from drkd.analysis.rank_agreement import rank_agreement
from drkd.config import Config, ConfigError
from drkd.config.methods import DEFAULT_METHOD, method_names, method_spec
from drkd.config.presets import FRAMEWORK_ARCH, STUDENT_EPOCHS_1X, tiny_student_config
from drkd.config.storage import absolute_location, default_results_dir
from drkd.config.sweep_settings import SweepSettings, load_sweep_config
from drkd.config.trial_labels import CELL_KEY, ROLE_KEY, STUDENT
from drkd.sweeps.optuna_searcher import startup_trials
from drkd.sweeps.smoke_test import SMOKE_DIR, smoke_sizes, smoke_test
from drkd.sweeps.teacher_handoff import publish_teachers, published_teacher, with_published_teacher
from drkd.sweeps.tuner import (
    SweepPlan,
    epoch_histories,
    init_ray,
    results_root,
    run_sweep,
    seconds_to_first_iteration,
    startup_overhead,
    write_best_config,
)
from drkd.train.lr_schedule import milestones

log = logging.getLogger("drkd.sweeps")

# The embedded default's search: 8 trials, each the embedded default student's own 1x schedule
# (STUDENT_EPOCHS_1X = 12 epochs on all 400 training images, 600 optimiser steps of 8), 2 DDP workers
# each. Measured with bench/distill_gain.py, 5 seeds (README "Distillation on the embedded default"):
# DRKD at the paper's lambda gains 3.3x the seed-to-seed std of either side over no distillation at
# this budget, 2.1x at 6 epochs on 400 images and 1.0-1.5x at the earlier 6 epochs on 200, where the
# search ranked its trials by noise. The budget is what that signal costs (the miniature issue ranks
# it above the 15-minute first run).
DEFAULT_SEARCH_EPOCHS = STUDENT_EPOCHS_1X
# ASHA's first cut: the last epoch before the schedule's first decay (epoch 8 of 12). On the earlier
# 6-epoch budget bench/grace_rank.py measured that epoch (4 of 6) on two sets of 12 random trials:
# it ranked them as the last epoch did (Spearman rho +0.76 and +0.90, 95 % intervals above 0) where
# the epochs before it did not. At 12 epochs (2026-12-07, bench/grace_rank.py --experiment): rho
# between epochs 8 and 12 +0.93 over the default search's 7 uncut trials, +0.90 over the 9 trials of
# bench/search_efficiency.py's uncut lambda grid; no 12-trial random sample yet.
DEFAULT_SEARCH_GRACE = milestones(DEFAULT_SEARCH_EPOCHS)[0]


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="sweep config file (training sections + `sweep:`); default: the embedded default"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted sweep (finished trials are kept)"
    )
    parser.add_argument("--name", help="experiment name (default: from the config, else the sweep kind)")
    parser.add_argument(
        "--storage-path",
        help="results root: a directory, shared mount or s3:// URI (default: $DRKD_RESULTS or ./results)",
    )
    parser.add_argument("--workers", type=int, help="DDP workers per trial (overrides sweep.workers_per_trial)")
    parser.add_argument(
        "--train-images",
        type=int,
        help="train on the first N training images (overrides data.train_limit; default: all)",
    )
    parser.add_argument(
        "--smoke-test",
        action="store_true",
        help="the same config with only its sizes cut (images, image size, epochs, trials, workers), results "
        "under <storage>/smoke_test: checks a setup in minutes before the real launch (printed at the start)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, and every Ray worker's output (pycocotools, Ray Train's reports) on this terminal; "
        "default: the live table, one line per trial per epoch and the summary, the rest in Ray's log files",
    )


def _settings(args: argparse.Namespace, settings: SweepSettings, **more: Any) -> SweepSettings:
    for key, value in {
        "name": args.name,
        "storage_path": args.storage_path,
        "workers_per_trial": args.workers,
        **more,
    }.items():
        if value is not None:
            setattr(settings, key, value)
    return settings.validate("command line")


def _training_overrides(args: argparse.Namespace, base: Config) -> Config:
    """The command line's changes to the training sections (``--train-images``), validated."""
    if args.train_images is not None:
        if args.train_images <= 0:
            raise ConfigError(f"--train-images {args.train_images}: must be a positive number of images")
        base.data.train_limit = args.train_images
    return base


def _embedded_total_batch(base: Config, settings: SweepSettings) -> None:
    """Split the embedded default's batch over a trial's DDP workers, so that a trial takes the
    optimiser steps `drkd train` and ``bench/distill_gain.py`` take (``data.batch_size`` images per
    step in all, the same lr by the linear scaling rule) rather than half as many steps of twice
    the batch at twice the lr; the miniature's mAP after a few hundred steps depends on their number.

    Raises:
        ConfigError: the workers (``--workers``, ``sweep.workers_per_trial``) do not divide the batch.
    """
    total, workers = base.data.batch_size, settings.workers_per_trial
    if total % workers:
        raise ConfigError(
            f"--workers {workers}: the embedded default trains on {total} images per optimiser step, split "
            f"evenly over a trial's DDP workers; use a divisor of {total}"
        )
    base.data.batch_size = total // workers


def _maybe_smoke_test(args: argparse.Namespace, base: Config, settings: SweepSettings) -> tuple[Config, SweepSettings]:
    """``--smoke-test``: the cut-down config (:func:`~drkd.sweeps.smoke_test.smoke_test`), its changes printed."""
    if not args.smoke_test:
        return base, settings
    import ray

    init_ray(settings, args.verbose)  # the GPUs the cluster has decide whether the smoke test trains on them
    resources = ray.cluster_resources()
    base, settings, changes = smoke_test(
        base, settings, results_root(settings), resources.get("GPU", 0), resources.get("CPU", 0)
    )
    print("smoke test: the config with these sizes changed, nothing else:")
    for line in changes:
        print(f"  {line}")
    return base, settings


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return args


def _base_and_settings(
    args: argparse.Namespace, embedded_default: Callable[[], tuple[Config, SweepSettings]]
) -> tuple[Config, SweepSettings]:
    """The sweep config file's training sections and `sweep:` section, or the embedded default."""
    return load_sweep_config(args.config) if args.config else embedded_default()


def _default_search() -> tuple[Config, SweepSettings]:
    """The embedded default's search: the tiny DRKD student on its 1x schedule (its teacher, the
    cached default teacher, and its crop-pretrained backbone are set once the smoke test, if any,
    has cut the sizes)."""
    base = tiny_student_config("one_stage")
    base.train.epochs = DEFAULT_SEARCH_EPOCHS
    return base, SweepSettings(grace_period=DEFAULT_SEARCH_GRACE)


def _embedded_cache(smoke: bool) -> tuple[Path, Callable[[Config], object] | None]:
    """Where the embedded default's backbone and teachers are cached, and the size cut they are
    trained with: the results root as shipped, or ``<results>/smoke_test`` with the smoke test's sizes."""
    return (default_results_dir() / SMOKE_DIR, smoke_sizes) if smoke else (default_results_dir(), None)


def _default_teachers(frameworks: set[str], smoke: bool) -> dict[str, str]:
    """The embedded default's teachers, trained once and cached; under ``--smoke-test`` with the
    smoke test's sizes, cached apart (``<results>/smoke_test``), so a smoke test takes minutes."""
    from drkd.train.default_teacher import ensure_default_teacher

    root, cut = _embedded_cache(smoke)
    return {f: str(ensure_default_teacher(root, f, cut=cut)) for f in sorted(frameworks)}


def _default_backbone(smoke: bool) -> str:
    """The embedded default's crop-pretrained ResNet-18, which its students start from (cached as
    the teachers are, apart under ``--smoke-test``)."""
    from drkd.train.default_teacher import ensure_default_backbone

    return str(ensure_default_backbone(*_embedded_cache(smoke)))


def _use_embedded_teacher_and_backbone(base: Config, smoke: bool) -> None:
    """Point the embedded default search's teacher and student backbone at the cached ones
    (trained first where they are not cached)."""
    assert base.teacher is not None
    base.teacher.checkpoint = _default_teachers({"one_stage"}, smoke)["one_stage"]
    base.student.backbone_checkpoint = _default_backbone(smoke)


def embedded_search_base(name: str) -> tuple[Config, SweepSettings]:
    """The base config and settings `python sweeps/lambda_search.py` (no flags) trains every trial
    from: the tiny DRKD student on the search's images and epochs, its batch split over the
    trial's workers, the cached teacher and crop-pretrained backbone; experiment ``name``."""
    base, settings = _default_search()
    settings.name = name
    _embedded_total_batch(base, settings)
    _use_embedded_teacher_and_backbone(base, smoke=False)
    base.distill.method = DEFAULT_METHOD
    return base, settings


def lambda_search(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lambda_search.py",
        description="Optuna TPE search (Ray Tune, ASHA early stopping on mAP) over a distillation method's "
        "weights and switches; each trial is a Ray Train DDP job. Prints the best configuration and "
        "writes it as a config file for `drkd train`.",
    )
    _common_args(parser)
    parser.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        choices=method_names(),
        help=f"whose space to search (default: {DEFAULT_METHOD})",
    )
    parser.add_argument("--num-trials", type=int, help="overrides sweep.num_trials")
    parser.add_argument(
        "--grace-period",
        type=int,
        help="overrides sweep.grace_period (ASHA's first cut, in epochs); train.epochs: no trial is stopped early",
    )
    parser.add_argument(
        "--random-trials",
        type=int,
        help="overrides sweep.random_trials (TPE's random start); --num-trials: a purely random search",
    )
    parser.add_argument(
        "--search-seed",
        type=int,
        help="overrides sweep.seed (the Optuna sampler's seed: which configurations are drawn; "
        "training's own seed is train.seed)",
    )
    args = _parse(parser, argv)
    try:
        base, settings = _base_and_settings(args, _default_search)
        settings = _settings(
            args,
            settings,
            num_trials=args.num_trials,
            grace_period=args.grace_period,
            random_trials=args.random_trials,
            seed=args.search_seed,
            name=args.name or settings.name or f"lambda_search_{args.method}",
        )
        if not args.config:
            _embedded_total_batch(base, settings)
        base, settings = _maybe_smoke_test(args, _training_overrides(args, base), settings)
        if not args.config:
            _use_embedded_teacher_and_backbone(base, args.smoke_test)
        base.distill.method = args.method
        base = with_published_teacher(base, results_root(settings), SEARCH_KIND)
        plan = SweepPlan(SEARCH_KIND, base, settings, space=_space(args.method, base))
        start = time.perf_counter()
        results = run_sweep(plan, resume=args.resume, verbose=args.verbose)
        wall = time.perf_counter() - start
        best, path = write_best_config(plan, results)
    except ConfigError as err:
        print(f"lambda_search.py: error: {err}", file=sys.stderr)
        return 2
    params = {k: v for k, v in best["config"].items() if k.startswith("distill.") and v is not None}
    print(
        f"\nbest trial: mAP {best['mAP']:.2f} (AP_S {best['AP_S']:.2f}, AP_M {best['AP_M']:.2f}, AP_L {best['AP_L']:.2f}) at epoch {best['epoch']}"
    )
    for key in sorted(params):
        print(f"  {key} = {params[key]}")
    print(f"best config: {path}  (train it with: drkd train --config {path})")
    print(f"experiment: {plan.path}  (tables: python analysis/make_tables.py {plan.path})")
    if plan.is_search:
        random_start = startup_trials(settings.num_trials, settings.random_trials)
        # TPE samples at random until random_start trials have finished: with c trials running at
        # once, up to c - 1 more start before that
        at_most = min(len(results), random_start + settings.max_concurrent_trials - 1)
        print(
            f"Optuna: TPE sampled at random until {random_start} trials had finished (sweep.random_trials): "
            f"{min(len(results), random_start)} to {at_most} of the {len(results)} trials were random, the rest TPE's"
        )
        _print_rank_agreement(results, min(settings.grace_period, base.train.total_epochs), base.train.total_epochs)
    startups = seconds_to_first_iteration(results)
    if startups:
        print(
            "seconds to the first training iteration, per trial: "
            + ", ".join(f"{trial} {seconds:.0f}" for trial, seconds in sorted(startups.items()))
        )
    overhead, total = startup_overhead(results)
    if total:
        print(
            f"search wall time {wall:.0f} s; trials ran {total:.0f} s, of which {overhead:.0f} s ({100 * overhead / total:.0f}%) "
            "went to starting the Ray Train jobs and reporting rather than epochs"
        )
    return 0


def _print_rank_agreement(results: Any, grace: int, final: int) -> None:
    """How well the grace epoch, where ASHA first cuts, predicts the final ranking in this search."""
    if grace >= final:
        print(
            f"ASHA stopped no trial early: sweep.grace_period ({grace}) is the last epoch "
            "(bench/grace_rank.py measures which epoch, if any, ranks the trials as the last one does)"
        )
        return
    rho, n = rank_agreement(epoch_histories(results), grace, final)
    if rho is None:
        print(
            f"rank agreement of epoch {grace} (sweep.grace_period) with epoch {final}: not measurable here, {n} trial(s) "
            "ran all epochs (3 or more with different mAP are needed; ASHA stopped the rest)"
        )
        return
    print(
        f"rank agreement of epoch {grace} (sweep.grace_period) with epoch {final}, over the {n} trials that ran all "
        f"epochs: Spearman rho = {rho:+.2f} (1: the grace epoch ranks them as the last one does; near 0: ASHA's cut is noise)"
    )


@dataclass
class SearchSpace:
    """A method's define-by-run space plus the constants recorded with every trial (picklable, as
    Tune checkpoints the searcher)."""

    method: str
    two_stage: bool
    epochs: int
    arch: str

    columns: tuple[str, ...] = ()  # shown in the live table; None where a trial did not sample one

    def __call__(self, trial: Any) -> dict[str, Any]:
        fixed = method_spec(self.method).search_space(trial, self.two_stage) or {}
        # Ray's OptunaSearch lets returned constants override sampled values: fill only the gaps.
        sampled = getattr(trial, "captured_values", {})
        gaps = {c: None for c in self.columns if c not in sampled and c not in fixed}
        return {
            **gaps,
            **fixed,
            "distill.method": self.method,
            "train.epochs": self.epochs,
            "student.arch": self.arch,
            ROLE_KEY: STUDENT,
        }


def _space(method: str, base: Config) -> SearchSpace:
    return SearchSpace(
        method, base.student.two_stage, base.train.total_epochs, base.student.arch, method_spec(method).live_columns
    )


def ablations(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ablations.py",
        description="Run one of the paper's ablation grids exactly (each cell a Ray Train DDP trial, "
        "repeated over seeds) into its own experiment directory for analysis/make_tables.py.",
    )
    parser.add_argument("grid", choices=sorted(GRIDS), help="table1..table6 (the paper's tables), teacher or baseline")
    _common_args(parser)
    parser.add_argument("--seeds", type=int, help="repeats of each cell (overrides sweep.seeds; default 1)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="train.seed of each cell's first repeat (default 0): adds seeds to a grid run before, "
        "under another --name (make_tables pools the two)",
    )
    parser.add_argument("--epochs-1x", type=int, help="epochs of the 1x schedule (2x doubles it)")
    parser.add_argument(
        "--frameworks",
        help="comma-separated: only the cells of these frameworks (one_stage, two_stage); default: all the grid has",
    )
    parser.add_argument(
        "--methods",
        help="comma-separated: only the cells of these methods (none, fitnet, ..., drkd), run in this order; "
        "default: every cell, in the grid's order",
    )
    parser.add_argument("--schedules", help="comma-separated: only the cells of these schedules (1x, 2x); default: all")
    parser.add_argument(
        "--terms",
        help="comma-separated: only the DRKD cells with these term sets (PR, IR, PR+IR, PR+IR+INS; the baseline "
        "and other methods are left out); default: every cell",
    )
    args = _parse(parser, argv)
    try:
        if args.first_seed < 0:
            raise ConfigError(f"--first-seed {args.first_seed}: must be >= 0")
        frameworks = _names(args.frameworks) or list(FRAMEWORK_ARCH)
        methods = _names(args.methods)
        schedules = _names(args.schedules)
        term_sets = _names(args.terms)

        def chosen_cells(base: Config, teachers: dict[str, str]) -> list[dict[str, Any]]:
            cells = only_frameworks(GRIDS[args.grid](base, teachers), frameworks)
            cells = only_schedules(cells, schedules) if schedules else cells
            cells = only_terms(cells, term_sets, base) if term_sets else cells
            return only_methods(cells, methods) if methods else cells

        chosen_cells(tiny_student_config("one_stage"), {})  # refuse a bad filter before any work
        base, settings = _base_and_settings(args, lambda: (tiny_student_config("one_stage"), SweepSettings()))
        if args.epochs_1x:
            base.train.epochs_1x = args.epochs_1x
        settings = _settings(args, settings, seeds=args.seeds, name=args.name or settings.name or args.grid)
        if not args.config:
            _embedded_total_batch(base, settings)
        base, settings = _maybe_smoke_test(args, _training_overrides(args, base), settings)
        if not args.config:
            base.student.backbone_checkpoint = _default_backbone(args.smoke_test)
        cells = chosen_cells(base, {})
        teachers = _teacher_checkpoints(args.grid, base, settings, cells, bool(args.config), args.smoke_test)
        cells = with_seeds(chosen_cells(base, teachers), settings.seeds, args.first_seed)
        plan = SweepPlan(args.grid, base, settings, grid=cells)
        log.info(
            "%s: %d trials (%d cells x %d seeds)", args.grid, len(cells), len(cells) // settings.seeds, settings.seeds
        )
        results = run_sweep(plan, resume=args.resume, verbose=args.verbose)
    except ConfigError as err:
        print(f"ablations.py: error: {err}", file=sys.stderr)
        return 2
    print(f"experiment: {plan.path}  (tables: python analysis/make_tables.py {plan.path})")
    if args.grid == TEACHER_GRID:
        try:
            for line in publish_teachers(plan.storage, results):
                print(f"published teacher {line}")
        except ConfigError as err:
            print(f"ablations.py: {err}", file=sys.stderr)
            return 2
    failed = failed_cells(results)
    if failed:
        print(
            f"ablations.py: {len(failed)} of {len(results)} trials failed or diverged; their table cells stay empty "
            "(--resume reruns failed trials; a diverged one diverges again: lower train.lr or the loss weights):",
            file=sys.stderr,
        )
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def _names(flag: str | None) -> list[str]:
    """A comma-separated flag's names, stripped; [] when the flag was not given."""
    return [n.strip() for n in flag.split(",")] if flag else []


def failed_cells(results: Any) -> list[str]:
    """'<cell> seed <seed>: <error>' for every trial of a Tune ResultGrid that ended in an error, and
    '<cell> seed <seed>: diverged (<reason>)' for every one whose training diverged."""
    out = []
    for result in results:
        metrics = result.metrics or {}
        if result.error is not None:
            lines = str(result.error).strip().splitlines()
            why = lines[-1] if lines else "?"
        elif metrics.get("diverged"):
            why = f"diverged ({metrics.get('diverged_reason', '?')})"
        else:
            continue
        config = result.config or {}
        out.append(f"{config.get(CELL_KEY, '?')} seed {config.get('train.seed', '?')}: {why}")
    return out


def _teacher_checkpoints(
    grid: str,
    base: Config,
    settings: SweepSettings,
    cells: list[dict[str, Any]],
    configured: bool,
    smoke: bool = False,
) -> dict[str, str]:
    """Per framework, the teacher to distil from: `sweep.teacher_checkpoints`, else the config's
    `teacher.checkpoint` for its own framework; the cached default teachers for the embedded default."""
    if grid not in NEEDS_TEACHER:
        return {}
    needed = frameworks_used(cells)
    if not configured:
        return _default_teachers(needed, smoke)
    teachers = dict(settings.teacher_checkpoints)
    if base.teacher is not None and base.teacher.checkpoint:
        for framework, arch in FRAMEWORK_ARCH.items():
            if arch == base.teacher.arch:
                teachers.setdefault(framework, base.teacher.checkpoint)
    published = {}
    if base.teacher is not None:
        published = {
            f: published_teacher(results_root(settings), a, base.teacher.backbone) for f, a in FRAMEWORK_ARCH.items()
        }
    for framework in needed - set(teachers):
        if framework in published and Path(published[framework]).is_file():
            teachers[framework] = published[framework]
    missing = sorted(needed - set(teachers))
    if missing:
        where = f" nor published at {published[missing[0]]}" if missing[0] in published else ""
        raise ConfigError(
            f"{grid}: no trained teacher for {', '.join(missing)}: neither sweep.teacher_checkpoints.{missing[0]}{where} "
            "(train and publish one with: python sweeps/ablations.py teacher --config <this config>)"
        )
    return {f: absolute_location(teachers[f]) for f in needed}
