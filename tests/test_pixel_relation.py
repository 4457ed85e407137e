import pytest
import torch
from torch import nn

from drkd.distill.drkd import pixel_relation
from drkd.distill.drkd.glore import GloRe
from drkd.distill.drkd.pixel_relation import PixelRelationLoss, build_relation_module


def _feats(channels, batch=2, sizes=((6, 6), (3, 3)), requires_grad=False):
    return [torch.randn(batch, channels, h, w, requires_grad=requires_grad) for h, w in sizes]


@pytest.mark.parametrize("distance", ["euclidean", "squared"])
def test_zero_when_student_equals_teacher_at_init(distance):
    torch.manual_seed(0)
    loss = PixelRelationLoss(4, 4, 2, distance=distance)
    loss.adapters.set_identity()
    t = _feats(4)
    assert loss(t, [x.clone() for x in t]).item() == 0.0


def test_zero_with_active_glore_and_shared_weights():
    torch.manual_seed(1)
    loss = PixelRelationLoss(16, 16, 2)
    loss.adapters.set_identity()
    with torch.no_grad():
        for unit in loss.teacher_relation:
            unit.blocker.weight.fill_(0.7)
    loss.student_relation.load_state_dict(loss.teacher_relation.state_dict())
    t = _feats(16)
    assert not torch.equal(loss.teacher_relation[0](t[0]), t[0])  # φ is not the identity here
    assert loss(t, [x.clone() for x in t]).item() == pytest.approx(0.0, abs=1e-6)


def test_exact_value_identity_glore_and_adapter():
    loss = PixelRelationLoss(1, 1, 2)  # zero-init BN: φ = identity on both sides
    loss.adapters.set_identity()
    t = [torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 1)]
    s = [torch.tensor([[[[3.0, 4.0]]], [[[0.0, 0.0]]]]), torch.tensor([[[[1.0]]], [[[2.0]]]])]
    # level 0: per-image norms 5, 0 -> 2.5; level 1: 1, 2 -> 1.5; mean over levels = 2.0
    assert loss(t, s).item() == pytest.approx(2.0)
    loss.distance = "squared"
    # level 0: 25, 0 -> 12.5; level 1: 1, 4 -> 2.5; mean = 7.5
    assert loss(t, s).item() == pytest.approx(7.5)


def test_adapter_acts_on_student_side_after_relation_module():
    loss = PixelRelationLoss(1, 1, 1)
    with torch.no_grad():
        loss.adapters.adapters[0].conv.weight.fill_(2.0)
        loss.adapters.adapters[0].conv.bias.fill_(1.0)
    t = [torch.tensor([[[[1.0, 1.0]]]])]
    s = [torch.tensor([[[[3.0, 0.0]]]])]
    # f(φ(s)) = 2s + 1 = [7, 1]; ||[1, 1] − [7, 1]|| = 6
    assert loss(t, s).item() == pytest.approx(6.0)
    mixed = PixelRelationLoss(5, 3, 1)
    assert mixed.student_relation[0].state.in_channels == 3
    assert mixed.teacher_relation[0].state.in_channels == 5
    out = mixed(_feats(5, sizes=((4, 4),)), _feats(3, sizes=((4, 4),)))
    assert out.dim() == 0 and torch.isfinite(out)


def test_average_over_images_not_sum():
    torch.manual_seed(2)
    loss = PixelRelationLoss(3, 2, 2)
    t, s = _feats(3), _feats(2)
    doubled = loss([torch.cat([x, x]) for x in t], [torch.cat([x, x]) for x in s])
    assert doubled.item() == pytest.approx(loss(t, s).item(), rel=1e-5)


def test_gradients_reach_student_and_modules_never_teacher():
    torch.manual_seed(3)
    loss = PixelRelationLoss(16, 12, 2)
    with torch.no_grad():
        for unit in list(loss.teacher_relation) + list(loss.student_relation):
            unit.blocker.weight.fill_(0.5)
    t = _feats(16, requires_grad=True)
    s = _feats(12, requires_grad=True)
    loss(t, s).backward()
    assert all(x.grad is None for x in t)
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    assert loss.teacher_relation[0].blocker.weight.grad.abs().sum() > 0
    assert loss.student_relation[0].blocker.weight.grad.abs().sum() > 0
    assert loss.adapters.adapters[1].conv.weight.grad.abs().sum() > 0


def test_euclidean_gradient_finite_at_zero_distance():
    loss = PixelRelationLoss(2, 2, 1)
    loss.adapters.set_identity()
    t = _feats(2, sizes=((3, 3),))
    s = [t[0].clone().requires_grad_(True)]
    loss(t, s).backward()
    assert torch.isfinite(s[0].grad).all()


def test_factory_and_errors():
    assert isinstance(build_relation_module("glore", 8), GloRe)
    with pytest.raises(ValueError, match="'nope'"):
        PixelRelationLoss(4, 4, 1, relation_module="nope")
    with pytest.raises(ValueError, match="'l1'"):
        PixelRelationLoss(4, 4, 1, distance="l1")
    with pytest.raises(ValueError, match="num_levels"):
        PixelRelationLoss(4, 4, 0)
    loss = PixelRelationLoss(4, 4, 2)
    with pytest.raises(ValueError, match="levels"):
        loss(_feats(4, sizes=((2, 2),)), _feats(4, sizes=((2, 2),)))


def test_factory_is_extensible(monkeypatch):
    monkeypatch.setitem(pixel_relation.PIXEL_RELATION_MODULES, "identity", lambda c: nn.Identity())
    loss = PixelRelationLoss(2, 2, 1, relation_module="identity")
    loss.adapters.set_identity()
    t = [torch.ones(1, 2, 2, 2)]
    assert loss(t, [torch.zeros(1, 2, 2, 2)]).item() == pytest.approx(8**0.5)


def _train_pr(loss, t, s, steps=20):
    opt = torch.optim.Adam([s] + [p for p in loss.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss([t], [s]).backward()
        opt.step()


@pytest.mark.parametrize("module", ["glore", "non_local"])
def test_frozen_teacher_module_keeps_its_target_and_is_not_the_identity(module):
    torch.manual_seed(11)
    t = torch.randn(2, 8, 6, 6)
    s = torch.randn(2, 8, 6, 6, requires_grad=True)
    frozen = PixelRelationLoss(8, 8, 1, relation_module=module, teacher_module="frozen")
    trainable = PixelRelationLoss(8, 8, 1, relation_module=module)
    assert not any(p.requires_grad for p in frozen.teacher_relation.parameters())
    assert all(p.requires_grad for p in trainable.teacher_relation.parameters())
    with torch.no_grad():
        target_frozen, target_trainable = frozen.teacher_relation[0](t), trainable.teacher_relation[0](t)
    assert (target_frozen - t).abs().max() > 0.1  # γ = 1: a fixed random relation unit, not φ_t = identity
    torch.testing.assert_close(target_trainable, t)  # γ = 0 at init: the identity
    _train_pr(frozen, t, s.detach().clone().requires_grad_(True))
    _train_pr(trainable, t, s.detach().clone().requires_grad_(True))
    with torch.no_grad():
        torch.testing.assert_close(frozen.teacher_relation[0](t), target_frozen)
        assert (trainable.teacher_relation[0](t) - target_trainable).abs().max() > 1e-3  # the target moved


def test_bad_teacher_module():
    with pytest.raises(ValueError, match="teacher_module must be one of"):
        PixelRelationLoss(8, 8, 1, teacher_module="ema")
