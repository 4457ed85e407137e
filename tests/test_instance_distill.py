import pytest
import torch

from drkd.distill.drkd.instance_distill import InstanceDistillLoss

IMAGE = (16, 16)


def constant_maps(values: list[float], channels: int = 1, size: int = 8) -> torch.Tensor:
    """One constant map per image: every ROI of image b has all entries equal to values[b]."""
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, channels, size, size).clone()


def boxes_for(counts: list[int]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(sum(counts))
    out = []
    for n in counts:
        xy = torch.rand(n, 2, generator=g) * 8
        out.append(torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g) * 6], dim=1))
    return out


def identity_loss(**kwargs) -> InstanceDistillLoss:
    loss = InstanceDistillLoss(1, 1, **kwargs)
    for adapter in loss.adapters:
        adapter.set_identity()
    return loss


@pytest.mark.parametrize("k", [1, 3, 5])
def test_exact_mean_over_instances(k):
    loss = identity_loss(instance_size=k, levels=(0,))
    t = [constant_maps([1.0, 2.0])]
    s = [constant_maps([4.0, 6.0])]
    boxes = boxes_for([2, 1])
    # per instance ||t − s|| over K×K equal entries: |Δ|·K; image 0: 3K twice, image 1: 4K once
    # 1/n Σ over the n = 3 instances (not a mean of per-image means, which would be 3.5K)
    assert loss(t, s, boxes, IMAGE).item() == pytest.approx((3 * k + 3 * k + 4 * k) / 3, rel=1e-6)
    loss.distance = "squared"
    assert loss(t, s, boxes, IMAGE).item() == pytest.approx((9 + 9 + 16) * k * k / 3, rel=1e-6)


def test_adapter_on_student_and_mean_over_levels():
    loss = InstanceDistillLoss(1, 1, instance_size=1, levels=(0, 1))
    with torch.no_grad():
        for adapter in loss.adapters:
            adapter.conv.weight.fill_(2.0)
            adapter.conv.bias.fill_(1.0)
    t = [constant_maps([1.0]), constant_maps([0.0], size=4)]
    s = [constant_maps([3.0]), constant_maps([1.0], size=4)]
    # level 0: |1 − (2·3 + 1)| = 6; level 1: |0 − (2·1 + 1)| = 3
    assert loss(t, s, boxes_for([2]), IMAGE).item() == pytest.approx(4.5, rel=1e-6)


def test_zero_when_equal_with_identity_adapter():
    torch.manual_seed(0)
    loss = InstanceDistillLoss(3, 3)
    for adapter in loss.adapters:
        adapter.set_identity()
    t = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    s = [x.clone().requires_grad_(True) for x in t]
    out = loss(t, s, boxes_for([3, 2]), IMAGE)
    assert out.item() == 0.0
    out.backward()
    assert all(torch.isfinite(x.grad).all() for x in s)


def test_permutation_invariant_and_channel_mismatch():
    torch.manual_seed(1)
    loss = InstanceDistillLoss(5, 3)
    t = [torch.randn(2, 5, 8, 8), torch.randn(2, 5, 4, 4)]
    s = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    boxes = boxes_for([4, 3])
    permuted = [b[torch.randperm(b.shape[0])] for b in boxes]
    assert loss(t, s, permuted, IMAGE).item() == pytest.approx(loss(t, s, boxes, IMAGE).item(), rel=1e-6)


def test_gradients_student_and_adapter_not_teacher():
    torch.manual_seed(2)
    loss = InstanceDistillLoss(4, 3)
    t = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 4, 4, 4, requires_grad=True)]
    s = [torch.randn(2, 3, 8, 8, requires_grad=True), torch.randn(2, 3, 4, 4, requires_grad=True)]
    loss(t, s, boxes_for([2, 1]), IMAGE).backward()
    assert all(x.grad is None for x in t)
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    assert all(a.conv.weight.grad.abs().sum() > 0 for a in loss.adapters)


@pytest.mark.parametrize("counts", [[0], [0, 0], [1], [0, 1]])
def test_no_or_one_instance(counts):
    torch.manual_seed(3)
    loss = InstanceDistillLoss(4, 3)
    t = [torch.randn(len(counts), 4, 8, 8), torch.randn(len(counts), 4, 4, 4)]
    s = [torch.randn(len(counts), 3, 8, 8, requires_grad=True), torch.randn(len(counts), 3, 4, 4, requires_grad=True)]
    out = loss(t, s, boxes_for(counts), IMAGE)
    assert torch.isfinite(out) and out.requires_grad
    out.backward()
    assert all(p.grad is not None for p in loss.parameters())
    if sum(counts) == 0:
        assert out.item() == 0.0


def test_bad_args():
    with pytest.raises(ValueError, match="instance_size.*2"):
        InstanceDistillLoss(4, 3, instance_size=2)
    with pytest.raises(ValueError, match="'l1'"):
        InstanceDistillLoss(4, 3, distance="l1")
    with pytest.raises(ValueError, match="instance_levels"):
        InstanceDistillLoss(4, 3, levels=(-1,))
