"""Adaptation layers ("connectors"): map student channels to teacher channels."""

from __future__ import annotations

import torch
from torch import nn

from drkd.distill.pointwise import pointwise


class Adapter(nn.Module):
    """The paper's "adaptive convolution" f: a 1×1 convolution on the student side.

    Works on (B, C, H, W) feature maps and on (N, C, K, K) instance features alike: (·, C_in, H, W)
    -> (·, C_out, H, W). Kaiming-uniform weight (a = 1), zero bias.

    Args:
        in_channels: channels C_in of the input (the student's C_s).
        out_channels: channels C_out of the output (the teacher's C_t).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        nn.init.kaiming_uniform_(self.conv.weight, a=1)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(self.conv, x)

    @torch.no_grad()
    def set_identity(self) -> None:
        """Make f the identity (needs equal channel counts); used in tests and ablations."""
        c_out, c_in = self.conv.weight.shape[:2]
        if c_out != c_in:
            raise ValueError(f"identity adaptation needs equal channels, got {c_in} -> {c_out}")
        self.conv.weight.copy_(torch.eye(c_in).view(c_in, c_in, 1, 1))
        self.conv.bias.zero_()


class LevelAdapters(nn.Module):
    """One :class:`Adapter` f per FPN level: ``adapters[l]`` maps level l from C_s to C_t channels.

    Args:
        in_channels: channels C_s of every input (student) level.
        out_channels: channels C_t of every output (teacher-side) level.
        num_levels: number of FPN levels L, one adapter each.

    ``forward(feats)`` takes exactly L levels, each (B, C_s, H_l, W_l), highest resolution first, and
    returns the list of L adapted levels, each (B, C_t, H_l, W_l); another level count raises ValueError.
    """

    def __init__(self, in_channels: int, out_channels: int, num_levels: int) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(Adapter(in_channels, out_channels) for _ in range(num_levels))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.adapters):
            raise ValueError(f"expected {len(self.adapters)} feature levels, got {len(feats)}")
        return [adapter(f) for adapter, f in zip(self.adapters, feats)]

    def set_identity(self) -> None:
        """Make every level's f the identity (needs ``in_channels == out_channels``)."""
        for adapter in self.adapters:
            adapter.set_identity()


class ChannelMatch(nn.Module):
    """Per-level 1×1 adapters from C_s to C_t where the widths differ, the identity where they agree.

    For methods whose loss needs equal channel counts but whose paper adds a connector only when the
    student is narrower (PKD, CWD): with C_s == C_t and ``always=False`` nothing is built, so no
    parameter goes unused and the student's own features are compared.

    Args:
        in_channels: channels C_s of every student level.
        out_channels: channels C_t of every teacher level.
        num_levels: number of FPN levels L.
        always: build the adapters even when C_s == C_t. Default False.

    ``forward(feats)``: L levels (B, C_s, H_l, W_l) -> L levels (B, C_t, H_l, W_l).
    """

    def __init__(self, in_channels: int, out_channels: int, num_levels: int, always: bool = False) -> None:
        super().__init__()
        needed = always or in_channels != out_channels
        self.adapters = LevelAdapters(in_channels, out_channels, num_levels) if needed else None

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(feats) if self.adapters is None else self.adapters(feats)
