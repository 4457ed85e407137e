import math

import pytest
import torch

from drkd.distill.base import Distiller
from drkd.distill.drkd.distiller import DRKDDistiller
from drkd.distill.drkd.params import INSTANCE_SIZES, paper_lambdas, search_space

IMAGE = (32, 32)


def make_batch(teacher_channels=6, student_channels=4, counts=(3, 1), seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    sizes = (16, 8, 4)
    t = [torch.randn(len(counts), teacher_channels, n, n, generator=g, requires_grad=requires_grad) for n in sizes]
    s = [torch.randn(len(counts), student_channels, n, n, generator=g, requires_grad=requires_grad) for n in sizes]
    boxes = []
    for n in counts:
        xy = torch.rand(n, 2, generator=g) * 20
        boxes.append(torch.cat([xy, xy + 2 + torch.rand(n, 2, generator=g) * 10], dim=1))
    return t, s, boxes


def test_paper_lambdas():
    assert paper_lambdas(False) == (0.004, 0.004, 0.006)
    two = paper_lambdas(True)
    assert two == pytest.approx((0.001, 0.004, 0.0018))


@pytest.mark.parametrize("two_stage", [False, True])
def test_search_space(two_stage: bool) -> None:
    """Over 200 random draws (real Optuna): at least one term on (INS forced where PR and IR are
    off), a λ exactly for each term that is on, log-uniform within 1/8-8x the paper's value of
    that framework, the instance size only where IR or INS pools instances, the relation filter
    only where IR is on."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    lambdas = dict(zip(("pr", "ir", "ins"), paper_lambdas(two_stage)))
    seen = set()
    for _ in range(200):
        trial = study.ask()
        fixed = search_space(trial, two_stage)
        p = trial.params
        pr, ir = p["distill.drkd.pr"], p["distill.drkd.ir"]
        assert ("distill.drkd.ins" in p) == (pr or ir)
        on = {"pr": pr, "ir": ir, "ins": p.get("distill.drkd.ins", True)}
        assert any(on.values())
        assert fixed == ({} if on["pr"] or on["ir"] else {"distill.drkd.ins": True})
        for term, paper in lambdas.items():
            key = f"distill.drkd.lambda_{term}"
            assert (key in trial.params) == on[term]
            if on[term]:
                assert paper / 8 <= trial.params[key] <= paper * 8
        assert ("distill.drkd.instance_size" in trial.params) == (on["ir"] or on["ins"])
        assert trial.params.get("distill.drkd.instance_size", INSTANCE_SIZES[0]) in INSTANCE_SIZES
        assert ("distill.drkd.relation_filter" in trial.params) == on["ir"]
        seen.add(tuple(on.values()))
        study.tell(trial, 0.0)
    assert len(seen) == 7  # every combination of switches with at least one term on was drawn


def test_is_a_distiller_with_all_terms():
    torch.manual_seed(0)
    d = DRKDDistiller(6, 4, 3)
    assert isinstance(d, Distiller)
    t, s, boxes = make_batch()
    losses = d(t, s, boxes, IMAGE)
    assert set(losses) == {"loss_pr", "loss_ir", "loss_ins"}
    assert d.loss_weights == {"loss_pr": 0.004, "loss_ir": 0.004, "loss_ins": 0.006}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    expected = sum(d.loss_weights[k] * v for k, v in losses.items())
    assert d.weighted_total(losses).item() == pytest.approx(expected.item())


@pytest.mark.parametrize(
    "switches, keys",
    [
        ({"use_ir": False, "use_ins": False}, {"loss_pr"}),
        ({"use_pr": False, "use_ins": False}, {"loss_ir"}),
        ({"use_pr": False, "use_ir": False}, {"loss_ins"}),
        ({"use_ins": False}, {"loss_pr", "loss_ir"}),
    ],
)
def test_builds_only_enabled_parts(switches, keys):
    d = DRKDDistiller(6, 4, 3, **switches)
    t, s, boxes = make_batch()
    assert set(d(t, s, boxes, IMAGE)) == keys == set(d.loss_weights)
    built = {name for name in ("pr", "ir", "ins") if getattr(d, name) is not None}
    assert built == {k[len("loss_") :] for k in keys}
    prefixes = {name.split(".")[0] for name, _ in d.named_parameters()}
    assert prefixes == built


def test_terms_match_standalone_modules():
    torch.manual_seed(1)
    d = DRKDDistiller(
        6,
        4,
        3,
        lambda_pr=0.1,
        lambda_ir=0.2,
        lambda_ins=0.3,
        instance_levels=(1, 2),
        instance_size=5,
        distance="squared",
    )
    t, s, boxes = make_batch()
    losses = d(t, s, boxes, IMAGE)
    assert d.loss_weights == {"loss_pr": 0.1, "loss_ir": 0.2, "loss_ins": 0.3}
    assert losses["loss_pr"].item() == pytest.approx(d.pr(t, s).item())
    assert losses["loss_ir"].item() == pytest.approx(d.ir(t, s, boxes, IMAGE).item())
    assert losses["loss_ins"].item() == pytest.approx(d.ins(t, s, boxes, IMAGE).item())
    assert d.ir.levels == d.ins.levels == (1, 2) and d.ir.instance_size == d.ins.instance_size == 5
    assert d.pr.distance == d.ir.distance == d.ins.distance == "squared"


def test_ir_and_ins_share_one_roi_align_and_get_the_gradients_they_get_apart():
    torch.manual_seed(5)
    d = DRKDDistiller(6, 4, 3, instance_levels=(0, 2))
    pooled = []
    for loss in (d.ir, d.ins):
        pool = loss.instances

        def counting(feat, boxes, shape, pool=pool):
            pooled.append(feat.shape)
            return pool(feat, boxes, shape)

        loss.instances = counting
    t, s, boxes = make_batch(counts=(3, 0), requires_grad=True)
    together = d(t, s, boxes, IMAGE)
    assert len(pooled) == 4  # 2 levels x (teacher, student), once for both losses
    d.weighted_total(together).backward()
    shared_grads = [x.grad.clone() for x in s]
    for x in s:
        x.grad = None
    apart = {"loss_pr": d.pr(t, s), "loss_ir": d.ir(t, s, boxes, IMAGE), "loss_ins": d.ins(t, s, boxes, IMAGE)}
    assert len(pooled) == 12  # each loss on its own pools them again
    assert all(together[k].item() == pytest.approx(apart[k].item(), rel=1e-6) for k in apart)
    d.weighted_total(apart).backward()
    assert all(torch.allclose(a, x.grad, rtol=1e-5, atol=1e-8) for a, x in zip(shared_grads, s))


def test_zero_when_student_equals_teacher():
    torch.manual_seed(2)
    d = DRKDDistiller(4, 4, 3)
    d.pr.adapters.set_identity()
    for adapter in d.ins.adapters:
        adapter.set_identity()
    # the teacher side has no filter (teacher_filter "identity"); the student's is 1 until trained
    missing, unexpected = d.ir.student_relation.load_state_dict(d.ir.teacher_relation.state_dict(), strict=False)
    assert not unexpected and missing and all(".filter." in key for key in missing)
    t, _, boxes = make_batch(4, 4)
    s = [x.clone().requires_grad_(True) for x in t]
    losses = d(t, s, boxes, IMAGE)
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for v in losses.values())
    d.weighted_total(losses).backward()
    assert all(torch.isfinite(x.grad).all() for x in s)


def test_gradients_reach_student_and_trainable_modules_only():
    torch.manual_seed(3)
    d = DRKDDistiller(6, 4, 3)
    t, s, boxes = make_batch(requires_grad=True)
    d.weighted_total(d(t, s, boxes, IMAGE)).backward()
    assert all(x.grad is None for x in t)
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    for name, p in d.named_parameters():
        if name.startswith("ir.teacher_relation"):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad and p.grad is not None, name


def test_empty_batch_backward():
    d = DRKDDistiller(6, 4, 3)
    t, s, boxes = make_batch(counts=(0, 0), requires_grad=True)
    losses = d(t, s, boxes, IMAGE)
    assert losses["loss_ir"].item() == 0.0 and losses["loss_ins"].item() == 0.0
    d.weighted_total(losses).backward()
    assert all(p.grad is not None for p in d.parameters() if p.requires_grad)


def test_switches_reach_the_parts():
    d = DRKDDistiller(6, 4, 3, relation_filter=False, teacher_embed_trainable=True, pixel_module="glore")
    assert d.ir.student_relation[0].filter is None
    assert all(p.requires_grad for p in d.ir.teacher_relation.parameters())
    assert "ir.teacher_relation.0.g1.weight" in DRKDDistiller(6, 4, 3).state_dict()


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"teacher_channels": 0}, "teacher_channels"),
        ({"student_channels": -1}, "student_channels"),
        ({"num_levels": 0}, "num_levels"),
        ({"lambda_pr": -1.0}, "lambda_pr.*-1.0"),
        ({"lambda_ir": math.nan}, "lambda_ir.*nan"),
        ({"lambda_ins": "0.1"}, "lambda_ins"),
        ({"instance_size": 2}, "instance_size.*2"),
        ({"instance_levels": (0, 3)}, r"instance_levels.*\(0, 3\)"),
        ({"instance_levels": ()}, "instance_levels"),
        ({"pixel_module": "gcn"}, "pixel_module.*'gcn'"),
        ({"distance": "l1"}, "distance.*'l1'"),
        ({"use_pr": False, "use_ir": False, "use_ins": False}, "use_pr"),
    ],
)
def test_validation(kwargs, needle):
    args = {"teacher_channels": 6, "student_channels": 4, "num_levels": 3}
    args.update(kwargs)
    positional = [args.pop(k) for k in ("teacher_channels", "student_channels", "num_levels")]
    with pytest.raises(ValueError, match=needle):
        DRKDDistiller(*positional, **args)


def test_forward_shape_errors():
    d = DRKDDistiller(6, 4, 3)
    t, s, boxes = make_batch()
    with pytest.raises(ValueError, match="levels"):
        d(t[:2], s[:2], boxes, IMAGE)
    with pytest.raises(ValueError, match="boxes"):
        d(t, s, boxes[:1], IMAGE)
