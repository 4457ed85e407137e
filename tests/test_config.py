"""Config loading and validation: errors name the file, the field and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drkd.config import Config, ConfigError, apply_overrides, config_from_dict, load_config, save_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, values: object, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize(
    "values, field, bad",
    [
        ({"student": {"arch": "yolo"}}, "student.arch", "yolo"),
        ({"student": {"backbone": "vgg16"}}, "student.backbone", "vgg16"),
        ({"teacher": {}, "distill": {"drkd": {"lambda_pr": -0.1}}}, "distill.drkd.lambda_pr", "-0.1"),
        ({"teacher": {}, "distill": {"drkd": {"instance_size": 2}}}, "distill.drkd.instance_size", "2"),
        ({"train": {"schedule": "3x"}}, "train.schedule", "3x"),
        ({"train": {"lr": "fast"}}, "train.lr", "fast"),
        ({"data": {"batch_size": 0}}, "data.batch_size", "0"),
        ({"student": {"fpn_width": 64}}, "student.fpn_width", "unknown field"),
        ({"distill": {"method": "kd"}, "teacher": {}}, "distill.method", "kd"),
        ({"distill": {"method": "drkd"}}, "distill.method", "teacher"),
        ({"teacher": {}, "distill": {"weight_scale": {"nld": 0}}}, "distill.weight_scale.nld", "0"),
        ({"teacher": {}, "distill": {"weight_scale": {"nld": "big"}}}, "distill.weight_scale.nld", "big"),
        ({"teacher": {}, "distill": {"weight_scale": {"kd": 2.0}}}, "distill.weight_scale", "kd"),
        (
            {"teacher": {}, "distill": {"weight_scale": {"nld": {"three_stage": 0.5}}}},
            "weight_scale.nld",
            "three_stage",
        ),
        ({"teacher": {}, "distill": {"weight_scale": {"nld": {"two_stage": -1}}}}, "weight_scale.nld.two_stage", "-1"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, values: dict, field: str, bad: str) -> None:
    path = write(tmp_path, values)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and field in message and bad in message


def test_unknown_peer_parameter_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, {"teacher": {}, "distill": {"method": "nld", "nld": {"alpah": 1.0}}})
    with pytest.raises(ConfigError, match=r"c\.yaml: distill\.nld\.alpah: unknown field \(known: .*alpha"):
        load_config(path)


def test_malformed_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("student: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_round_trip_and_overrides(tmp_path: Path) -> None:
    cfg = config_from_dict({"teacher": {"backbone": "resnext101_32x8d"}, "train": {"epochs_1x": 3, "schedule": "2x"}})
    assert cfg.train.total_epochs == 6
    again = load_config(save_config(cfg, tmp_path / "saved.yaml"))
    assert again == cfg
    changed = apply_overrides(cfg, {"distill.drkd.lambda_pr": 0.002, "distill.drkd.instance_size": 5})
    assert changed.distill.drkd.lambda_pr == 0.002 and changed.distill.drkd.instance_size == 5
    assert cfg.distill.drkd.lambda_pr is None  # the original is untouched
    with pytest.raises(ConfigError, match="distill.drkd.instance_size = 4"):
        apply_overrides(cfg, {"distill.drkd.instance_size": 4})
    with pytest.raises(ConfigError, match="distill.drdk: unknown section"):
        apply_overrides(cfg, {"distill.drdk.lambda_pr": 0.1})


def test_paper_lambdas_fill_in_per_framework() -> None:
    one = config_from_dict({"teacher": {}})
    assert one.distill.drkd.lambdas(one.student.two_stage) == pytest.approx((0.004, 0.004, 0.006))
    two = config_from_dict({"student": {"arch": "fasterrcnn"}, "teacher": {"arch": "fasterrcnn"}})
    assert two.distill.drkd.lambdas(two.student.two_stage) == pytest.approx((0.001, 0.004, 0.0018))
    given = apply_overrides(two, {"distill.drkd.lambda_ir": 0.01})
    assert given.distill.drkd.lambdas(given.student.two_stage)[1] == 0.01


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    assert isinstance(load_config(path), Config)
    if "sweep" in yaml.safe_load(path.read_text()):
        from drkd.config.sweep_settings import load_sweep_config

        cfg, settings = load_sweep_config(path)
        assert cfg.teacher is not None
        if not (cfg.teacher.checkpoint or cfg.teacher.weights):  # the teacher `ablations.py teacher` publishes
            from drkd.sweeps.teacher_handoff import published_teacher

            expected = f"/mnt/drkd-results/teachers/{cfg.teacher.arch}_{cfg.teacher.backbone}/checkpoint.pt"
            assert published_teacher(settings.storage_path, cfg.teacher.arch, cfg.teacher.backbone) == expected
        assert settings.gpus_per_worker > 0


def test_torchvision_teacher_configs_are_shipped_for_every_arch() -> None:
    """configs/coco_*_tv_*.yaml: a torchvision COCO teacher for each arch, nothing to train first."""
    shipped = {p.name: load_config(p) for p in sorted((REPO / "configs").glob("coco_*_tv_*.yaml"))}
    assert {cfg.teacher.arch for cfg in shipped.values()} == {"retinanet", "fasterrcnn", "fcos"}
    for name, cfg in shipped.items():
        t = cfg.teacher
        assert t.weights and not t.checkpoint and t.arch == cfg.student.arch, name
        assert cfg.student.weights is None and cfg.distill.method == "drkd", name
        assert cfg.distill.drkd.reduction == "authors", name  # the DRKD settings of the paper's COCO configs


TV_RETINANET = {
    "arch": "retinanet",
    "backbone": "resnet50",
    "fpn_channels": 256,
    "head_norm": "gn",
    "weights": "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1",
}


@pytest.mark.parametrize(
    "teacher, match",
    [
        (
            {"weights": "RetinaNet_ResNet50_FPN_V2_Weights.DEFAULT"},
            r"teacher\.weights = 'RetinaNet_ResNet50_FPN_V2_Weights\.DEFAULT': must be one of .*FCOS_ResNet50_FPN_Weights\.COCO_V1",
        ),
        (
            {"weights": "IMAGENET1K_V1"},
            r"teacher\.weights = 'IMAGENET1K_V1': must be one of RetinaNet_ResNet50_FPN_Weights\.COCO_V1, ",
        ),
        (
            {"arch": "fcos"},
            r"teacher\.arch = 'fcos': teacher\.weights = 'RetinaNet_ResNet50_FPN_V2_Weights\.COCO_V1' \(torchvision's retinanet_resnet50_fpn_v2\) fixes it to 'retinanet'",
        ),
        ({"backbone": "resnext101_64x4d"}, r"teacher\.backbone = 'resnext101_64x4d': .* fixes it to 'resnet50'"),
        ({"fpn_channels": 128}, r"teacher\.fpn_channels = 128: .* fixes it to 256"),
        ({"head_norm": "none"}, r"teacher\.head_norm = 'none': .*retinanet_resnet50_fpn_v2\) fixes it to 'gn'"),
        ({"anchor_scale": 8.0}, r"teacher\.anchor_scale = 8\.0: .* fixes it to 4\.0"),
        (
            {"checkpoint": "t.pt"},
            r"teacher\.checkpoint = 't\.pt': give teacher\.weights or teacher\.checkpoint, not both",
        ),
        (
            {"backbone_weights": "IMAGENET1K_V1"},
            r"teacher\.backbone_weights = 'IMAGENET1K_V1': .* holds the whole detector",
        ),
        ({"norm": "frozen_bn"}, r"teacher\.norm = 'frozen_bn': .* picks its own norm layers"),
    ],
)
def test_bad_torchvision_teachers_are_named(tmp_path: Path, teacher: dict, match: str) -> None:
    path = write(tmp_path, {"teacher": {**TV_RETINANET, **teacher}})
    with pytest.raises(ConfigError, match=rf"c\.yaml: {match}"):
        load_config(path)


def test_torchvision_teacher_sections_describe_their_model() -> None:
    from drkd.config.schema import TORCHVISION_DETECTORS

    ok = config_from_dict({"teacher": TV_RETINANET})
    assert ok.teacher.weights == TV_RETINANET["weights"] and config_from_dict(ok.to_dict()) == ok
    v1 = {**TV_RETINANET, "head_norm": "none", "weights": "RetinaNet_ResNet50_FPN_Weights.COCO_V1"}
    assert config_from_dict({"teacher": v1}).teacher.head_norm == "none"
    frcnn = {"arch": "fasterrcnn", "backbone": "resnet50", "fpn_channels": 256, "anchor_scale": 8.0}
    frcnn_v1 = {**frcnn, "weights": "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"}
    config_from_dict({"student": {"arch": "fasterrcnn"}, "teacher": frcnn_v1})
    with pytest.raises(
        ConfigError, match=r"teacher\.anchor_scale = 4\.0: .*fasterrcnn_resnet50_fpn\) fixes it to 8\.0"
    ):
        config_from_dict({"teacher": {**frcnn_v1, "anchor_scale": 4.0}})
    # FCOS: drkd ignores head_norm and anchor_scale for it, so they are not checked
    fcos = {"arch": "fcos", "backbone": "resnet50", "fpn_channels": 256, "weights": "FCOS_ResNet50_FPN_Weights.COCO_V1"}
    assert config_from_dict({"teacher": {**fcos, "head_norm": "gn", "anchor_scale": 2.0}}).teacher.arch == "fcos"
    # every listed model fits its own fixed fields
    for name, model in TORCHVISION_DETECTORS.items():
        config_from_dict({"teacher": {**model.fixed(), "weights": name}})
    # the teacher's: a student is initialised from backbone_weights or a checkpoint
    with pytest.raises(ConfigError, match=r"student\.weights = .*are for the teacher"):
        config_from_dict({"student": TV_RETINANET, "distill": {"method": "none"}})
    # a dotted override can switch an existing teacher to torchvision's weights
    switched = apply_overrides(config_from_dict({"teacher": {}}), {f"teacher.{k}": v for k, v in TV_RETINANET.items()})
    assert switched.teacher.weights == TV_RETINANET["weights"]


def test_tiny_configs_are_the_presets() -> None:
    from drkd.config.presets import tiny_student_config, tiny_teacher_config

    backbone = "results/cache/backbone_resnet18/backbone.pt"  # where `drkd pretrain` writes it
    teacher = load_config(REPO / "configs" / "tiny_teacher.yaml")
    preset = tiny_teacher_config(backbone_checkpoint=backbone)
    assert teacher.train.output_dir == "results/cache/teacher_one_stage_pretrained"  # the default teacher's cache
    preset.train.output_dir = teacher.train.output_dir
    assert teacher.student == preset.student and teacher.train == preset.train and teacher.data == preset.data
    drkd = load_config(REPO / "configs" / "tiny_drkd.yaml")
    expected = tiny_student_config(method="drkd", backbone_checkpoint=backbone)
    assert drkd.teacher is not None and expected.teacher is not None
    assert drkd.teacher.checkpoint == f"{teacher.train.output_dir}/checkpoint.pt"
    expected.teacher.checkpoint = drkd.teacher.checkpoint
    expected.train.output_dir = drkd.train.output_dir
    assert drkd == expected
    baseline = load_config(REPO / "configs" / "tiny_baseline.yaml")
    expected = tiny_student_config(method="none", backbone_checkpoint=backbone)
    expected.train.output_dir = baseline.train.output_dir
    assert baseline.student == expected.student and baseline.train == expected.train and baseline.data == expected.data


def test_weight_scale_multiplies_the_chosen_methods_weights() -> None:
    from drkd.distill.registry import build_distiller

    for method, params, expected in (
        ("nld", {}, {"loss_at": 0.0004 * 0.5, "loss_am": 0.02 * 0.5, "loss_nld": 0.0004 * 0.5}),
        ("fitnet", {"weight": 2.0}, {"loss_fitnet": 1.0}),
        ("drkd", {}, {"loss_pr": 0.002, "loss_ir": 0.002, "loss_ins": 0.003}),
    ):
        values = {"teacher": {}, "distill": {"method": method, "weight_scale": {method: 0.5, "mkd": 100.0}}}
        if params:
            values["distill"][method] = params
        weights = build_distiller(config_from_dict(values), 16, 16, 5).loss_weights
        assert weights == pytest.approx(expected), method


def test_weight_scale_per_framework_follows_the_students_detector(tmp_path: Path) -> None:
    from drkd.distill.registry import build_distiller

    scale = {"fitnet": {"one_stage": 0.5, "two_stage": 0.25}, "nld": {"two_stage": 0.1}}
    for arch, factors in (("retinanet", {"fitnet": 0.5, "nld": 1.0}), ("fasterrcnn", {"fitnet": 0.25, "nld": 0.1})):
        for method, factor in factors.items():
            values = {"student": {"arch": arch}, "teacher": {"arch": arch}, "distill": {"method": method}}
            plain = build_distiller(config_from_dict(values), 16, 16, 5).loss_weights
            values["distill"]["weight_scale"] = scale
            cfg = load_config(write(tmp_path, values))  # the file form reads the nested entries
            assert config_from_dict(cfg.to_dict()) == cfg
            scaled = build_distiller(cfg, 16, 16, 5).loss_weights
            assert scaled == pytest.approx({k: w * factor for k, w in plain.items()}), (arch, method)


def test_the_presets_scale_each_peer_per_framework() -> None:
    """The embedded default's factors differ by framework (bench/loss_balance.py); a preset of either
    framework must get its own, and DRKD none."""
    from drkd.config.presets import tiny_student_config, tiny_weight_scale
    from drkd.distill.registry import build_distiller

    scales = tiny_weight_scale()
    assert "drkd" not in scales and all(set(s) == {"one_stage", "two_stage"} for s in scales.values())
    for framework in ("one_stage", "two_stage"):
        cfg = tiny_student_config(framework, "fitnet")
        scaled = build_distiller(cfg, 128, 64, 5).loss_weights["loss_fitnet"]
        cfg.distill.weight_scale = {}
        plain = build_distiller(cfg, 128, 64, 5).loss_weights["loss_fitnet"]
        assert scaled == pytest.approx(plain * scales["fitnet"][framework]), framework


def test_file_form_holds_the_selected_method_and_changed_sections_only() -> None:
    """So a process that has not registered some other method (a plugin) still reads the config."""
    cfg = config_from_dict({"teacher": {}, "distill": {"method": "drkd", "nld": {"alpha": 0.5}}})
    sections = set(cfg.to_dict()["distill"]) - {"method", "weight_scale", "allow_untrained_teacher"}
    assert sections == {"drkd", "nld"}  # nld differs from its defaults, mkd and fitnet do not
    assert config_from_dict(cfg.to_dict()) == cfg
    # a section the file form left out can still be overridden by a dotted key
    changed = apply_overrides(cfg, {"distill.mkd.alpha": 0.25, "distill.method": "mkd"})
    assert changed.distill.mkd.alpha == 0.25 and changed.distill.method == "mkd"


def test_switch_checks_apply_to_the_selected_method_only() -> None:
    off = {"pr": False, "ir": False, "ins": False}
    baseline = config_from_dict({"teacher": {}, "distill": {"method": "none", "drkd": off}})
    assert baseline.distill.drkd.pr is False
    with pytest.raises(ConfigError, match=r"distill\.drkd: pr, ir and ins are all off"):
        config_from_dict({"teacher": {}, "distill": {"method": "drkd", "drkd": off}})
    with pytest.raises(ConfigError, match=r"distill\.nld: use_at, use_am and use_nld are all off"):
        config_from_dict(
            {"teacher": {}, "distill": {"method": "nld", "nld": {"use_at": False, "use_am": False, "use_nld": False}}}
        )
    # range checks hold on every section, selected or not
    with pytest.raises(ConfigError, match=r"distill\.nld\.alpha = -1\.0: must be > 0"):
        config_from_dict({"teacher": {}, "distill": {"method": "drkd", "nld": {"alpha": -1.0}}})


def test_method_sections_are_assigned_through_the_registry_view() -> None:
    from drkd.distill.nld.params import NLDParams
    from drkd.distill.registry import build_distiller

    cfg = config_from_dict({"teacher": {}, "distill": {"method": "nld"}})
    cfg.distill.nld = NLDParams(alpha=1.0)
    assert cfg.distill.params["nld"].alpha == 1.0 and cfg.to_dict()["distill"]["nld"]["alpha"] == 1.0
    assert build_distiller(cfg, 8, 8, 2).loss_weights["loss_at"] == 1.0


def test_null_peer_weight_means_its_default() -> None:
    from drkd.distill.registry import build_distiller

    cfg = config_from_dict({"teacher": {}, "distill": {"method": "fitnet", "fitnet": {"weight": None}}})
    assert build_distiller(cfg, 8, 8, 2).loss_weights == {"loss_fitnet": 1.0}


@pytest.mark.parametrize("name", ["none", "method", "weight_scale", "params", "not-an-identifier"])
def test_method_names_that_would_clash_are_refused(name: str) -> None:
    from drkd.config.methods import MethodSpec, register_method
    from drkd.distill.fitnet.params import FitNetParams

    with pytest.raises(ValueError, match=rf"method name '{name}'"):
        register_method(MethodSpec(name, FitNetParams, "x:Y", "X", lambda trial, two_stage: {}))


def test_method_setting_reads_trial_parameters_as_the_tables_hold_them() -> None:
    """The tables hand over each trial's parameters from a DataFrame, where a column some trials lack
    is float (train.seed 0.0) or NaN; the setting must still be rebuilt, and differ with the scale."""
    import json

    from drkd.analysis.paper_tables.settings import base_config, method_setting, student_config
    from drkd.config.presets import tiny_student_config

    base = base_config(tiny_student_config("two_stage", "fitnet").to_dict())
    trial = {"cell": "fitnet", "train.seed": 2.0, "student.arch": "fasterrcnn", "distill.drkd.pr": float("nan")}
    setting = json.loads(method_setting(student_config(base, trial)) or "{}")
    assert setting["weight_scale"] == pytest.approx(0.097)
    assert method_setting(student_config(base, {**trial, "distill.method": "none"})) is None
    assert method_setting(student_config(None, trial)) is None


def test_training_budget_is_what_the_trial_trained_for_whatever_its_method() -> None:
    """Runs that differ in epochs (a trial override) or training images (the base config) have
    different budgets; the seed and the method do not change it; teachers have none."""
    import json

    from drkd.analysis.paper_tables.settings import base_config, student_config, training_budget
    from drkd.config.presets import tiny_student_config

    file_form = tiny_student_config("one_stage", "drkd").to_dict()
    base = base_config(file_form)
    trial = {"cell": "drkd", "role": "student", "train.epochs": 12.0, "train.seed": 0.0}
    budget = json.loads(training_budget(student_config(base, trial)) or "{}")
    assert budget == {"epochs": 12, "train_images": None, "batch_size": 8, "image_size": [160, 160]}
    assert training_budget(
        student_config(base, {**trial, "train.seed": 3.0, "distill.method": "none"})
    ) == training_budget(student_config(base, trial))
    assert json.loads(training_budget(student_config(base, {**trial, "train.epochs": 6.0})) or "{}")["epochs"] == 6
    file_form["data"]["train_limit"] = 400
    assert json.loads(training_budget(student_config(base_config(file_form), trial)) or "{}")["train_images"] == 400
    assert training_budget(student_config(base, {**trial, "role": "teacher"})) is None
    assert training_budget(student_config(None, trial)) is None
