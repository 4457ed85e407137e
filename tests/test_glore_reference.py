"""drkd's GloRe against a reference written from the authors' DRKD code (mmdet/models/detectors/GloRe.py,
itself the facebookresearch/GloRe unit): with copied weights the two agree, once the sign of the
adjacency A is flipped (the paper's Eq. 3 subtracts AV where the code adds it)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from drkd.distill.drkd.glore import GloRe
from drkd.distill.drkd.pixel_relation import PixelRelationLoss


class ReferenceGCN(nn.Module):
    def __init__(self, num_state: int, num_node: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(num_node, num_node, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv1d(num_state, num_state, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x.permute(0, 2, 1).contiguous()).permute(0, 2, 1)
        h = h + x
        return self.conv2(self.relu(h))


class ReferenceGloReUnit2D(nn.Module):
    """GloRe_Unit_2D(num_in, num_mid, normalize) of the authors' code."""

    def __init__(self, num_in: int, num_mid: int, normalize: bool = False) -> None:
        super().__init__()
        self.normalize = normalize
        self.num_s, self.num_n = 2 * num_mid, num_mid
        self.conv_state = nn.Conv2d(num_in, self.num_s, kernel_size=1)
        self.conv_proj = nn.Conv2d(num_in, self.num_n, kernel_size=1)
        self.gcn = ReferenceGCN(self.num_s, self.num_n)
        self.conv_extend = nn.Conv2d(self.num_s, num_in, kernel_size=1, bias=False)
        self.blocker = nn.BatchNorm2d(num_in, eps=1e-04)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.size(0)
        x_state = self.conv_state(x).view(n, self.num_s, -1)
        x_proj = self.conv_proj(x).view(n, self.num_n, -1)
        x_n_state = torch.matmul(x_state, x_proj.permute(0, 2, 1))
        if self.normalize:
            x_n_state = x_n_state * (1.0 / x_state.size(2))
        x_n_rel = self.gcn(x_n_state)
        x_state = torch.matmul(x_n_rel, x_proj).view(n, self.num_s, *x.size()[2:])
        return x + self.blocker(self.conv_extend(x_state))


def copy_into_drkd(ref: ReferenceGloReUnit2D, unit: GloRe) -> None:
    with torch.no_grad():
        unit.state.load_state_dict(ref.conv_state.state_dict())
        unit.projection.load_state_dict(ref.conv_proj.state_dict())
        unit.gcn.adjacency.weight.copy_(-ref.gcn.conv1.weight)  # (I − A) here, (I + A) there
        unit.gcn.adjacency.bias.copy_(-ref.gcn.conv1.bias)
        unit.gcn.state_update.load_state_dict(ref.gcn.conv2.state_dict())
        unit.extend.load_state_dict(ref.conv_extend.state_dict())
        unit.blocker.load_state_dict(ref.blocker.state_dict())


def _randomised(ref: ReferenceGloReUnit2D) -> ReferenceGloReUnit2D:
    with torch.no_grad():
        ref.blocker.weight.uniform_(0.5, 1.5)  # also non-trivial BN statistics and affine
        ref.blocker.bias.uniform_(-0.5, 0.5)
        ref.blocker.running_mean.uniform_(-0.2, 0.2)
        ref.blocker.running_var.uniform_(0.5, 2.0)
    return ref


# float64 checks the arithmetic; float32 only rounding (drkd's unit runs its 1×1 convolutions as
# matrix products, drkd.distill.pointwise, so its sums run in another order than the reference's)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_unit_equals_the_authors_unit(dtype: torch.dtype, tol: float, normalize: bool, train: bool) -> None:
    torch.manual_seed(0)
    ref = _randomised(ReferenceGloReUnit2D(16, 4, normalize=normalize)).to(dtype)
    unit = GloRe(16, num_state=8, num_node=4, normalize=normalize, zero_init=False).to(dtype)
    copy_into_drkd(ref, unit)
    ref.train(train)
    unit.train(train)
    x = torch.randn(2, 16, 7, 9, dtype=dtype) * (1.0 if normalize else 0.1)
    torch.testing.assert_close(unit(x), ref(x), rtol=tol, atol=tol)


def test_zero_init_makes_the_unit_the_identity_and_the_authors_default_does_not() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(GloRe(8).eval()(x), x)
    assert not torch.allclose(GloRe(8, zero_init=False).eval()(x), x)


def test_per_level_sizes_as_the_authors_coco_units() -> None:
    loss = PixelRelationLoss(
        256, 256, 5, glore_nodes=(64, 64, 256, 256, 256), glore_normalize=False, glore_zero_init=False
    )
    sizes = [(m.num_state, m.num_node, m.normalize) for m in loss.teacher_relation]
    assert sizes == [(128, 64, False)] * 2 + [(512, 256, False)] * 3  # GloRe_Unit_2D(256, 64) / (256, 256)
    assert [m.num_node for m in loss.student_relation] == [64, 64, 256, 256, 256]
    with pytest.raises(ValueError, match="glore_nodes must be 5 positive integers"):
        PixelRelationLoss(8, 8, 5, glore_nodes=(4, 4))
