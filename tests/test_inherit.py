"""student.init_from_teacher: the student starts from the trained teacher's neck (and heads)."""

from __future__ import annotations

import pytest
import torch

from drkd.config import ConfigError, DataConfig, DetectorConfig, validate
from drkd.models.detectors import build_detector
from drkd.models.inherit import inherit_from_teacher, inherited_keys
from drkd.train.checkpoint import load_checkpoint
from drkd.train.job import build_models, run_training
from drkd.train.run_context import LocalContext

DATA = DataConfig(min_size=64, max_size=64)


def _pair(student_arch: str, **teacher_changes) -> tuple[torch.nn.Module, torch.nn.Module]:
    det = dict(arch=student_arch, backbone="resnet18", fpn_channels=32, head_norm="gn")
    torch.manual_seed(0)
    student = build_detector(DetectorConfig(**det), 4, DATA)
    torch.manual_seed(1)
    teacher = build_detector(DetectorConfig(**{**det, **teacher_changes}), 4, DATA)
    return student, teacher


@pytest.mark.parametrize("arch", ["retinanet", "fasterrcnn", "fcos"])
@pytest.mark.parametrize("part", ["neck", "neck_head"])
def test_the_inherited_part_is_the_teachers_and_the_rest_stays_the_students(arch: str, part: str) -> None:
    student, teacher = _pair(arch)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    copied = inherit_from_teacher(student, teacher, part)
    after, theirs = student.state_dict(), teacher.state_dict()
    assert copied == inherited_keys(before, part)
    assert all(k.startswith("backbone.fpn.") for k in inherited_keys(before, "neck"))
    heads = [k for k in before if not k.startswith("backbone.")]
    assert heads, "the detector has head tensors outside backbone."
    for k in before:
        if k in copied:
            assert torch.equal(after[k], theirs[k]), k
        else:
            assert torch.equal(after[k], before[k]), k
    # the neck is always inherited; the heads only with neck_head; the backbone body never
    assert any(k.startswith("backbone.fpn.") for k in copied)
    assert all(k in copied for k in heads) == (part == "neck_head")
    assert not any(k.startswith("backbone.body.") for k in copied)
    changed_params = [n for n, p in student.named_parameters() if not torch.equal(p, before[n])]
    assert changed_params and all(n in copied for n in changed_params)  # the parameters themselves moved


def test_none_copies_nothing() -> None:
    student, teacher = _pair("retinanet")
    before = {k: v.clone() for k, v in student.state_dict().items()}
    assert inherit_from_teacher(student, teacher, "none") == []
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())


@pytest.mark.parametrize(
    ("part", "teacher_changes", "says"),
    [
        ("neck", {"fpn_channels": 48}, "shapes differ"),
        ("neck_head", {"head_norm": "none"}, "not in the teacher"),
        ("neck_head", {"arch": "fcos"}, "not in the teacher"),
    ],
)
def test_a_teacher_of_other_shapes_is_a_clear_error(part: str, teacher_changes: dict, says: str) -> None:
    student, teacher = _pair("retinanet", **teacher_changes)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises(ConfigError, match=f"student.init_from_teacher = '{part}'.*{says}"):
        inherit_from_teacher(student, teacher, part)
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())  # nothing half-copied


def test_other_class_counts_are_a_clear_error_for_the_heads_only() -> None:
    det = DetectorConfig(arch="retinanet", backbone="resnet18", fpn_channels=32, head_norm="gn")
    student, teacher = build_detector(det, 4, DATA), build_detector(det, 6, DATA)
    inherit_from_teacher(student, teacher, "neck")
    with pytest.raises(ConfigError, match="shapes differ.*cls_logits"):
        inherit_from_teacher(student, teacher, "neck_head")


def test_config_checks(tiny_config, teacher_ckpt: str) -> None:
    cfg = tiny_config("drkd", teacher_ckpt=teacher_ckpt)
    cfg.student.init_from_teacher = "neck_head"
    with pytest.raises(ConfigError, match=r"student.fpn_channels = 32 but teacher.fpn_channels = 48"):
        validate(cfg)
    cfg.student.init_from_teacher = "all"
    with pytest.raises(ConfigError, match="student.init_from_teacher"):
        validate(cfg)
    cfg.student.init_from_teacher = "none"
    cfg.teacher.init_from_teacher = "neck"
    with pytest.raises(ConfigError, match="only the student inherits"):
        validate(cfg)
    alone = tiny_config("none")
    alone.student.init_from_teacher = "neck"
    with pytest.raises(ConfigError, match="needs a teacher section"):
        validate(alone)


@pytest.mark.parametrize("method", ["drkd", "none"])
def test_training_starts_from_the_teachers_checkpoint(tiny_config, teacher_ckpt: str, method: str) -> None:
    """What run_training builds: the student's neck and heads are the checkpoint's, the backbone its own;
    with method none (inheriting alone) the teacher is dropped after the copy."""
    cfg = tiny_config("drkd", teacher_ckpt=teacher_ckpt)
    cfg.distill.method = method
    cfg.student.fpn_channels = 48  # the teacher's width
    cfg.student.init_from_teacher = "neck_head"
    validate(cfg)
    saved = load_checkpoint(teacher_ckpt)["student"]
    model = build_models(cfg, 7)
    state = model.student.state_dict()
    assert (model.teacher is None) == (method == "none")
    for k in inherited_keys(state, "neck_head"):
        assert torch.equal(state[k], saved[k]), k
    body = [k for k in state if k.startswith("backbone.body.") and state[k].is_floating_point()]
    assert any(not torch.equal(state[k], saved[k]) for k in body)
    cfg.train.epochs = 1
    metrics = run_training(cfg, LocalContext(cfg.train.output_dir))
    assert metrics["epoch"] == 1 and metrics["mAP"] >= 0


def test_table6_runs_every_method_again_inheriting_where_shapes_allow() -> None:
    from pathlib import Path

    from drkd.analysis.paper_tables import table6
    from drkd.config import load_config
    from drkd.config.methods import method_names
    from drkd.config.presets import tiny_student_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    coco = load_config(configs / "coco_retinanet.yaml")  # R50 student, RX101 teacher, both 256-wide FPNs
    assert table6.inheriting_blocked(coco) is None
    cells = table6.grid(coco, {})
    inheriting = [c for c in cells if c.get("student.init_from_teacher") == "neck_head"]
    assert len(cells) == 2 * len(inheriting) == 2 * 2 * len(method_names(with_none=True))
    assert {c["distill.method"] for c in inheriting} == set(method_names(with_none=True))
    for cell in inheriting:  # each grid cell is a valid config (archs set alike per framework)
        cfg = coco.copy()
        cfg.student.arch = cfg.teacher.arch = cell["student.arch"]
        cfg.student.init_from_teacher = "neck_head"
        cfg.validate()
    tiny = tiny_student_config(
        "one_stage", "drkd"
    )  # the embedded default: the teacher's FPN is 128 wide, the student's 64
    assert "fpn_channels = 64 but teacher.fpn_channels = 128" in table6.inheriting_blocked(tiny)
    assert not any("student.init_from_teacher" in c for c in table6.grid(tiny, {}))
