import math

import pytest
import torch

from drkd.distill.drkd.instance_loss import check_instance_size
from drkd.distill.drkd.instance_relation import InstanceRelationLoss
from drkd.distill.feature_distance import feature_distance

IMAGE = (8, 8)
# Two boxes well inside the top-left and bottom-right quadrants of an 8×8 stride-1 map: ROI Align
# samples only pixels of one quadrant, so a quadrant-constant map gives exact instance features.
TWO_BOXES = torch.tensor([[0.5, 0.5, 2.5, 2.5], [4.5, 4.5, 6.5, 6.5]])


def quadrant_map(top_left: float, bottom_right: float) -> torch.Tensor:
    feat = torch.zeros(1, 1, 8, 8)
    feat[..., :4, :4] = top_left
    feat[..., 4:, 4:] = bottom_right
    return feat


def set_linear(layer: torch.nn.Linear, weight: float, bias: float) -> None:
    with torch.no_grad():
        layer.weight.fill_(weight)
        layer.bias.fill_(bias)


def col_softmax(m: list[list[float]]) -> torch.Tensor:
    """ψ_ij = exp(M_ij) / Σ_i exp(M_ij), written out."""
    n = len(m)
    return torch.tensor(
        [[math.exp(m[i][j]) / sum(math.exp(m[r][j]) for r in range(n)) for j in range(n)] for i in range(n)]
    )


def hand_loss() -> InstanceRelationLoss:
    loss = InstanceRelationLoss(1, 1, instance_size=1, levels=(0,), embed_dim=1, relation_filter=False)
    set_linear(loss.teacher_relation[0].g1, 1.0, 0.0)
    set_linear(loss.teacher_relation[0].g2, 0.5, 1.0)
    set_linear(loss.student_relation[0].g1, 1.0, 0.0)
    set_linear(loss.student_relation[0].g2, 1.0, 0.0)
    return loss


# Teacher instances x = [1, 2]: q = [1, 2], k = 0.5x + 1 = [1.5, 2] -> M_t = q kᵀ
PSI_T = col_softmax([[1.5, 2.0], [3.0, 4.0]])
# Student instances x = [2, 1]: q = k = [2, 1] -> M_s
PSI_S = col_softmax([[4.0, 2.0], [2.0, 1.0]])


def test_psi_is_softmax_over_first_index():
    loss = hand_loss()
    psi = loss.teacher_relation[0](torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
    assert torch.allclose(psi, PSI_T, atol=1e-6)
    assert torch.allclose(psi.sum(dim=0), torch.ones(2))
    assert not torch.allclose(psi.sum(dim=1), torch.ones(2))


def test_exact_loss_values():
    loss = hand_loss()
    t, s = [quadrant_map(1.0, 2.0)], [quadrant_map(2.0, 1.0)]
    diff = PSI_T - PSI_S
    assert loss(t, s, [TWO_BOXES], IMAGE).item() == pytest.approx(diff.square().sum().sqrt().item(), rel=1e-5)
    loss.distance = "squared"
    assert loss(t, s, [TWO_BOXES], IMAGE).item() == pytest.approx(diff.square().sum().item(), rel=1e-5)
    # f(ψ_s) = 2ψ_s − 0.1
    with torch.no_grad():
        loss.adapters[0].weight.fill_(2.0)
        loss.adapters[0].bias.fill_(-0.1)
    expected = (PSI_T - (2 * PSI_S - 0.1)).square().sum()
    assert loss(t, s, [TWO_BOXES], IMAGE).item() == pytest.approx(expected.item(), rel=1e-5)


def test_images_without_instances_do_not_count():
    loss = hand_loss()
    t = [torch.cat([quadrant_map(1.0, 2.0)] * 3)]
    s = [torch.cat([quadrant_map(2.0, 1.0)] * 3)]
    boxes = [TWO_BOXES, torch.zeros(0, 4), TWO_BOXES]
    single = (PSI_T - PSI_S).square().sum().sqrt().item()
    # images 0 and 2 give `single`, image 1 has no instance: mean over the two that have some
    assert loss(t, s, boxes, IMAGE).item() == pytest.approx(single, rel=1e-5)


def test_filter_weights_enter_before_softmax():
    torch.manual_seed(0)
    loss = InstanceRelationLoss(2, 2, instance_size=1, levels=(0,), embed_dim=3)
    module = loss.student_relation[0]
    with torch.no_grad():
        module.filter.out.weight.normal_()
    x = torch.randn(4, 2, 1, 1)
    q, k = module.g1(x.flatten(1)), module.g2(x.flatten(1))
    w = module.filter(q, k)
    assert not torch.allclose(w, torch.ones_like(w))
    assert torch.allclose(module(x), torch.softmax(w * (q @ k.t()), dim=0), atol=1e-6)


def _random_case(batch_counts, channels_t=4, channels_s=3, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    t = [
        torch.randn(len(batch_counts), channels_t, 16, 16, generator=g, requires_grad=requires_grad),
        torch.randn(len(batch_counts), channels_t, 8, 8, generator=g, requires_grad=requires_grad),
    ]
    s = [
        torch.randn(len(batch_counts), channels_s, 16, 16, generator=g, requires_grad=requires_grad),
        torch.randn(len(batch_counts), channels_s, 8, 8, generator=g, requires_grad=requires_grad),
    ]
    boxes = []
    for n in batch_counts:
        xy = torch.rand(n, 2, generator=g) * 20
        boxes.append(torch.cat([xy, xy + 2 + torch.rand(n, 2, generator=g) * 10], dim=1))
    return t, s, boxes, (32, 32)


def _active_filters(loss, steps=15):
    """Train the loss's modules for a few Adam steps on another batch: the filters then differ from 1,
    as they do in training (no weights written in by hand)."""
    params = [p for p in loss.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=0.05)
    area = loss.instance_size**2
    channels = [side[0].g1.in_features // area for side in (loss.teacher_relation, loss.student_relation)]
    t, s, boxes, shape = _random_case([5, 4], *channels, seed=99)
    for _ in range(steps):
        opt.zero_grad()
        loss(t, s, boxes, shape).backward()
        opt.step()
    for module in loss.student_relation:
        if module.filter is not None:
            w = module.filter(torch.randn(4, module.g1.out_features), torch.randn(4, module.g1.out_features))
            assert not torch.allclose(w, torch.ones_like(w), atol=1e-3)


def test_variable_n_is_mean_over_images_with_instances():
    torch.manual_seed(1)
    loss = InstanceRelationLoss(4, 3)
    _active_filters(loss)
    t, s, boxes, shape = _random_case([3, 0, 5, 1])
    total = loss(t, s, boxes, shape)
    singles = [loss([x[i : i + 1] for x in t], [x[i : i + 1] for x in s], [boxes[i]], shape) for i in (0, 2, 3)]
    assert total.item() == pytest.approx(sum(x.item() for x in singles) / 3, rel=1e-5)


def test_mean_over_levels():
    torch.manual_seed(2)
    both = InstanceRelationLoss(4, 3, levels=(0, 1))
    t, s, boxes, shape = _random_case([4, 2])
    per_level = []
    for index, level in enumerate((0, 1)):
        one = InstanceRelationLoss(4, 3, levels=(level,))
        one.teacher_relation[0].load_state_dict(both.teacher_relation[index].state_dict())
        one.student_relation[0].load_state_dict(both.student_relation[index].state_dict())
        one.adapters[0].load_state_dict(both.adapters[index].state_dict())
        per_level.append(one(t, s, boxes, shape).item())
    assert both(t, s, boxes, shape).item() == pytest.approx(sum(per_level) / 2, rel=1e-5)


def test_permutation_invariant():
    torch.manual_seed(3)
    loss = InstanceRelationLoss(4, 3)
    _active_filters(loss)
    t, s, boxes, shape = _random_case([6, 3])
    permuted = [b[torch.randperm(b.shape[0])] for b in boxes]
    assert loss(t, s, permuted, shape).item() == pytest.approx(loss(t, s, boxes, shape).item(), rel=1e-5)


@pytest.mark.parametrize("distance", ["euclidean", "squared"])
@pytest.mark.parametrize("teacher_filter", ["shared", "random"])
def test_zero_when_student_equals_teacher(distance, teacher_filter):
    torch.manual_seed(4)
    loss = InstanceRelationLoss(4, 4, distance=distance, teacher_filter=teacher_filter)
    _active_filters(loss)
    # the student's g1, g2 (and, with a filter of the teacher's own, the filter) become the teacher's
    loss.student_relation.load_state_dict(loss.teacher_relation.state_dict(), strict=teacher_filter == "random")
    loss.adapters.load_state_dict(InstanceRelationLoss(4, 4).adapters.state_dict())  # f back to the identity
    t, _, boxes, shape = _random_case([5, 2], channels_t=4, channels_s=4)
    s = [x.clone().requires_grad_(True) for x in t]
    out = loss(t, s, boxes, shape)
    assert out.item() == pytest.approx(0.0, abs=1e-6)
    out.backward()
    assert all(torch.isfinite(x.grad).all() for x in s)


def test_gradients_student_and_modules_not_teacher():
    torch.manual_seed(5)
    loss = InstanceRelationLoss(4, 3)
    _active_filters(loss)
    t, s, boxes, shape = _random_case([4, 3], requires_grad=True)
    loss(t, s, boxes, shape).backward()
    assert all(x.grad is None for x in t)
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    assert all(not p.requires_grad and p.grad is None for p in loss.teacher_relation.parameters())
    student = loss.student_relation[0]
    for p in (
        student.g1.weight,
        student.g2.weight,
        student.filter.hidden.weight,
        student.filter.out.weight,
        loss.adapters[0].weight,
        loss.adapters[0].bias,
    ):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_teacher_embeddings_frozen_by_default_but_saved():
    loss = InstanceRelationLoss(4, 3)
    assert not any(p.requires_grad for p in loss.teacher_relation.parameters())
    assert all(p.requires_grad for p in loss.student_relation.parameters())
    assert "teacher_relation.0.g1.weight" in loss.state_dict()
    trainable = InstanceRelationLoss(4, 3, teacher_embed_trainable=True, teacher_filter="random")
    _active_filters(trainable)
    t, s, boxes, shape = _random_case([4, 3])
    trainable(t, s, boxes, shape).backward()
    assert trainable.teacher_relation[0].g1.weight.grad.abs().sum() > 0
    assert trainable.teacher_relation[0].filter.out.weight.grad.abs().sum() > 0


def test_filter_switch_off():
    loss = InstanceRelationLoss(4, 3, relation_filter=False)
    assert loss.teacher_relation[0].filter is None and loss.student_relation[1].filter is None
    with_filter = InstanceRelationLoss(4, 3)
    for name in ("teacher_relation", "student_relation"):
        for off, on in zip(getattr(loss, name), getattr(with_filter, name)):
            off.g1.load_state_dict(on.g1.state_dict())
            off.g2.load_state_dict(on.g2.state_dict())
    t, s, boxes, shape = _random_case([4, 2])
    # a filter at init (w ≡ 1) is the same as no filter
    assert loss(t, s, boxes, shape).item() == pytest.approx(with_filter(t, s, boxes, shape).item(), rel=1e-6)


@pytest.mark.parametrize("counts", [[0, 0], [1, 0], [1, 1], [0, 3]])
def test_zero_and_one_instance_images(counts):
    torch.manual_seed(6)
    loss = InstanceRelationLoss(4, 3)
    t, s, boxes, shape = _random_case(counts, requires_grad=True)
    out = loss(t, s, boxes, shape)
    assert torch.isfinite(out) and out.requires_grad
    out.backward()
    assert all(p.grad is not None for p in loss.parameters() if p.requires_grad)
    if sum(counts) == 0:
        assert out.item() == 0.0


def test_single_instance_value():
    # ψ is the 1×1 matrix [1] on both sides, so L = |1 − (a·1 + b)|.
    loss = InstanceRelationLoss(4, 3)
    with torch.no_grad():
        loss.adapters[0].weight.fill_(0.5)
        loss.adapters[1].bias.fill_(0.25)
    t, s, boxes, shape = _random_case([1])
    assert loss(t, s, boxes, shape).item() == pytest.approx((0.5 + 0.25) / 2)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_instance_sizes(k):
    torch.manual_seed(7)
    loss = InstanceRelationLoss(4, 3, instance_size=k)
    assert loss.student_relation[0].g1.in_features == 3 * k * k
    t, s, boxes, shape = _random_case([3, 2])
    assert torch.isfinite(loss(t, s, boxes, shape))


@pytest.mark.parametrize("bad", [2, 0, 4, "3", True])
def test_bad_instance_size(bad):
    with pytest.raises(ValueError, match="instance_size.*" + repr(bad).replace("'", ".")):
        InstanceRelationLoss(4, 3, instance_size=bad)
    with pytest.raises(ValueError):
        check_instance_size(bad)


def test_bad_args():
    with pytest.raises(ValueError, match="instance_levels"):
        InstanceRelationLoss(4, 3, levels=())
    with pytest.raises(ValueError, match="instance_levels"):
        InstanceRelationLoss(4, 3, levels=(0, 0))
    with pytest.raises(ValueError, match="'cosine'"):
        InstanceRelationLoss(4, 3, distance="cosine")
    loss = InstanceRelationLoss(4, 3, levels=(0, 2))
    t, s, boxes, shape = _random_case([2])
    with pytest.raises(ValueError, match="out of range"):
        loss(t, s, boxes, shape)


def _teacher_psi(loss, t, boxes, shape, shared=None):
    inst = loss.instances(t[0], boxes, shape)[: boxes[0].shape[0]]
    return loss.teacher_relation[0](inst, shared), inst.flatten(1)


def test_teacher_filter_identity_after_training_leaves_psi_t_unfiltered_and_fixed():
    torch.manual_seed(6)
    loss = InstanceRelationLoss(4, 3)  # teacher_filter "identity" is the default
    t, _, boxes, shape = _random_case([5, 2])
    before, _ = _teacher_psi(loss, t, boxes, shape)
    _active_filters(loss)  # the student's filter trains away from 1
    after, x = _teacher_psi(loss, t, boxes, shape)
    teacher = loss.teacher_relation[0]
    assert teacher.filter is None
    torch.testing.assert_close(after, before)
    torch.testing.assert_close(after, torch.softmax(teacher.g1(x) @ teacher.g2(x).t(), dim=0))


def test_teacher_filter_shared_uses_the_trained_student_filter_without_gradient():
    torch.manual_seed(7)
    loss = InstanceRelationLoss(4, 3, teacher_filter="shared")
    _active_filters(loss)
    t, s, boxes, shape = _random_case([5, 2])
    student_filter = loss.student_relation[0].filter
    psi_t, x = _teacher_psi(loss, t, boxes, shape, shared=student_filter)
    teacher = loss.teacher_relation[0]
    q, k = teacher.g1(x), teacher.g2(x)
    unfiltered = torch.softmax(q @ k.t(), dim=0)
    torch.testing.assert_close(psi_t, torch.softmax(student_filter(q, k) * (q @ k.t()), dim=0))
    assert (psi_t - unfiltered).abs().max() > 1e-3  # the trained filter changes the teacher side
    # no gradient to the filter through the teacher side (even with a graph through the instances)
    inst = loss.instances(t[0], boxes, shape)[:5].requires_grad_(True)
    grads = torch.autograd.grad(
        teacher(inst, student_filter).sum(), [inst, *student_filter.parameters()], allow_unused=True
    )
    assert grads[0] is not None and all(g is None for g in grads[1:])
    # the loss uses it: the same value as the module computed by hand
    psi_t_loss, _ = loss.relations(0, loss.instances(t[0], boxes, shape)[:5], loss.instances(s[0], boxes, shape)[:5])
    torch.testing.assert_close(psi_t_loss, psi_t)


def test_teacher_filter_random_is_fixed_not_one_and_saved():
    torch.manual_seed(8)
    loss = InstanceRelationLoss(4, 3, teacher_filter="random")
    teacher_filter = loss.teacher_relation[0].filter
    q, k = torch.randn(6, 128), torch.randn(6, 128)
    w = teacher_filter(q, k)
    assert not torch.allclose(w, torch.ones_like(w))
    saved = {key: v.clone() for key, v in loss.state_dict().items() if key.startswith("teacher_relation")}
    assert "teacher_relation.0.filter.out.weight" in saved
    _active_filters(loss)
    for key, value in loss.state_dict().items():
        if key.startswith("teacher_relation"):
            torch.testing.assert_close(value, saved[key])


def test_bad_target_and_teacher_filter():
    with pytest.raises(ValueError, match="target must be one of"):
        InstanceRelationLoss(4, 3, target="z")
    with pytest.raises(ValueError, match="teacher_filter must be one of"):
        InstanceRelationLoss(4, 3, teacher_filter="learned")


def _per_image_distances(loss, index, t, s, counts):
    """Eq. 7's distance image by image, each image's ψ on its own (the computation ``image_distances`` batches)."""
    out = []
    for t_img, s_img in zip(t.split(counts), s.split(counts)):
        target_t, target_s = loss.relations(index, t_img, s_img)
        out.append(feature_distance(target_t.reshape(1, -1), target_s.reshape(1, -1), loss.distance)[0])
    return torch.stack(out)


@pytest.mark.parametrize("teacher_filter", ["identity", "shared", "random"])
def test_batched_images_equal_the_per_image_relations_in_value_and_gradient(teacher_filter):
    torch.manual_seed(8)
    loss = InstanceRelationLoss(4, 3, teacher_filter=teacher_filter)
    _active_filters(loss)  # trained filters, as training leaves them
    counts = [4, 0, 1, 6]  # padded to 6: an empty image, a single instance, the longest image
    t_feats, s_feats, boxes, shape = _random_case(counts, requires_grad=True)
    t = loss.instances(t_feats[0].detach(), boxes, shape)
    loss.zero_grad()  # _active_filters leaves its last step's gradients
    grads = []
    for fn in (loss.image_distances, lambda *a: _per_image_distances(loss, *a)):
        s = loss.instances(s_feats[0], boxes, shape)
        distances = fn(0, t, s, counts)
        weights = torch.arange(1.0, 5.0)  # a different weight per image: each image's gradient is checked
        (distances * weights).sum().backward()
        grads.append((distances.detach(), s_feats[0].grad.clone(), loss.adapters[0].weight.grad.clone()))
        s_feats[0].grad = None
        loss.zero_grad()
    (batched, g_batched, a_batched), (looped, g_looped, a_looped) = grads
    assert batched[1] == 0.0 and looped[1] == 0.0
    assert torch.allclose(batched, looped, rtol=1e-5, atol=1e-7)
    assert torch.allclose(g_batched, g_looped, rtol=1e-4, atol=1e-7)
    assert torch.allclose(a_batched, a_looped, rtol=1e-4, atol=1e-7)


def test_batched_psi_is_each_images_own_psi_padded_with_zeros():
    torch.manual_seed(9)
    loss = InstanceRelationLoss(4, 3)
    _active_filters(loss)
    module = loss.student_relation[0]
    x = torch.randn(3, 5, 3 * 9)
    valid = torch.tensor([[True] * 5, [True, True, False, False, False], [False] * 5])
    psi = module.batched(x, valid)
    assert torch.allclose(psi[0], module(x[0].view(5, 3, 3, 3)), atol=1e-6)
    assert torch.allclose(psi[1, :2, :2], module(x[1, :2].view(2, 3, 3, 3)), atol=1e-6)
    assert torch.allclose(psi[1, :2, :2].sum(dim=0), torch.ones(2))  # columns sum to 1 over the image only
    assert psi[1][~(valid[1][:, None] & valid[1][None, :])].abs().max() == 0 and psi[2].abs().max() == 0
