"""The GcBlock of FGD's global distillation (Eq. 10; Cao et al., GCNet, 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlobalContext(nn.Module):
    """R(F) = F + W_v2(ReLU(LN(W_v1(Σ_j softmax_j(W_k F) · F_j)))).

    The context weights come from a 1×1 conv W_k (C → 1, Kaiming fan-in), the transform is
    1×1 C → C/2, LayerNorm over (C/2, 1, 1), ReLU, 1×1 C/2 → C with the last conv zero-initialised,
    so R is the identity at the start of training (as the authors' ``reset_parameters``).

    Args:
        channels: C of the features (the teacher's width).

    ``forward(feat)``: (B, C, H, W) -> (B, C, H, W), the input plus one per-channel context vector.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"GlobalContext needs at least 2 channels, got {channels}")
        self.context_weights = nn.Conv2d(channels, 1, kernel_size=1)
        nn.init.kaiming_normal_(self.context_weights.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.context_weights.bias)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=1),
            nn.LayerNorm([channels // 2, 1, 1]),
            nn.ReLU(),
            nn.Conv2d(channels // 2, channels, kernel_size=1),
        )
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feat.shape
        weights = F.softmax(self.context_weights(feat).view(b, 1, h * w), dim=2)  # (B, 1, HW)
        context = torch.bmm(feat.view(b, c, h * w), weights.transpose(1, 2)).view(b, c, 1, 1)
        return feat + self.transform(context)
