"""Non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018).

Used by NLD's non-local distillation (Zhang & Ma, ICLR 2021, Sec. 3.2) and by DRKD's Table 2
ablation (pixel-relation module = non-local instead of GloRe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from drkd.distill.pointwise import pointwise

NON_LOCAL_MODES = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")
# How the key max-pooling treats the last H mod k rows and W mod k columns: "floor" drops them, as
# the reference blocks' nn.MaxPool2d(kernel_size=k) does (Wang et al.'s block as ported to PyTorch,
# NLD's authors' code, mmrazor's FBKD); "ceil" keeps them as partial windows (ceil_mode=True).
POOL_MODES = ("floor", "ceil")


class NonLocalBlock(nn.Module):
    """Non-local block: z = W(y) + x with y_i = 1/C(x) Σ_j f(x_i, x_j) g(x_j), (B, C, H, W) -> (B, C, H, W).

    ``mode`` picks the pairwise function f (Wang et al. Sec. 3.2):
      * ``embedded_gaussian``: softmax_j(θ(x_i)ᵀ φ(x_j))
      * ``gaussian``:          softmax_j(x_iᵀ x_j)            (no θ/φ embedding)
      * ``dot_product``:       θ(x_i)ᵀ φ(x_j) / N
      * ``concatenation``:     ReLU(w_fᵀ [θ(x_i), φ(x_j)]) / N
    with N the number of (sub-sampled) key positions. ``sub_sample`` > 1 max-pools the keys (φ and g)
    by that factor, as Wang et al. do to bound the N_q × N_k affinity matrix on high-resolution
    maps (``pool_mode`` says what happens to a remainder). W ends in a BatchNorm (or is a plain conv
    when ``use_bn`` is False) initialised to zero, so the block starts as the identity.

    Args:
        channels: C, channels of the input and of the output (>= 1).
        inter_channels: C_i, width of θ, φ and g; default ``max(C // 2, 1)``.
        mode: the pairwise function f, one of ``NON_LOCAL_MODES`` (above); default ``"embedded_gaussian"``.
        sub_sample: key max-pooling window and stride k, a positive integer; default 1 (no pooling). On a
            map with a side shorter than k the window shrinks to that side (the reference
            nn.MaxPool2d raises there), so a 1×1 map is not pooled and no mode leaves an empty key set.
        pool_mode: ``"floor"`` drops the last H mod k rows and W mod k columns from the keys, as the
            reference blocks do; ``"ceil"`` (default, what DRKD's ``pixel_module: non_local`` has
            always used) pools them as partial windows. The two agree when k divides H and W.
        use_bn: end W (a 1×1 conv C_i -> C) in a zero-initialised BatchNorm (default True); False:
            zero-initialise the conv itself.
        zero_init: zero-initialise W's last layer so the block starts as the identity (default True);
            False keeps PyTorch's default init (γ = 1), e.g. for a frozen random relation unit.
    """

    def __init__(
        self,
        channels: int,
        inter_channels: int | None = None,
        mode: str = "embedded_gaussian",
        sub_sample: int = 1,
        use_bn: bool = True,
        pool_mode: str = "ceil",
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels!r}")
        if inter_channels is None:
            inter_channels = max(channels // 2, 1)
        if inter_channels < 1:
            raise ValueError(f"inter_channels must be >= 1, got {inter_channels!r}")
        if mode not in NON_LOCAL_MODES:
            raise ValueError(f"mode must be one of {NON_LOCAL_MODES}, got {mode!r}")
        if int(sub_sample) != sub_sample or sub_sample < 1:
            raise ValueError(f"sub_sample must be a positive integer, got {sub_sample!r}")
        if pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode must be one of {POOL_MODES}, got {pool_mode!r}")
        self.channels = channels
        self.inter_channels = inter_channels
        self.mode = mode
        self.sub_sample = int(sub_sample)
        self.pool_mode = pool_mode

        self.g = nn.Conv2d(channels, inter_channels, kernel_size=1)
        if mode != "gaussian":
            self.theta = nn.Conv2d(channels, inter_channels, kernel_size=1)
            self.phi = nn.Conv2d(channels, inter_channels, kernel_size=1)
        if mode == "concatenation":
            self.concat_project = nn.Conv2d(2 * inter_channels, 1, kernel_size=1, bias=False)

        out_conv = nn.Conv2d(inter_channels, channels, kernel_size=1)
        last = out_conv
        if use_bn:
            last = nn.BatchNorm2d(channels)
            self.W: nn.Module = nn.Sequential(out_conv, last)
        else:
            self.W = out_conv
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        # Maps with a side shorter than k (coarse FPN levels such as a 1×1 P7, tests) would pool to
        # nothing under floor; shrink the window to that side instead (a 1×1 map is not pooled).
        k = min(self.sub_sample, x.shape[-2], x.shape[-1])
        if k == 1:
            return x
        return F.max_pool2d(x, kernel_size=k, stride=k, ceil_mode=self.pool_mode == "ceil")

    def relation(self, x: torch.Tensor) -> torch.Tensor:
        """The non-local response y (B, inter_channels, H, W), before W and the residual."""
        b, _, h, w = x.shape
        g_x = self._pool(pointwise(self.g, x)).flatten(2)  # (B, Ci, Nk)
        if self.mode == "gaussian":
            query = x.flatten(2).transpose(1, 2)  # (B, Nq, C)
            key = self._pool(x).flatten(2)  # (B, C, Nk)
        else:
            query = pointwise(self.theta, x).flatten(2).transpose(1, 2)  # (B, Nq, Ci)
            key = self._pool(pointwise(self.phi, x)).flatten(2)  # (B, Ci, Nk)

        if self.mode in ("embedded_gaussian", "gaussian"):
            affinity = torch.softmax(torch.bmm(query, key), dim=-1)
        elif self.mode == "dot_product":
            affinity = torch.bmm(query, key) / key.shape[-1]
        else:
            # w_fᵀ[θ_i, φ_j] = w_θᵀθ_i + w_φᵀφ_j: the 1×1 conv over the concatenation splits in
            # two, so the (B, 2Ci, Nq, Nk) concatenated tensor is never materialised.
            w_theta, w_phi = self.concat_project.weight.view(2, self.inter_channels)
            a = torch.einsum("c,bnc->bn", w_theta, query)  # (B, Nq)
            c = torch.einsum("c,bck->bk", w_phi, key)  # (B, Nk)
            affinity = torch.relu(a[:, :, None] + c[:, None, :]) / key.shape[-1]

        # y_i = Σ_j f_ij g(x_j), computed as gᵀ fᵀ so that y comes out (B, Ci, Nq), contiguous:
        # W's 1×1 convolution then runs as a plain matrix product, not on a strided copy.
        y = torch.bmm(g_x, affinity.transpose(1, 2))  # (B, Ci, Nq)
        return y.view(b, self.inter_channels, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relation(x)
        if isinstance(self.W, nn.Sequential):
            out_conv, bn = self.W
            return bn(pointwise(out_conv, y)) + x
        return pointwise(self.W, y) + x
