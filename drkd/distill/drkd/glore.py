"""The GloRe unit (Chen et al., CVPR 2019) that models pixel-wise relations (paper Eq. 2–4).

Follows the reference implementation (facebookresearch/GloRe,
``network/global_reasoning_unit.py``, ``GloRe_Unit``) with two choices made explicit:

* ``normalize=True``: the node features V = X̄Bᵀ are divided by the number of pixels H·W, as the
  reference does when ``normalize=True`` ("set normalize=True if the input size is not fixed").
  Detector inputs vary in size, so this is the default. The authors' DRKD code
  (nizhenliang/Dual-Relation-Knowledge-Distillation, ``mmdet/models/detectors/GloRe.py``) leaves
  it False, so there V, and the unit's output, grow with the feature map's area.
* The output BatchNorm's weight γ is zero-initialised, as the reference's networks do
  (``network/resnet50_3d_gcn_x5.py`` zeroes every ``blocker.weight``), so the unit starts as
  the identity. The authors' DRKD code keeps the default γ = 1.

Graph convolution Z = ((I − A)V)W as in Eq. 3, with the reference GCN's layout: A is a 1×1
conv1d over the node axis (with bias), W a 1×1 conv1d over the state axis (no bias), and the
reference's ReLU between them. The reference adds AV where the paper subtracts it; with a
learned A the sign is only a reparametrisation, and we follow the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from drkd.distill.pointwise import pointwise


class GraphConvolution(nn.Module):
    """Z = ReLU((I − A)V) W (Eq. 3 with the reference's ReLU) on node features V, (B, C1, C2) -> (B, C1, C2).

    Args:
        num_state: C1, the state (feature) dimension of each node; W is a C1×C1 1×1 conv1d without bias.
        num_node: C2, the number of graph nodes; A is a C2×C2 1×1 conv1d over the node axis, with bias.
    """

    def __init__(self, num_state: int, num_node: int) -> None:
        super().__init__()
        self.adjacency = nn.Conv1d(num_node, num_node, kernel_size=1)  # A
        self.state_update = nn.Conv1d(num_state, num_state, kernel_size=1, bias=False)  # W

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        av = pointwise(self.adjacency, v.transpose(1, 2)).transpose(1, 2)
        return pointwise(self.state_update, F.relu(v - av))


class GloRe(nn.Module):
    """GloRe, the pixel relation module φ of L_PR: X + BN(extend(ZB)), (B, C, H, W) -> (B, C, H, W).

    Graph embedding V = X̄Bᵀ (Eq. 2), graph convolution Z = ((I − A)V)W (Eq. 3), reprojection
    F = ZB (Eq. 4), then a 1×1 conv C1 -> C (``extend``) and a BatchNorm with zero-initialised γ
    (``blocker``), added to the input: an identity map at init. Works for any B ≥ 1 and any H, W
    (a training batch with a single value per channel, B = H = W = 1, uses the running statistics).

    Args:
        channels: C, channels of the input and of the output (>= 1).
        num_state: C1, channels of the state features X̄ = ``state``(X) (a 1×1 conv); default
            ``max(1, C // 2)``, as the reference networks build ``GloRe_Unit(C, C/4)`` (state = 2·mid).
        num_node: C2, the number of graph nodes, i.e. rows of the projection B = ``projection``(X)
            (a 1×1 conv); default ``max(1, C // 4)`` (node = mid in the reference).
        normalize: divide V by H·W (default True; see the module docstring).
        zero_init: zero-initialise the output BatchNorm's γ so the unit starts as the identity
            (default True, the reference's networks; the authors' DRKD code keeps γ = 1).
    """

    def __init__(
        self,
        channels: int,
        num_state: int | None = None,
        num_node: int | None = None,
        normalize: bool = True,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.num_state = max(1, channels // 2) if num_state is None else num_state
        self.num_node = max(1, channels // 4) if num_node is None else num_node
        if self.num_state < 1 or self.num_node < 1:
            raise ValueError(f"num_state and num_node must be >= 1, got {self.num_state}, {self.num_node}")
        self.normalize = normalize
        self.state = nn.Conv2d(channels, self.num_state, kernel_size=1)  # X -> X̄
        self.projection = nn.Conv2d(channels, self.num_node, kernel_size=1)  # X -> B
        self.gcn = GraphConvolution(self.num_state, self.num_node)
        self.extend = nn.Conv2d(self.num_state, channels, kernel_size=1, bias=False)
        self.blocker = nn.BatchNorm2d(channels, eps=1e-4)
        if zero_init:
            nn.init.zeros_(self.blocker.weight)

    def node_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 2: V = X̄Bᵀ (divided by H·W when ``normalize``), (B, C1, C2); and B, (B, C2, H·W); both at least float32.

        V sums over all H·W pixels: under float16 autocast (CUDA) an unnormalised V of a COCO-sized
        level (~10^4–10^5 pixels) passes float16's 65504, so the product runs in float32.
        """
        state = pointwise(self.state, x).flatten(2)
        proj = pointwise(self.projection, x).flatten(2)
        wide = torch.promote_types(state.dtype, torch.float32)  # float16/bfloat16 -> float32; float64 stays
        with torch.autocast(x.device.type, enabled=False):
            state, proj = state.to(wide), proj.to(wide)
            if self.normalize:
                state = state / state.shape[-1]
            return torch.matmul(state, proj.transpose(1, 2)), proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        v, proj = self.node_features(x)
        # the graph part in float32 too: Z and ZB carry V's scale (see node_features)
        with torch.autocast(x.device.type, enabled=False):
            z = self.gcn(v)  # Eq. 3
            relation = torch.matmul(z, proj).view(n, self.num_state, h, w)  # Eq. 4: F = ZB
            return x + self._block(pointwise(self.extend, relation))

    def _block(self, y: torch.Tensor) -> torch.Tensor:
        if self.training and y.shape[0] * y.shape[2] * y.shape[3] == 1:
            # One value per channel has no batch variance; use the running statistics.
            bn = self.blocker
            return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return self.blocker(y)
