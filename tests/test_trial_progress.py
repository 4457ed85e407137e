"""What a sweep prints while it runs, and the rank agreement its summary reports."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from drkd.analysis.rank_agreement import rank_agreement, spearman_interval
from drkd.sweeps.trial_progress import TrialProgress, progress_line

REPO = Path(__file__).resolve().parents[1]


def test_progress_line_names_the_trial_epoch_metrics_and_time() -> None:
    result = {
        "epoch": 2,
        "mAP": 1.234,
        "AP_S": 0.5,
        "AP_M": 2.0,
        "AP_L": 3.0,
        "loss_total": 1.23456,
        "epoch_time_s": 12.6,
    }
    assert (
        progress_line("ab12", result, 6)
        == "trial ab12 epoch 2/6: mAP 1.23 AP_S 0.50 AP_M 2.00 AP_L 3.00 loss 1.235 (13 s)"
    )
    diverged = progress_line("ab12", {"epoch": 1, "diverged": True, "diverged_reason": "loss_pr = nan"}, None)
    assert diverged == "trial ab12 epoch 1/?: ; diverged (loss_pr = nan)"


def test_trial_progress_says_how_each_trial_ended() -> None:
    out = io.StringIO()
    progress = TrialProgress(total_epochs=6, stream=out)
    early = SimpleNamespace(trial_id="t1", config={})
    full = SimpleNamespace(trial_id="t2", config={"train.epochs": 2})  # a trial's own epochs win
    for epoch in (1, 2):
        progress.on_trial_result(epoch, [], early, {"epoch": epoch, "mAP": 0.1 * epoch})
        progress.on_trial_result(epoch, [], full, {"epoch": epoch, "mAP": 0.2 * epoch})
    progress.on_trial_complete(2, [], early)
    progress.on_trial_complete(2, [], full)
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]  # without the time
    assert lines == [
        "trial t1 epoch 1/6: mAP 0.10",
        "trial t2 epoch 1/2: mAP 0.20",
        "trial t1 epoch 2/6: mAP 0.20",
        "trial t2 epoch 2/2: mAP 0.40",
        "trial t1 stopped early by the scheduler (ASHA) at epoch 2/6",
        "trial t2 finished at epoch 2/2",
    ]


def test_rank_agreement_is_spearmans_rho_over_trials_with_both_epochs() -> None:
    # early ranks a, b, c = 1, 2, 3; final ranks 3, 1, 2: d = -2, 1, 1, so rho = 1 - 6*6/(3*8) = -0.5
    histories = {"a": {2: 1.0, 6: 3.0}, "b": {2: 2.0, 6: 1.0}, "c": {2: 3.0, 6: 2.0}, "d": {2: 5.0}}
    rho, n = rank_agreement(histories, 2, 6)
    assert n == 3 and rho == pytest.approx(-0.5)
    same = {k: {2: v[2], 6: 10 * v[2]} for k, v in histories.items() if 6 in v}
    assert rank_agreement(same, 2, 6) == (pytest.approx(1.0), 3)
    # ties get average ranks: early 1, 1, 2 -> ranks 1.5, 1.5, 3 against 1, 2, 3: rho = 0.866
    tied = {"a": {1: 1.0, 3: 1.0}, "b": {1: 1.0, 3: 2.0}, "c": {1: 2.0, 3: 3.0}}
    assert rank_agreement(tied, 1, 3)[0] == pytest.approx(math.sqrt(3) / 2)
    assert rank_agreement({"a": {2: 1.0, 6: 1.0}, "b": {2: 2.0, 6: 2.0}}, 2, 6) == (None, 2)
    flat = {k: {2: 1.0, 6: float(i)} for i, k in enumerate("abc")}
    assert rank_agreement(flat, 2, 6) == (None, 3)


def test_spearman_interval_is_fisher_z_with_the_rank_variance() -> None:
    # rho 0.5, n 12: atanh(0.5) = 0.5493, half-width 1.96 * sqrt(1.06 / 9) = 0.6727 -> tanh(-0.1234), tanh(1.2220)
    low, high = spearman_interval(0.5, 12)
    assert (low, high) == (pytest.approx(-0.12272, abs=1e-5), pytest.approx(0.84023, abs=1e-5))
    # symmetric in the sign of rho, narrower with more trials, finite at |rho| = 1
    assert spearman_interval(-0.5, 12) == (pytest.approx(-high), pytest.approx(-low))
    assert spearman_interval(0.5, 40)[1] - spearman_interval(0.5, 40)[0] < high - low
    assert -1.0 < spearman_interval(1.0, 5)[0] < spearman_interval(1.0, 5)[1] <= 1.0
    with pytest.raises(ValueError, match="n >= 4"):
        spearman_interval(0.5, 3)


@pytest.mark.slow
def test_the_search_terminal_shows_the_table_progress_and_summary_not_the_workers(tmp_path: Path) -> None:
    """`python sweeps/lambda_search.py --smoke-test` as a user types it: pycocotools' index lines and
    Ray Train's report dicts stay in Ray's log files; each trial's epochs and the summary are shown."""
    env = {**os.environ, "RAY_ADDRESS": "local", "DRKD_RESULTS": str(tmp_path / "results")}
    run = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "lambda_search.py"), "--smoke-test"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    for noise in ("creating index", "index created", "Reporting training result", "TrainingReport(", "RayTrainWorker"):
        assert noise not in out, noise
    assert "== Status ==" in out  # Tune's live table
    epochs = [line for line in out.splitlines() if " epoch 1/1: mAP " in line]
    assert len(epochs) == 2, out[-3000:]  # the smoke test's 2 trials of 1 epoch
    assert "best trial: mAP" in out and "--verbose shows it here" in out


def test_the_default_search_cuts_at_the_last_epoch_before_the_first_decay_and_a_grace_period_at_the_last_epoch_says_it_cut_nothing(
    capsys,
) -> None:
    from drkd.sweeps.commands import _default_search, _print_rank_agreement
    from drkd.train.lr_schedule import milestones

    base, settings = _default_search()
    # the student preset's own schedule on all its images (the signal measured by bench/distill_gain.py)
    assert (base.train.total_epochs, base.data.train_limit) == (12, None)
    # the epoch bench/grace_rank.py found to rank trials at 6 epochs: the last before the first decay
    assert settings.grace_period == milestones(base.train.total_epochs)[0] == 8
    _print_rank_agreement([], base.train.total_epochs, base.train.total_epochs)  # --grace-period 12
    assert capsys.readouterr().out.startswith("ASHA stopped no trial early: sweep.grace_period (12) is the last epoch")


def test_the_embedded_default_splits_drkd_trains_batch_over_a_trials_workers() -> None:
    from drkd.config import ConfigError
    from drkd.sweeps.commands import _default_search, _embedded_total_batch

    for workers, per_worker in ((1, 8), (2, 4), (4, 2)):
        base, settings = _default_search()
        settings.workers_per_trial = workers
        _embedded_total_batch(base, settings)
        assert base.data.batch_size * workers == 8 and base.data.batch_size == per_worker
    base, settings = _default_search()
    settings.workers_per_trial = 3
    with pytest.raises(ConfigError, match=r"--workers 3: .* 8 images per optimiser step.*divisor of 8"):
        _embedded_total_batch(base, settings)


def test_frameworks_keeps_only_that_frameworks_cells() -> None:
    from drkd.analysis.paper_tables import GRIDS
    from drkd.analysis.paper_tables.cells import only_frameworks, only_methods
    from drkd.config.presets import tiny_student_config

    cells = GRIDS["table6"](tiny_student_config("one_stage"), {})
    kept = only_frameworks(cells, ["one_stage"])
    assert kept == [c for c in cells if c["student.arch"] == "retinanet"] and 0 < len(kept) < len(cells)
    assert only_frameworks(cells, ["one_stage", "two_stage"]) == cells
    chosen = only_methods(kept, ["drkd", "none"])  # in the order named
    assert [c["distill.method"] for c in chosen] == ["drkd", "none"]
    assert chosen == [c for c in kept if c["distill.method"] == "drkd"] + [
        c for c in kept if c["distill.method"] == "none"
    ]


def test_schedules_and_terms_pick_table1s_drkd_cells_whose_pr_ir_ins_table6_already_ran() -> None:
    from drkd.analysis.paper_tables import GRIDS
    from drkd.analysis.paper_tables.cells import only_frameworks, only_schedules, only_terms, term_set
    from drkd.analysis.paper_tables.settings import settings_from_config
    from drkd.config.presets import tiny_student_config

    base = tiny_student_config("one_stage")
    table1 = only_frameworks(GRIDS["table1"](base, {}), ["two_stage"])
    late = only_schedules(table1, ["2x"])
    assert {c["train.schedule"] for c in late} == {"2x"} and len(late) == len(table1) // 2 == 5
    picked = only_terms(late, ["PR", "IR", "PR+IR"], base)
    assert [term_set(c, base) for c in picked] == ["PR", "IR", "PR+IR"]  # no baseline, no PR+IR+INS
    assert [c["cell"] for c in picked] == ["two_stage 2x PR", "two_stage 2x IR", "two_stage 2x PR+IR"]
    # Table 6's DRKD cell sets no switch: it is PR+IR+INS by the config's defaults, and the same
    # trial as Table 1's PR+IR+INS cell (make_tables matches rows by settings), so it need not rerun.
    (table6_drkd,) = [
        c for c in only_frameworks(GRIDS["table6"](base, {}), ["two_stage"]) if term_set(c, base) is not None
    ]
    assert term_set(table6_drkd, base) == "PR+IR+INS"
    (table1_all,) = only_terms(late, ["PR+IR+INS"], base)
    assert settings_from_config(table6_drkd) == settings_from_config(table1_all)


def test_bad_training_overrides_are_refused_naming_the_flag_before_any_work(capsys) -> None:
    from drkd.sweeps.commands import ablations, lambda_search

    assert ablations(["table4", "--first-seed", "-1"]) == 2
    assert "ablations.py: error: --first-seed -1: must be >= 0" in capsys.readouterr().err
    assert ablations(["table6", "--frameworks", "one_stage,three_stage"]) == 2
    err = capsys.readouterr().err
    assert (
        "ablations.py: error: --frameworks one_stage,three_stage: 'three_stage' is not one of one_stage, two_stage"
        in err
    )
    assert ablations(["table4", "--frameworks", "two_stage"]) == 2  # Table 4 is one-stage only
    assert "ablations.py: error: --frameworks two_stage: this grid trains none of them" in capsys.readouterr().err
    assert ablations(["table6", "--methods", "drkd,kd"]) == 2
    assert "ablations.py: error: --methods drkd,kd: no cell of this grid distils with 'kd'" in capsys.readouterr().err
    assert ablations(["table1", "--schedules", "2x,3x"]) == 2
    assert "ablations.py: error: --schedules 2x,3x: '3x' is not one of 1x, 2x" in capsys.readouterr().err
    assert ablations(["table6", "--schedules", "1x"]) == 2  # Table 6 is 2x only
    assert "ablations.py: error: --schedules 1x: this grid runs none of them" in capsys.readouterr().err
    assert ablations(["table1", "--terms", "PR,INS"]) == 2
    assert (
        "ablations.py: error: --terms PR,INS: 'INS' is not one of PR, IR, PR+IR, PR+IR+INS" in capsys.readouterr().err
    )
    assert ablations(["table2", "--terms", "IR"]) == 2  # Table 2 varies the pixel relation: PR cells only
    assert "ablations.py: error: --terms IR: no DRKD cell of this grid has them" in capsys.readouterr().err
    assert ablations(["table4", "--train-images", "0"]) == 2
    assert "ablations.py: error: --train-images 0: must be a positive number of images" in capsys.readouterr().err
    assert lambda_search(["--workers", "3"]) == 2
    assert "lambda_search.py: error: --workers 3: the embedded default trains on 8 images" in capsys.readouterr().err
