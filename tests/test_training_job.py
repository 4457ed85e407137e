"""The training job end to end on a tiny dataset: metrics, checkpoints, exact resume, failure modes, CLI."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from drkd.cli import main, parse_overrides
from drkd.config import ConfigError, save_config
from drkd.data.coco_eval import METRIC_KEYS
from drkd.train.checkpoint import load_checkpoint
from drkd.train.checkpoint_eval import evaluate_checkpoint
from drkd.train.engine import NonFiniteLossError
from drkd.train.job import build_models, run_training
from drkd.train.run_context import LocalContext


def test_baseline_run_reports_every_epoch(tiny_config) -> None:
    cfg = tiny_config("none")
    ctx = LocalContext(cfg.train.output_dir)
    last = run_training(cfg, ctx)
    history = ctx.history()
    assert [h["epoch"] for h in history] == [1, 2] and history[-1] == json.loads(json.dumps(last))
    assert history[0]["startup_s"] > 0 and "startup_s" not in history[1]  # once, with the first epoch
    assert set(METRIC_KEYS) <= set(last) and {"loss_total", "loss_det", "lr", "epoch_time_s"} <= set(last)
    assert not any(k.startswith("teacher_") for k in last)  # no teacher, no teacher metrics
    state = load_checkpoint(ctx.checkpoint_path)
    assert {"student", "distiller", "optimizer", "scheduler", "scaler", "epoch", "config", "num_classes"} <= set(state)
    assert state["epoch"] == 1


def test_eval_every_skips_evaluation_between_and_never_the_last_epoch(tiny_config) -> None:
    every = tiny_config("none", out="every")
    every.train.epochs = 3
    last_every = run_training(every, LocalContext(every.train.output_dir))
    sparse = tiny_config("none", out="sparse")
    sparse.train.epochs = 3
    sparse.train.eval_every = 2  # after epochs 2 and 3 (the last)
    ctx = LocalContext(sparse.train.output_dir)
    last_sparse = run_training(sparse, ctx)
    evaluated = [h["epoch"] for h in ctx.history() if set(METRIC_KEYS) <= set(h)]
    assert evaluated == [2, 3] and [h["epoch"] for h in ctx.history()] == [1, 2, 3]
    assert not set(METRIC_KEYS) & set(ctx.history()[0]) and "loss_total" in ctx.history()[0]
    # evaluation changes nothing in training: the same weights, so the same final scores
    assert {k: last_sparse[k] for k in METRIC_KEYS} == {k: last_every[k] for k in METRIC_KEYS}
    assert last_sparse["loss_total"] == last_every["loss_total"]
    sparse.train.eval_every = 0
    with pytest.raises(ConfigError, match=r"train\.eval_every = 0: must be > 0"):
        sparse.validate()


def test_drkd_run_has_every_term_and_never_trains_the_teacher(tiny_config, teacher_ckpt: str) -> None:
    cfg = tiny_config("drkd", teacher_ckpt=teacher_ckpt)
    model = build_models(cfg, 7)
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    assert all(not p.requires_grad for p in model.teacher.parameters())
    assert not any(n.startswith("teacher") for n, _ in model.named_parameters())
    model.to(torch.float64)  # moves and casts reach the teacher although it is not a submodule
    assert next(model.teacher.parameters()).dtype == torch.float64
    model.to(torch.float32)
    last = run_training(cfg, LocalContext(cfg.train.output_dir))
    assert {"loss_pr", "loss_ir", "loss_ins"} <= set(last)
    fresh = build_models(cfg, 7)  # teacher reloaded from its checkpoint: unchanged by the run
    for k, v in fresh.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert load_checkpoint(Path(cfg.train.output_dir) / "checkpoint.pt")["distiller"]


def test_resume_gives_the_same_result_as_not_stopping(tiny_config, teacher_ckpt: str) -> None:
    straight = tiny_config("drkd", teacher_ckpt=teacher_ckpt, out="straight")
    run_training(straight, LocalContext(straight.train.output_dir))

    stopped = tiny_config("drkd", teacher_ckpt=teacher_ckpt, out="stopped")
    with pytest.raises(_Crash):
        run_training(stopped, _StopAfter(LocalContext(stopped.train.output_dir), 1))
    resumed = LocalContext(stopped.train.output_dir, resume=True)
    run_training(stopped, resumed)

    a = load_checkpoint(Path(straight.train.output_dir) / "checkpoint.pt")
    b = load_checkpoint(Path(stopped.train.output_dir) / "checkpoint.pt")
    for part in ("student", "distiller"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    ha, hb = LocalContext(straight.train.output_dir).history(), resumed.history()
    assert [h["mAP"] for h in ha] == [h["mAP"] for h in hb]


class _Crash(RuntimeError):
    pass


class _StopAfter(LocalContext):
    """Simulates a crash: the run dies right after reporting epoch `n`."""

    def __init__(self, inner: LocalContext, n: int) -> None:
        super().__init__(inner.output_dir)
        self.n = n

    def report(self, metrics, state) -> None:
        super().report(metrics, state)
        if metrics["epoch"] == self.n:
            raise _Crash(f"crashed after epoch {self.n}")


def test_crash_keeps_reported_epochs(tiny_config) -> None:
    cfg = tiny_config("none")
    with pytest.raises(_Crash):
        run_training(cfg, _StopAfter(LocalContext(cfg.train.output_dir), 1))
    assert LocalContext(cfg.train.output_dir).history()[-1]["epoch"] == 1


def test_a_diverged_run_ends_with_a_final_report_naming_term_and_iteration(tiny_config, capsys) -> None:
    cfg = tiny_config("none")
    cfg.train.lr = 1e6  # diverges at once
    cfg.train.warmup_iters = 0
    ctx = LocalContext(cfg.train.output_dir)
    last = run_training(cfg, ctx)
    assert last["diverged"] == 1.0 and last["epoch"] == 1
    assert re.fullmatch(r"loss_\w+ = (nan|inf|-inf) at epoch 1, iteration \d+: stopping", last["diverged_reason"])
    assert all(last[k] == 0.0 for k in METRIC_KEYS)  # a search ranks it last
    assert ctx.history() == [json.loads(json.dumps(last))]
    assert not ctx.checkpoint_path.exists()  # diverged weights are not saved
    # `drkd train` says so and exits non-zero
    save_config(cfg, Path(cfg.train.output_dir).parent / "diverging.yaml")
    code = main(["train", "--config", str(Path(cfg.train.output_dir).parent / "diverging.yaml")])
    assert code == 1 and "the run diverged (loss_" in capsys.readouterr().err


def test_batch_larger_than_dataset_is_a_config_error(tiny_config) -> None:
    cfg = tiny_config("none")
    cfg.data.batch_size = 64
    with pytest.raises(ConfigError, match="data.batch_size = 64"):
        run_training(cfg, LocalContext(cfg.train.output_dir))


def test_cli_train_eval_export(tiny_config, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tiny_config("none")
    cfg.train.epochs = 1
    config_file = save_config(cfg, tmp_path / "c.yaml")
    assert main(["train", "--config", str(config_file), "--output-dir", str(tmp_path / "cli")]) == 0
    trained = json.loads(capsys.readouterr().out.splitlines()[0])
    ckpt = tmp_path / "cli" / "checkpoint.pt"
    assert main(["eval", "--checkpoint", str(ckpt)]) == 0
    evaluated = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert evaluated["mAP"] == pytest.approx(trained["mAP"], abs=1e-3)
    # another validation split of the same generator, generated where it is missing: the same 8
    # images give the same metrics; 12 images (the 8 and 4 more) are evaluated as 12
    regenerate = ["data.synthetic=true", "data.synthetic_num_train=16", "data.synthetic_image_size=128"]
    for n in (8, 12):
        wide = tmp_path / f"val{n}"
        sets = [f"data.root={wide}", f"data.synthetic_num_val={n}", *regenerate]
        metrics = evaluate_checkpoint(ckpt, overrides=parse_overrides(sets))
        assert len(json.loads((wide / "annotations" / "instances_val.json").read_text())["images"]) == n
        if n == 8:
            assert metrics == evaluated
    assert set(metrics) == set(evaluated) and all(0 <= v <= 100 for v in metrics.values())
    # only the validation split is read: a root without the training files evaluates the same ...
    val_only = tmp_path / "val_only"
    shutil.copytree(Path(cfg.data.root) / "val", val_only / "val")
    (val_only / "annotations").mkdir()
    val_json = json.loads((Path(cfg.data.root) / "annotations" / "instances_val.json").read_text())
    (val_only / "annotations" / "instances_val.json").write_text(json.dumps(val_json))
    assert evaluate_checkpoint(ckpt, overrides={"data.root": str(val_only)}) == evaluated
    # ... and one whose classes are not the student's is refused, naming the file: the same number
    # of categories under other ids (labels follow ascending ids, so it would score detections
    # against the wrong classes), or one category fewer
    assert load_checkpoint(ckpt)["categories"] == [[c["id"], c["name"]] for c in val_json["categories"]]
    renumbered = copy.deepcopy(val_json)
    new_id = {c["id"]: 100 - c["id"] for c in renumbered["categories"]}  # the order of ids reversed
    for item in renumbered["categories"]:
        item["id"] = new_id[item["id"]]
    for ann in renumbered["annotations"]:
        ann["category_id"] = new_id[ann["category_id"]]
    (val_only / "annotations" / "instances_val.json").write_text(json.dumps(renumbered))
    first = min(val_json["categories"], key=lambda c: c["id"])
    with pytest.raises(ConfigError, match=rf"instances_val.json: class 1 is category .*; .* category {first['id']} "):
        evaluate_checkpoint(ckpt, overrides={"data.root": str(val_only)})
    kept = val_json["categories"][:-1]
    val_json["annotations"] = [a for a in val_json["annotations"] if a["category_id"] in {c["id"] for c in kept}]
    val_json["categories"] = kept
    (val_only / "annotations" / "instances_val.json").write_text(json.dumps(val_json))
    with pytest.raises(ConfigError, match=r"data.val_annotations: .*instances_val.json lists 5 categories; .* for 6"):
        evaluate_checkpoint(ckpt, overrides={"data.root": str(val_only)})
    out = tmp_path / "student.pt"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    exported = torch.load(out, weights_only=True)
    assert not any(k.startswith(("distiller", "teacher")) or k.endswith("num_batches_tracked") for k in exported)
    assert main(["train", "--config", str(config_file), "--set", "distill.drkd.instance_size=2"]) == 2
    assert "distill.drkd.instance_size = 2" in capsys.readouterr().err


@pytest.mark.parametrize(
    "method, terms",
    [
        ("nld", {"loss_at", "loss_am", "loss_nld"}),
        ("mkd", {"loss_fea", "loss_ms", "loss_freq", "loss_align"}),
        ("fitnet", {"loss_fitnet"}),
        ("pkd", {"loss_pkd"}),
        ("cwd", {"loss_cwd"}),
        ("mgd", {"loss_mgd"}),
        ("fgd", {"loss_fg", "loss_bg", "loss_at", "loss_global"}),
    ],
)
def test_peer_methods_train_in_the_same_harness(tiny_config, teacher_ckpt: str, method: str, terms: set[str]) -> None:
    cfg = tiny_config(method, teacher_ckpt=teacher_ckpt)
    cfg.train.epochs = 1
    last = run_training(cfg, LocalContext(cfg.train.output_dir))
    assert terms <= set(last) and all(torch.isfinite(torch.tensor(last[t])) for t in terms)


def test_two_stage_drkd_with_non_local_pixel_module(tiny_config, two_stage_teacher_ckpt: str) -> None:
    cfg = tiny_config("drkd", arch="fasterrcnn", teacher_ckpt=two_stage_teacher_ckpt)
    cfg.distill.drkd.pixel_module = "non_local"
    cfg.train.epochs = 1
    last = run_training(cfg, LocalContext(cfg.train.output_dir))
    assert {"loss_pr", "loss_ir", "loss_ins", "loss_classifier", "loss_objectness"} <= set(last)


def test_teacher_is_evaluated_once_cached_and_reported(tiny_config, teacher_ckpt: str, tmp_path: Path) -> None:
    import json
    import os
    import shutil

    from drkd.data.coco_eval import METRIC_KEYS, coco_metrics
    from drkd.train.engine import predict
    from drkd.train.job import build_datasets, validation_loader
    from drkd.train.teacher_eval import cache_file

    ckpt = tmp_path / "teacher" / "checkpoint.pt"
    ckpt.parent.mkdir()
    shutil.copy(teacher_ckpt, ckpt)

    def run_config(out: str):
        cfg = tiny_config("drkd", teacher_ckpt=str(ckpt), out=out)
        cfg.data.train_limit = 4  # one iteration per epoch: the teacher's evaluation is what is tested
        return cfg

    cfg = run_config("first")
    assert not list(ckpt.parent.glob("*.eval-*.json"))
    run_training(cfg)
    history = LocalContext(cfg.train.output_dir).history()
    # the teacher's metrics, the same in every epoch, equal an evaluation of the teacher by hand
    model = build_models(cfg, 7)
    data = build_datasets(cfg)
    loader, ids = validation_loader(data.val, cfg)
    by_hand = coco_metrics(
        data.val.coco, predict(model.teacher, loader, torch.device("cpu"), data.val.label_to_cat_id), ids
    )
    for row in history:
        for k in METRIC_KEYS:
            assert row[f"teacher_{k}"] == pytest.approx(by_hand[k], abs=1e-9), k
    cached = cache_file(cfg)
    assert (
        cached is not None and cached.parent == ckpt.parent and json.loads(cached.read_text())["mAP"] == by_hand["mAP"]
    )
    # a second run reads the cache instead of evaluating (a marked value comes back) ...
    cached.write_text(json.dumps({**{k: 12.5 for k in METRIC_KEYS}}))
    again = run_config("second")
    assert run_training(again)["teacher_mAP"] == 12.5
    # ... and a changed checkpoint file is evaluated anew
    os.utime(ckpt, ns=(0, 0))
    third = run_config("third")
    assert run_training(third)["teacher_mAP"] == pytest.approx(by_hand["mAP"], abs=1e-9)


def test_teacher_evaluation_key_changes_with_test_proposals_only_where_they_act(tiny_config) -> None:
    """Faster R-CNN's test proposals change its metrics; RetinaNet's key stays as before the fields existed."""
    from drkd.train.teacher_eval import fingerprint

    for arch, acts in (("retinanet", False), ("fasterrcnn", True)):
        cfg = tiny_config(arch=arch)
        cfg.teacher = copy.deepcopy(cfg.student)
        cfg.teacher.rpn_post_nms_top_n_test = cfg.teacher.rpn_pre_nms_top_n_test = 1000  # torchvision's
        before = fingerprint(cfg)
        cfg.teacher.rpn_post_nms_top_n_test = 300
        assert (fingerprint(cfg) != before) is acts, arch
        cfg.teacher.fpn_channels += 8  # any other field always counts
        assert fingerprint(cfg) != before


def test_a_non_finite_step_changes_no_weight() -> None:
    """train_one_epoch reads all terms in one host transfer per step, after backward, before the step:
    a NaN at iteration 1 leaves the weights as iteration 0 left them."""
    from drkd.train.engine import train_one_epoch

    class Quadratic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def forward(self, images, targets):
            loss = (self.w**2).sum() * images[0].sum()
            return loss, {"loss_total": loss, "loss_det": loss.detach() * 0 + 1}

    model = Quadratic()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    loader = [([torch.ones(1)], []), ([torch.full((1,), float("nan"))], [])]
    weights = []
    optimizer.register_step_post_hook(lambda *_: weights.append(model.w.detach().clone()))
    with pytest.raises(NonFiniteLossError, match="loss_total = nan at epoch 1, iteration 1"):
        train_one_epoch(model, optimizer, scheduler, loader, epoch=1, device=torch.device("cpu"))
    assert len(weights) == 1  # the NaN step never reached the optimiser
    torch.testing.assert_close(model.w.detach(), weights[0])
    torch.testing.assert_close(weights[0], torch.full((3,), 0.8))  # w - 0.1 * 2w after the one good step
