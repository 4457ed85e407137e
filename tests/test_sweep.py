"""A tiny Optuna search and an ablation grid end to end on real Ray (local), each trial 2 DDP workers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import ray
import yaml
from table6_labels import METHOD_LABEL

from drkd.config import config_from_dict, load_config
from drkd.config.methods import method_names
from drkd.sweeps.commands import ablations, lambda_search
from drkd.sweeps.ray_instance import start_private_ray


@pytest.fixture(scope="module")
def local_ray():
    start_private_ray(num_cpus=4, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def sweep_file(tmp_path: Path, tiny_config, teacher_ckpt: str, weight_scale: dict | None = None, **sweep) -> Path:
    cfg = tiny_config("drkd", teacher_ckpt=teacher_ckpt)
    if weight_scale is not None:
        cfg.distill.weight_scale = dict(weight_scale)
    values = cfg.to_dict()
    values["sweep"] = {
        "num_trials": 2,
        "workers_per_trial": 2,
        "grace_period": 1,
        "seed": 0,
        "storage_path": str(tmp_path / "results"),
        **sweep,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def result_lines(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def trial_dirs(exp: Path) -> list[Path]:
    return sorted(p for p in exp.iterdir() if p.is_dir() and (p / "params.json").exists())


def test_two_trial_search_end_to_end(local_ray, tmp_path: Path, tiny_config, teacher_ckpt: str, capsys) -> None:
    path = sweep_file(tmp_path, tiny_config, teacher_ckpt)
    # --train-images 8: one iteration per epoch of 2 workers x 4 images
    argv = ["--config", str(path), "--name", "search", "--train-images", "8", "--search-seed", "3"]
    assert lambda_search(argv) == 0
    out = capsys.readouterr().out
    exp = tmp_path / "results" / "search"
    record = json.loads((exp / "drkd_experiment.json").read_text())
    assert record["kind"] == "lambda_search" and record["settings"]["seed"] == 3  # the sampler's seed
    # the base config the trials' overrides apply to, which the tables need to compare runs
    base = config_from_dict(record["base_config"])
    assert base.data.train_limit == 8 and base.distill.method == "drkd"
    trials = trial_dirs(exp)
    assert len(trials) == 2
    for trial in trials:
        params = json.loads((trial / "params.json").read_text())
        assert params["distill.method"] == "drkd" and params["train.epochs"] == 2
        lines = result_lines(trial)
        assert lines and lines[0]["epoch"] == 1
        assert {"mAP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "loss_total", "loss_det"} <= set(lines[-1])
        on = [t for t in ("pr", "ir", "ins") if params.get(f"distill.drkd.{t}", True)]
        assert {f"loss_{t}" for t in on} <= set(lines[-1])  # every active term reported
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert len(study.trials) == 2
    best = load_config(exp / "best_config.yaml")
    assert best.distill.method == "drkd" and best.data.train_limit == 8
    assert "best trial: mAP" in out and str(exp / "best_config.yaml") in out
    # each trial's seconds to its first iteration, reported with its first epoch and printed
    assert all("startup_s" in result_lines(t)[0] and "startup_s" not in result_lines(t)[-1] for t in trials)
    printed = re.search(r"seconds to the first training iteration, per trial: (.*)", out)
    assert printed and len(printed.group(1).split(", ")) == 2
    # one progress line per trial per epoch, and how each trial ended
    ids = [json.loads((t / "result.json").read_text().splitlines()[0])["trial_id"] for t in trials]
    for trial_id in ids:
        for epoch in (1, 2):
            assert re.search(rf"trial {trial_id} epoch {epoch}/2: mAP \d+\.\d\d AP_S .* loss \d", out)
        assert re.search(rf"trial {trial_id} (finished at epoch 2/2|stopped early by the scheduler)", out)
    # two trials cannot measure whether the grace epoch predicts the final ranking, and it says so
    assert "rank agreement of epoch 1 (sweep.grace_period) with epoch 2: not measurable here" in out
    # the best and latest checkpoints are kept, earlier ones deleted: here (2 epochs) at most 2 per trial
    for run in (exp / ".train").iterdir():
        assert 1 <= len(list(run.glob("checkpoint_*"))) <= 2


@pytest.mark.slow  # ~25 s: a second Ray search; the default run checks every peer's space without Ray (below)
def test_peer_search_samples_its_own_weights(local_ray, tmp_path: Path, tiny_config, teacher_ckpt: str) -> None:
    path = sweep_file(tmp_path, tiny_config, teacher_ckpt, num_trials=1, workers_per_trial=1)
    assert lambda_search(["--config", str(path), "--method", "nld", "--name", "nld_search"]) == 0
    exp = tmp_path / "results" / "nld_search"
    (trial,) = trial_dirs(exp)
    params = json.loads((trial / "params.json").read_text())
    assert params["distill.method"] == "nld"
    sampled = {k for k in params if k.startswith("distill.nld.")}
    assert {f"distill.nld.{n}" for n in ("alpha", "beta", "gamma", "temperature")} <= sampled
    assert {"loss_at", "loss_am", "loss_nld"} <= set(result_lines(trial)[-1])
    best = load_config(exp / "best_config.yaml")
    assert best.distill.method == "nld"
    assert best.distill.nld.alpha == pytest.approx(params["distill.nld.alpha"])
    (study_trial,) = optuna.load_study(study_name="nld_search", storage=f"sqlite:///{exp / 'optuna.db'}").trials
    assert study_trial.params["distill.nld.alpha"] == pytest.approx(params["distill.nld.alpha"])


@pytest.mark.slow  # ~75 s: five Ray Train trials
def test_ablation_grid_runs_every_cell_and_renders_as_table4(
    local_ray, tmp_path: Path, tiny_config, teacher_ckpt: str
) -> None:
    import pandas as pd

    from drkd.analysis.report import make_report

    path = sweep_file(tmp_path, tiny_config, teacher_ckpt, workers_per_trial=1, max_concurrent_trials=2)
    assert ablations(["table4", "--config", str(path), "--epochs-1x", "1", "--first-seed", "7"]) == 0
    exp = tmp_path / "results" / "table4"
    # The analysis reads this real sweep: every distilled row of Table 4 is a trial's reported mAP.
    report = make_report([tmp_path / "results"], tmp_path / "report")
    table = pd.read_csv(report.parent / "tables" / "table4.csv", keep_default_na=False, na_values=[""])
    by_cell = {json.loads((t / "params.json").read_text())["cell"]: result_lines(t)[-1]["mAP"] for t in trial_dirs(exp)}
    distilled = table[table["Distillation"].isin(["IR", "PR+IR+INS"])]
    assert sorted(distilled["mAP"].round(3)) == sorted(round(v, 3) for k, v in by_cell.items() if "baseline" not in k)
    assert table.loc[table["Distillation"] == "Student", "mAP"].round(3).tolist() == [
        round(by_cell["one_stage 1x baseline"], 3)
    ]
    cells = sorted(json.loads((t / "params.json").read_text())["cell"] for t in trial_dirs(exp))
    assert cells == sorted(
        [
            "one_stage 1x baseline",
            "one_stage 1x IR relation_filter=False",
            "one_stage 1x IR relation_filter=True",
            "one_stage 1x PR+IR+INS relation_filter=False",
            "one_stage 1x PR+IR+INS relation_filter=True",
        ]
    )
    for trial in trial_dirs(exp):
        assert result_lines(trial)[-1]["epoch"] == 1
        assert json.loads((trial / "params.json").read_text())["train.seed"] == 7  # --first-seed


@pytest.mark.slow
def test_table6_grid_runs_every_method_on_both_frameworks(
    local_ray, tmp_path: Path, tiny_config, teacher_ckpt: str, two_stage_teacher_ckpt: str
) -> None:
    """The real `ablations.py table6`: ten 2-epoch trials, rendered beside the paper's Table 6 (~4 min)."""
    import pandas as pd

    from drkd.analysis.report import make_report
    from drkd.config.presets import tiny_weight_scale

    # As on the embedded default: at its published alpha, MKD diverges on these small detectors.
    path = sweep_file(
        tmp_path,
        tiny_config,
        teacher_ckpt,
        weight_scale=tiny_weight_scale(),
        workers_per_trial=1,
        max_concurrent_trials=2,
        teacher_checkpoints={"one_stage": teacher_ckpt, "two_stage": two_stage_teacher_ckpt},
    )
    assert ablations(["table6", "--config", str(path), "--epochs-1x", "1"]) == 0
    exp = tmp_path / "results" / "table6"
    trials = {json.loads((t / "params.json").read_text())["cell"]: t for t in trial_dirs(exp)}
    methods = ("none", "fitnet", "nld", "mkd", "cwd", "pkd", "mgd", "fgd", "drkd")
    assert sorted(trials) == sorted(f"{f} 2x {m}" for f in ("one_stage", "two_stage") for m in methods)
    for _cell, trial in trials.items():
        assert result_lines(trial)[-1]["epoch"] == 2  # 2x of a 1-epoch 1x
    table = pd.read_csv(
        make_report([tmp_path / "results"], tmp_path / "report").parent / "tables" / "table6.csv",
        keep_default_na=False,
        na_values=[""],
    )
    for framework, name in (("one_stage", "One-stage (RetinaNet)"), ("two_stage", "Two-stage (Faster R-CNN)")):
        for method in methods:
            row = table[(table["Framework"] == name) & (table["Method"] == METHOD_LABEL[method])].iloc[0]
            assert row["mAP"] == pytest.approx(result_lines(trials[f"{framework} 2x {method}"])[-1]["mAP"], abs=1e-3)
    nld = table[table["Method"] == "NLD"].set_index("Framework")["mAP_paper"]
    assert nld.to_dict() == {"Two-stage (Faster R-CNN)": 41.5, "One-stage (RetinaNet)": 39.6}


def test_unsampled_search_parameters_keep_the_base_config(tiny_config, teacher_ckpt: str) -> None:
    from drkd.config import apply_overrides
    from drkd.sweeps.commands import SearchSpace
    from drkd.sweeps.trial import trial_overrides

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace("drkd", False, 2, "retinanet", ("distill.drkd.instance_size", "distill.drkd.lambda_pr"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    base = tiny_config("drkd", teacher_ckpt=teacher_ckpt)
    for _ in range(20):  # some draws switch IR and INS off: instance_size is then a None gap
        params = space(study.ask())
        cfg = apply_overrides(base, trial_overrides(params))
        assert cfg.distill.drkd.instance_size in (1, 3, 5)


@pytest.mark.parametrize("method", [m for m in method_names() if m != "drkd"])
def test_each_peer_search_samples_its_own_weights_into_a_valid_config(
    tiny_config, teacher_ckpt: str, method: str
) -> None:
    """The space `lambda_search.py --method X` searches (its end-to-end Ray run is in the slow set):
    with a real Optuna study, every trial draws only X's own parameters, records X, the epochs and
    the student's detector, and its overrides give a config that validates with those values."""
    from drkd.config import apply_overrides
    from drkd.sweeps.commands import _space
    from drkd.sweeps.trial import trial_overrides

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = tiny_config("drkd", teacher_ckpt=teacher_ckpt)
    base.distill.method = method  # as lambda_search does with --method
    space = _space(method, base)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        params = space(trial)
        assert trial.params and all(k.startswith(f"distill.{method}.") for k in trial.params)
        assert params["distill.method"] == method and params["train.epochs"] == base.train.total_epochs
        assert params["student.arch"] == "retinanet"
        cfg = apply_overrides(base, trial_overrides({**params, **trial.params}), "trial").validate()
        section = getattr(cfg.distill, method)
        for key, value in trial.params.items():
            assert getattr(section, key.rsplit(".", 1)[1]) == pytest.approx(value)
        study.tell(trial, 0.0)


def test_bad_sweep_settings_are_named(tmp_path: Path, tiny_config, teacher_ckpt: str, capsys) -> None:
    path = sweep_file(tmp_path, tiny_config, teacher_ckpt, placement_strategy="ANYWHERE")
    assert lambda_search(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "sweep.placement_strategy = 'ANYWHERE'" in err and str(path) in err
    path = sweep_file(tmp_path, tiny_config, teacher_ckpt)
    assert lambda_search(["--config", str(path), "--search-seed", "-1"]) == 2
    assert "sweep.seed = -1: must be >= 0" in capsys.readouterr().err
    values = yaml.safe_load(path.read_text())
    values["train"]["eval_every"] = 2  # trials would report epochs without mAP
    path.write_text(yaml.safe_dump(values))
    assert lambda_search(["--config", str(path)]) == 2
    assert "lambda_search base config: train.eval_every = 2: a sweep's trials must evaluate every epoch" in (
        capsys.readouterr().err
    )
    assert ablations(["table4", "--config", str(path)]) == 2
    assert re.search(r"table4 cell [^:]+: train\.eval_every = 2", capsys.readouterr().err)
    values["train"]["eval_every"] = 1
    path.write_text(yaml.safe_dump(values))
    assert ablations(["table1", "--config", str(path)]) == 2
    assert "no trained teacher for two_stage: neither sweep.teacher_checkpoints.two_stage nor published at " in (
        capsys.readouterr().err
    )


def test_best_config_of_a_remote_sweep_goes_to_the_results_dir(tmp_path: Path, monkeypatch, tiny_config) -> None:
    """With storage on s3://, the best config is written under $DRKD_RESULTS (not ./results)."""
    from types import SimpleNamespace

    from drkd.analysis.paper_tables import SEARCH_KIND
    from drkd.config.sweep_settings import SweepSettings
    from drkd.sweeps.tuner import SweepPlan, write_best_config

    monkeypatch.setenv("DRKD_RESULTS", str(tmp_path / "local"))
    monkeypatch.chdir(tmp_path)
    base = tiny_config("none")
    plan = SweepPlan(
        SEARCH_KIND, base, SweepSettings(name="remote", storage_path="s3://bucket/results"), space=lambda trial: {}
    )
    finished = SimpleNamespace(metrics={"epoch": base.train.total_epochs, "mAP": 1.5}, config={"train.seed": 5})
    best, path = write_best_config(plan, [finished])
    assert path == tmp_path / "local" / "remote" / "best_config.yaml"
    assert not (tmp_path / "results").exists()
    assert load_config(path).train.seed == 5 and best["mAP"] == 1.5


@pytest.mark.slow  # ~60 s: two trials on 2 DDP workers each
def test_ablations_exit_non_zero_naming_diverged_cells(
    local_ray, tmp_path: Path, tiny_config, teacher_ckpt: str, capsys
) -> None:
    """Every cell diverges at its first iteration: each trial ends with a final `diverged` report (no
    Ray Train or Tune retry, though max_failures allows them), ablations.py names the cells and exits 1,
    and the tables leave the trials out saying why."""
    from drkd.analysis.report import make_report

    cfg = tiny_config("drkd", teacher_ckpt=teacher_ckpt)
    cfg.train.lr = 1e8  # diverges at once
    cfg.train.warmup_iters = 0
    values = cfg.to_dict()
    values["sweep"] = {"workers_per_trial": 2, "max_concurrent_trials": 1, "max_failures": 2}
    values["sweep"]["storage_path"] = str(tmp_path / "results")
    path = tmp_path / "diverging.yaml"
    path.write_text(yaml.safe_dump(values))
    assert ablations(["teacher", "--config", str(path), "--epochs-1x", "1"]) == 1
    err = capsys.readouterr().err
    assert "ablations.py: 2 of 2 trials failed or diverged" in err
    for cell in ("one_stage teacher", "two_stage teacher"):
        assert re.search(
            f"{cell} seed 0: diverged \\(loss_\\w+ = (nan|inf|-inf) at epoch 1, iteration \\d+: stopping\\)", err
        ), err
    exp = tmp_path / "results" / "teacher"
    for trial in trial_dirs(exp):
        (line,) = result_lines(trial)  # one report: the run was not retried
        assert line["diverged"] == 1.0 and line["epoch"] == 1 and line["mAP"] == 0.0
        assert not (trial / "error.txt").exists()
    for run in (exp / ".train").iterdir():
        assert not list(run.glob("checkpoint_*"))  # nothing saved from a diverged run
    text = (make_report([tmp_path / "results"], tmp_path / "report")).read_text()
    assert "(diverged)" in text


def test_optuna_searcher_reads_the_trials_own_epochs_from_a_flattened_result() -> None:
    from optuna.trial import TrialState

    from drkd.sweeps.optuna_searcher import PrunedAwareOptunaSearch, trial_epochs

    searcher = PrunedAwareOptunaSearch(
        space=lambda trial: {"x": trial.suggest_float("x", 0.0, 1.0)}, metric="mAP", mode="max", total_epochs=4
    )
    for trial_id, epochs, reached in (("short", 2, 2), ("stopped", 4, 2), ("full", 4, 4)):
        assert searcher.suggest(trial_id) is not None
        # Tune's flattened result: the trial's own epoch count is "config/train.epochs"
        searcher.on_trial_complete(trial_id, {"mAP": 1.0, "epoch": reached, "config/train.epochs": epochs})
    states = [t.state for t in searcher._ot_study.trials]
    # a 2-epoch trial that finished its 2 epochs is complete, not pruned against the base's 4
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert trial_epochs({"config": {"train.epochs": 3}}, 9) == 3 and trial_epochs({}, 9) == 9


def test_a_pruned_trial_reaches_optuna_with_the_value_asha_stopped_it_on() -> None:
    from optuna.trial import TrialState

    from drkd.sweeps.optuna_searcher import PrunedAwareOptunaSearch

    searcher = PrunedAwareOptunaSearch(
        space=lambda trial: {"x": trial.suggest_float("x", 0.0, 1.0)}, metric="mAP", mode="max", total_epochs=4
    )
    for trial_id, reported, stopped_on in (("cut_at_grace", [], 0.3), ("cut_later", [0.2, 0.5], 0.7)):
        searcher.suggest(trial_id)
        for step, value in enumerate(reported, start=1):  # results the scheduler let continue
            searcher.on_trial_result(trial_id, {"mAP": value, "epoch": step, "training_iteration": step})
        # Tune hands the result ASHA stops on to the searcher only at completion
        step = len(reported) + 1
        searcher.on_trial_complete(trial_id, {"mAP": stopped_on, "epoch": step, "training_iteration": step})
    first, second = searcher._ot_study.trials
    assert first.state == second.state == TrialState.PRUNED
    assert first.intermediate_values == {1: 0.3}
    assert second.intermediate_values == {1: 0.2, 2: 0.5, 3: 0.7}
    # a trial that ended early after its last result was already told (diverged) keeps that value once
    searcher.suggest("diverged")
    searcher.on_trial_result("diverged", {"mAP": 0.1, "epoch": 1, "training_iteration": 1})
    searcher.on_trial_complete("diverged", {"mAP": 0.1, "epoch": 1, "training_iteration": 1})
    assert searcher._ot_study.trials[2].intermediate_values == {1: 0.1}


def test_random_start_is_sized_to_the_budget_and_a_shared_study_is_not_joined(tmp_path: Path, tiny_config) -> None:
    from drkd.config import ConfigError
    from drkd.config.sweep_settings import SweepSettings
    from drkd.sweeps.optuna_searcher import startup_trials
    from drkd.sweeps.tuner import SweepPlan, _searcher

    assert [startup_trials(n, None) for n in (2, 8, 16, 60)] == [2, 2, 5, 10]
    assert startup_trials(8, 4) == 4
    with pytest.raises(ConfigError, match=r"sweep\.random_trials = 9: must be in 1\.\.sweep\.num_trials \(8\)"):
        SweepSettings(random_trials=9).validate()
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    settings = SweepSettings(num_trials=8, optuna_storage=url, name="search", storage_path=str(tmp_path))
    plan = SweepPlan("lambda_search", tiny_config("drkd"), settings, space=lambda trial: {})
    searcher = _searcher(plan)
    assert searcher._sampler._n_startup_trials == 2  # TPE models 6 of the 8 trials
    # the study now exists in the shared database: a second new experiment of that name is refused
    assert "search" in optuna.study.get_all_study_names(url)
    with pytest.raises(ConfigError, match="a study named 'search' already exists .*--resume"):
        _searcher(plan)
