"""L_IR with ``target="features"`` against a reference written from the authors' code.

The reference (nizhenliang/Dual-Relation-Knowledge-Distillation, mmdet/models/detectors/two_stage.py):

    class ObjectRelation_1:  theta, phi, g = Linear(C, C//2); W = Linear(C//2, C)
        forward(x): x_r = x.view(N, -1); f = theta(x_r) @ phi(x_r).T
                    mask = softmax(nn.Linear(C, N).cuda()(x_r), -1)    # built afresh every call
                    f_div_C = softmax(f * mask, -1); z = W(f_div_C @ g(x_r)).view(x.size()) + x
    forward_train:  for _i in range(2): for each image:
        s_region = roi_align(x[_i], [gt], 3, spatial_scale); t_region = roi_align(t_feats[_i], ...)
        s_rel, _ = student_relation[_i](s_region); t_rel, _ = teacher_relation[_i](t_region)
        kd_relation_loss += torch.dist(relation_adaptation[_i](s_rel), t_rel, p=2)

written here without drkd's modules. drkd's blocks get their weights copied in, the random masks
come from the same seeded generator, and drkd (reduction "authors") must give the same loss and
the same gradients w.r.t. the student features.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import roi_align

from drkd.distill.drkd.instance_relation import InstanceRelationLoss
from drkd.distill.drkd.object_relation import ObjectRelationBlock


class AuthorsObjectRelation(nn.Module):
    """The authors' ObjectRelation_1, on the CPU."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.inter_channels = in_channels // 2
        self.softmax = nn.Softmax(-1)
        self.theta = nn.Sequential(nn.Linear(self.in_channels, self.inter_channels))
        self.phi = nn.Sequential(nn.Linear(self.in_channels, self.inter_channels))
        self.g = nn.Sequential(nn.Linear(self.in_channels, self.inter_channels))
        self.W = nn.Linear(self.inter_channels, self.in_channels)

    def resize(self, x):
        fc = nn.Linear(self.in_channels, x.size(0))
        return self.softmax(fc(x))

    def forward(self, x):
        bbox_num = x.size(0)
        x_r = x.view(bbox_num, -1)
        g_x = self.g(x_r)
        theta_x = self.theta(x_r)
        phi_x = self.phi(x_r).permute(1, 0)
        f = torch.matmul(theta_x, phi_x)
        f = f * self.resize(x_r)
        f_div_C = self.softmax(f)
        y = torch.matmul(f_div_C, g_x)
        z = self.W(y).view(x.size()) + x
        return z, f_div_C


def copy_into(block: ObjectRelationBlock, reference: AuthorsObjectRelation) -> None:
    for name in ("theta", "phi", "g"):
        reference.get_submodule(name)[0].load_state_dict(getattr(block, name).state_dict())
    reference.W.load_state_dict(block.W.state_dict())


def authors_loss(loss: InstanceRelationLoss, t_feats, s_feats, boxes, image, seed: int) -> torch.Tensor:
    refs = {}
    for side in ("teacher", "student"):
        for index, block in enumerate(getattr(loss, f"{side}_relation")):
            refs[side, index] = AuthorsObjectRelation(block.theta.in_features)
            copy_into(block, refs[side, index])
    torch.manual_seed(seed)
    total = 0.0
    for index, level in enumerate(loss.levels):
        scale = s_feats[level].shape[-1] / image[-1]
        for b, gt in enumerate(boxes):
            # per image, its own map (the authors pool from image 0 whatever b is: their bug, not copied)
            s_region = roi_align(s_feats[level][b : b + 1], [gt], loss.instance_size, spatial_scale=scale)
            t_region = roi_align(t_feats[level][b : b + 1], [gt], loss.instance_size, spatial_scale=scale)
            s_rel, _ = refs["student", index](s_region)
            t_rel, _ = refs["teacher", index](t_region)
            total = total + torch.dist(loss.adapters[index](s_rel), t_rel, p=2)
    return total


def _case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sizes = ((16, 16), (8, 8))
    t = [torch.randn(2, 6, h, w, generator=g) for h, w in sizes]
    s = [torch.randn(2, 4, h, w, generator=g).requires_grad_(True) for h, w in sizes]
    boxes = []
    for n in (3, 5):
        xy = torch.rand(n, 2, generator=g) * 20
        boxes.append(torch.cat([xy, xy + 3 + torch.rand(n, 2, generator=g) * 9], dim=1))
    return t, s, boxes, (32, 32)


def authors_ir(**kwargs) -> InstanceRelationLoss:
    return InstanceRelationLoss(
        6,
        4,
        levels=(0, 1),
        target="features",
        reduction="authors",
        roi_aligned=False,
        roi_sampling_ratio=0,
        teacher_embed_trainable=True,
        **kwargs,
    )


def test_features_target_equals_the_authors_code_values_and_gradients() -> None:
    torch.manual_seed(0)
    loss = authors_ir()
    t, s, boxes, image = _case()
    torch.manual_seed(7)
    ours = loss(t, s, boxes, image)
    (grad_ours,) = torch.autograd.grad(ours, s[0])
    reference = authors_loss(loss, t, s, boxes, image, seed=7)
    (grad_ref,) = torch.autograd.grad(reference, s[0])
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-5, atol=1e-7)
    assert grad_ours.abs().sum() > 0


def test_the_mask_is_random_per_call_and_the_residual_carries_the_features() -> None:
    torch.manual_seed(1)
    loss = authors_ir()
    t, s, boxes, image = _case(1)
    first, second = loss(t, s, boxes, image), loss(t, s, boxes, image)
    assert first.item() != second.item()  # a fresh random mask per call, as theirs
    block = loss.student_relation[0]
    x = torch.randn(5, 4, 3, 3)
    with torch.no_grad():
        block.W.weight.zero_()
        block.W.bias.zero_()
    z, psi = block(x)
    torch.testing.assert_close(z, x)  # z = W(ψ g(x)) + x: with W = 0 only the residual is left
    torch.testing.assert_close(psi.sum(dim=-1), torch.ones(5))  # softmax over j, as their nn.Softmax(-1)


def test_features_target_gradients_reach_student_modules_and_teacher_modules_only_if_trainable() -> None:
    t, s, boxes, image = _case(2)
    for trainable in (True, False):
        torch.manual_seed(2)
        loss = authors_ir() if trainable else InstanceRelationLoss(6, 4, target="features")
        t_in = [x.clone().requires_grad_(True) for x in t]
        loss(t_in, s, boxes, image).backward()
        assert all(x.grad is None for x in t_in)  # never the teacher detector
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.student_relation.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.adapters.parameters())
        teacher_grads = [p.grad for p in loss.teacher_relation.parameters()]
        assert all(g is not None for g in teacher_grads) if trainable else all(g is None for g in teacher_grads)
        for x in s:
            x.grad = None


def test_features_target_without_filter_is_order_invariant_and_zero_for_a_copied_student() -> None:
    torch.manual_seed(3)
    loss = InstanceRelationLoss(4, 4, target="features", relation_filter=False)
    g = torch.Generator().manual_seed(3)
    t = [torch.randn(2, 4, h, h, generator=g) for h in (16, 8)]
    _, _, boxes, image = _case(3)
    s = [x.clone() for x in t]
    permuted = [b[torch.randperm(b.shape[0])] for b in boxes]
    reference = loss(t, s, boxes, image)
    assert loss(t, s, permuted, image).item() == pytest.approx(reference.item(), rel=1e-5)
    loss.student_relation.load_state_dict(loss.teacher_relation.state_dict())
    for adapter in loss.adapters:
        with torch.no_grad():
            adapter.weight.copy_(torch.eye(4)[:, :, None, None])
            adapter.bias.zero_()
    assert loss(t, s, boxes, image).item() == pytest.approx(0.0, abs=1e-5)
