"""NLD's attention-guided distillation (Zhang & Ma, ICLR 2021, Sec. 3.1, Appendix A/B).

G^s(A) = mean_k |A_k|  (H×W spatial attention),  G^c(A) = mean_ij |A_ij|  (C channel attention);
M^s = HW·softmax((G^s(A^S) + G^s(A^T)) / T),  M^c = C·softmax((G^c(A^S) + G^c(A^T)) / T);
L_AT = ‖G^s(A^S) − G^s(A^T)‖₂ + ‖G^c(A^S) − G^c(A^T)‖₂                         (Eq. 1)
L_AM = (Σ_kij (A^T − A^S)² · M^s_ij · M^c_k)^½                                     (Eq. 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from drkd.distill.adaptation import LevelAdapters
from drkd.distill.base import check_feature_levels, check_structure
from drkd.distill.foreground_mask import foreground_mask
from drkd.distill.nld.params import ATTENTION_FROM, MASK_SOURCES


def spatial_attention(feat: torch.Tensor) -> torch.Tensor:
    """G^s: mean absolute activation over channels, (B, C, H, W) -> (B, H, W)."""
    return feat.abs().mean(dim=1)


def channel_attention(feat: torch.Tensor) -> torch.Tensor:
    """G^c: mean absolute activation over positions, (B, C, H, W) -> (B, C)."""
    return feat.abs().mean(dim=(2, 3))


def spatial_mask(attention: torch.Tensor, temperature: float) -> torch.Tensor:
    """H·W·softmax(G/T) over the positions of each image, (B, H, W) -> (B, H, W); averages to 1."""
    b, h, w = attention.shape
    return (h * w) * torch.softmax(attention.reshape(b, -1) / temperature, dim=1).view(b, h, w)


def channel_mask(attention: torch.Tensor, temperature: float) -> torch.Tensor:
    """C·softmax(G/T) over the channels of each image, (B, C) -> (B, C); averages to 1."""
    return attention.shape[1] * torch.softmax(attention / temperature, dim=1)


def per_image_l2(diff: torch.Tensor) -> torch.Tensor:
    """‖·‖₂ of each image's slice, (B, ...) -> (B,). Zero-safe: the gradient at 0 is 0, not NaN."""
    return torch.linalg.vector_norm(diff.flatten(1), ord=2, dim=1)


class AttentionGuidedLoss(nn.Module):
    """NLD's attention-guided terms L_AT (Eq. 1) and L_AM (Eq. 2), each summed over FPN levels.

    L_AT = ‖G^s(A^S) − G^s(A^T)‖₂ + ‖G^c(A^S) − G^c(A^T)‖₂ and
    L_AM = (Σ_kij (A^T − A^S)² · M^s_ij · M^c_k)^½ (module docstring), each level's per-image value
    averaged over the batch. Computed in float32; teacher features are detached. The masks M^s, M^c
    are built under no_grad from the attention of the student and the teacher (see ``mask_source``
    and ``attention_from``): they only weight the imitation.

    Adaptation (Appendix B): a 1×1 conv on the student features for L_AM, a 3×3 conv on the student
    spatial attention and a fully connected layer on the student channel attention for L_AT. With
    ``always_adapt=False`` they are built only where the channel counts force one (the 1×1 conv and
    the FC layer when student and teacher channels differ; the 1→1 3×3 conv never).

    Args:
        teacher_channels, student_channels, num_levels: C_t, C_s and the number of FPN levels L
            (positive integers), as for :class:`~drkd.distill.base.Distiller`.
        temperature: T of the mask softmax (Sec. 3.1), > 0; required (NLD's defaults are in
            :func:`~drkd.distill.nld.params.nld_defaults`).
        use_at, use_am: compute ``loss_at`` / ``loss_am`` (Table 4); at least one; default both.
        spatial, channel: the two kinds of attention (Appendix A ablation); at least one, default
            both. A switched-off kind contributes neither its L_AT term nor its mask (the mask becomes 1).
        fg_weight, bg_weight: an extension, not in the paper: they reweight L_AM's squared
            differences inside GT boxes / outside them (see :func:`drkd.distill.foreground_mask.foreground_mask`);
            >= 0, not both 0. The defaults (1, 1) give the paper's Eq. 2 exactly, and the GT mask
            is then never computed.
        always_adapt: build every adaptation layer even when the channels match (default True).
        mask_source: whose attention builds the L_AM masks: ``"sum"`` (default, student + teacher,
            the paper) or ``"teacher"`` (the authors' code).
        attention_from: which student features the masks' student attention is taken from:
            ``"raw"`` (default; the student's own features, as the authors' code and mmrazor's port
            do) or ``"adapted"`` (after the 1×1 adaptation conv, the features L_AM compares). With
            ``"raw"`` the masks do not depend on the adaptation conv. When C_s != C_t the raw
            channel attention has C_s entries and cannot be added to the teacher's C_t, so the
            channel mask then takes the adapted student's (the spatial mask stays raw).

    ``forward(teacher_feats, student_feats, boxes, image_shape)``: L levels on each side,
    (B, C_t, H_l, W_l) and (B, C_s, H_l, W_l) with equal B, H_l, W_l; per image its GT boxes
    (N_i, 4), xyxy, in the coordinates of the padded batch tensor of shape ``image_shape`` = (H, W)
    (used only when ``fg_weight != bg_weight``). Returns ``{"loss_at", "loss_am"}`` (the enabled
    ones), unweighted float32 scalars.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        num_levels: int,
        *,
        temperature: float,
        use_at: bool = True,
        use_am: bool = True,
        spatial: bool = True,
        channel: bool = True,
        fg_weight: float = 1.0,
        bg_weight: float = 1.0,
        always_adapt: bool = True,
        mask_source: str = "sum",
        attention_from: str = "raw",
    ) -> None:
        super().__init__()
        check_structure(teacher_channels, student_channels, num_levels)
        if mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source must be one of {', '.join(MASK_SOURCES)}, got {mask_source!r}")
        if attention_from not in ATTENTION_FROM:
            raise ValueError(f"attention_from must be one of {', '.join(ATTENTION_FROM)}, got {attention_from!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        for name, value in (("fg_weight", fg_weight), ("bg_weight", bg_weight)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if fg_weight == 0 and bg_weight == 0:
            raise ValueError(f"fg_weight and bg_weight cannot both be 0, got {fg_weight!r}, {bg_weight!r}")
        if not (use_at or use_am):
            raise ValueError(f"at least one of use_at, use_am must be True, got {use_at!r}, {use_am!r}")
        if not (spatial or channel):
            raise ValueError(f"at least one of spatial, channel must be True, got {spatial!r}, {channel!r}")

        self.num_levels = num_levels
        self.temperature = float(temperature)
        self.use_at, self.use_am = use_at, use_am
        self.spatial, self.channel = spatial, channel
        self.fg_weight, self.bg_weight = float(fg_weight), float(bg_weight)
        self.mask_source = mask_source
        self.attention_from = attention_from
        differ = teacher_channels != student_channels

        self.feature_adapters = (
            LevelAdapters(student_channels, teacher_channels, num_levels)
            if use_am and (always_adapt or differ)
            else None
        )
        self.spatial_adapters = (
            nn.ModuleList(nn.Conv2d(1, 1, kernel_size=3, padding=1) for _ in range(num_levels))
            if use_at and spatial and always_adapt
            else None
        )
        self.channel_adapters = (
            nn.ModuleList(nn.Linear(student_channels, teacher_channels) for _ in range(num_levels))
            if use_at and channel and (always_adapt or differ)
            else None
        )

    @torch.no_grad()
    def set_identity(self) -> None:
        """Make every adaptation layer the identity (needs equal channel counts)."""
        if self.feature_adapters is not None:
            self.feature_adapters.set_identity()
        for conv in self.spatial_adapters or ():
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = 1.0
            conv.bias.zero_()
        for fc in self.channel_adapters or ():
            if fc.in_features != fc.out_features:
                raise ValueError(f"identity adaptation needs equal channels, got {fc.in_features} -> {fc.out_features}")
            fc.weight.copy_(torch.eye(fc.in_features))
            fc.bias.zero_()

    def _at_level(self, level: int, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        loss = t.new_zeros(t.shape[0])
        if self.spatial:
            s_att = spatial_attention(s).unsqueeze(1)
            if self.spatial_adapters is not None:
                s_att = self.spatial_adapters[level](s_att)
            loss = loss + per_image_l2(s_att.squeeze(1) - spatial_attention(t))
        if self.channel:
            s_att = channel_attention(s)
            if self.channel_adapters is not None:
                s_att = self.channel_adapters[level](s_att)
            loss = loss + per_image_l2(s_att - channel_attention(t))
        return loss.mean()

    def _adapt(self, level: int, s: torch.Tensor) -> torch.Tensor:
        return self.feature_adapters.adapters[level](s) if self.feature_adapters is not None else s

    @torch.no_grad()
    def _masks(
        self, t: torch.Tensor, s_raw: torch.Tensor, s_adapted: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ones = torch.ones_like(t[:, :1, :1, :1])
        m_s = m_c = ones
        if self.mask_source == "teacher":
            spatial_src = channel_src = (t,)
        elif self.attention_from == "raw":
            spatial_src = (s_raw, t)
            channel_src = (s_raw if s_raw.shape[1] == t.shape[1] else s_adapted, t)
        else:
            spatial_src = channel_src = (s_adapted, t)
        if self.spatial:
            m_s = spatial_mask(sum(spatial_attention(a) for a in spatial_src), self.temperature).unsqueeze(1)
        if self.channel:
            m_c = channel_mask(sum(channel_attention(a) for a in channel_src), self.temperature)[:, :, None, None]
        return m_s, m_c

    def attention_masks(self, level: int, t: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L_AM's masks at ``level`` for teacher ``t`` and raw student ``s`` features, without grad.

        Returns M^s (B, 1, H, W) and M^c (B, C_t, 1, 1), each all ones when its kind is switched
        off (GT-box reweighting, if any, is not included).
        """
        t, s = t.detach().float(), s.detach().float()
        return self._masks(t, s, self._adapt(level, s))

    def _am_level(
        self,
        level: int,
        t: torch.Tensor,
        s: torch.Tensor,
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> torch.Tensor:
        s_adapted = self._adapt(level, s)
        # The masks only weight the imitation (as in the authors' code); the student should not
        # lower L_AM by reshaping its own attention.
        m_s, m_c = self._masks(t, s, s_adapted)
        with torch.no_grad():
            weight = m_s * m_c
            if self.fg_weight != self.bg_weight:
                fg = foreground_mask(boxes, t, image_shape)
                weight = weight * (self.bg_weight + (self.fg_weight - self.bg_weight) * fg)
            elif self.fg_weight != 1.0:
                weight = weight * self.fg_weight
        # Σ d²·M = ‖d·√M‖², written as a norm so the gradient stays finite when d = 0.
        return per_image_l2((t - s_adapted) * weight.sqrt()).mean()

    def forward(
        self,
        teacher_feats: Sequence[torch.Tensor],
        student_feats: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        check_feature_levels(teacher_feats, student_feats, self.num_levels)
        losses: dict[str, torch.Tensor] = {}
        at_terms, am_terms = [], []
        for level, (t, s) in enumerate(zip(teacher_feats, student_feats)):
            if t.shape[0] != s.shape[0] or t.shape[-2:] != s.shape[-2:]:
                raise ValueError(
                    f"level {level}: teacher {tuple(t.shape)} and student {tuple(s.shape)} differ in batch or size"
                )
            t = t.detach().float()
            s = s.float()
            if self.use_at:
                at_terms.append(self._at_level(level, t, s))
            if self.use_am:
                am_terms.append(self._am_level(level, t, s, boxes, image_shape))
        if self.use_at:
            losses["loss_at"] = torch.stack(at_terms).sum()
        if self.use_am:
            losses["loss_am"] = torch.stack(am_terms).sum()
        return losses
