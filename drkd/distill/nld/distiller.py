"""NLD (Zhang & Ma, ICLR 2021): attention-guided + non-local distillation.

L_Distill = α·L_AT + β·L_AM + γ·L_NLD  (Eq. 3), with the paper's settings (Sec. 4.1):
two-stage α = γ = 7e-5, β = 4e-3, T = 0.1; one-stage α = γ = 4e-4, β = 2e-2, T = 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from drkd.distill.adaptation import LevelAdapters
from drkd.distill.base import Distiller, check_feature_levels
from drkd.distill.nld.attention_guided import AttentionGuidedLoss, per_image_l2
from drkd.distill.nld.params import DEFAULT_SUB_SAMPLE, NON_LOCAL_POOL_MODES, nld_defaults
from drkd.distill.non_local import NON_LOCAL_MODES, NonLocalBlock


class NonLocalDistillation(nn.Module):
    """L_NLD = Σ_levels mean_b ‖f(NL_S(A^S)) − NL_T(A^T)‖₂ (Sec. 3.2, Fig. 2b); a scalar.

    One non-local block per level on each side (both trained by this loss alone; the teacher
    features are detached), the student's followed by a 1×1 adaptation conv (Appendix B). The
    distilled relation is the block output, as in the authors' code: with both blocks trainable,
    distilling the bare response y would let both collapse to y = 0.

    Args:
        teacher_channels: C_t of every teacher level (width of the teacher's blocks).
        student_channels: C_s of every student level (width of the student's blocks; f maps C_s -> C_t).
        num_levels: number of FPN levels L; one block per side and level.
        mode: the blocks' pairwise function (:class:`~drkd.distill.non_local.NonLocalBlock`, Table 5);
            default ``"embedded_gaussian"``.
        sub_sample: key sub-sampling per level, highest resolution first: an int for every level or a
            sequence whose last entry repeats for the remaining levels (extra entries are ignored);
            positive integers. Default ``DEFAULT_SUB_SAMPLE`` = (8, 4, 2), the authors' code.
        pool_mode: the blocks' key pooling on maps whose sides are not multiples of the sub-sampling:
            ``"floor"`` (default, the reference nn.MaxPool2d of the authors' code: the remainder
            rows/columns are dropped from the keys) or ``"ceil"`` (kept as partial windows).
        always_adapt: build f even when the channels match (default True); otherwise f exists only
            when C_s != C_t.

    ``forward(teacher_feats, student_feats)``: L levels on each side, (B, C_t, H_l, W_l) and
    (B, C_s, H_l, W_l). Returns the float32 scalar L_NLD, unweighted.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        num_levels: int,
        *,
        mode: str = "embedded_gaussian",
        sub_sample: int | Sequence[int] = DEFAULT_SUB_SAMPLE,
        always_adapt: bool = True,
        pool_mode: str = "floor",
    ) -> None:
        super().__init__()
        if mode not in NON_LOCAL_MODES:
            raise ValueError(f"non_local_mode must be one of {NON_LOCAL_MODES}, got {mode!r}")
        if pool_mode not in NON_LOCAL_POOL_MODES:
            raise ValueError(f"non_local_pool_mode must be one of {NON_LOCAL_POOL_MODES}, got {pool_mode!r}")
        schedule = [sub_sample] if isinstance(sub_sample, int) else list(sub_sample)
        if not schedule or any(int(k) != k or k < 1 for k in schedule):
            raise ValueError(f"non_local_sub_sample must be positive integers, got {sub_sample!r}")
        schedule = (schedule + [schedule[-1]] * num_levels)[:num_levels]
        self.num_levels = num_levels
        self.student_blocks = nn.ModuleList(
            NonLocalBlock(student_channels, mode=mode, sub_sample=k, pool_mode=pool_mode) for k in schedule
        )
        self.teacher_blocks = nn.ModuleList(
            NonLocalBlock(teacher_channels, mode=mode, sub_sample=k, pool_mode=pool_mode) for k in schedule
        )
        self.adapters = (
            LevelAdapters(student_channels, teacher_channels, num_levels)
            if always_adapt or teacher_channels != student_channels
            else None
        )

    def forward(self, teacher_feats: Sequence[torch.Tensor], student_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        check_feature_levels(teacher_feats, student_feats, self.num_levels)
        terms = []
        for level, (t, s) in enumerate(zip(teacher_feats, student_feats)):
            s_rel = self.student_blocks[level](s)
            if self.adapters is not None:
                s_rel = self.adapters.adapters[level](s_rel)
            t_rel = self.teacher_blocks[level](t.detach())
            terms.append(per_image_l2(s_rel.float() - t_rel.float()).mean())
        return torch.stack(terms).sum()


class NLDDistiller(Distiller):
    """Attention-guided (``loss_at``, ``loss_am``) and non-local (``loss_nld``) distillation.

    Args (paper section in brackets):
        teacher_channels, student_channels, num_levels: see :class:`~drkd.distill.base.Distiller`.
        two_stage: picks the paper's defaults for α, β, γ, T (:func:`~drkd.distill.nld.params.nld_defaults`).
        alpha, beta, gamma, temperature: λ of L_AT, L_AM, L_NLD and the softmax temperature T
            [Sec. 3.3, 4.1]; ``None`` takes the paper's value for ``two_stage``.
        use_at, use_am, use_nld: switch each term [Table 4]; disabled parts are not built.
        spatial, channel: the two kinds of attention [Appendix A].
        non_local_mode: embedded_gaussian (default, the paper's main results) | gaussian |
            dot_product | concatenation [Table 5].
        non_local_sub_sample: key sub-sampling per level (int or per-level sequence).
        always_adapt: build all adaptation layers of Appendix B even when channels match.
        fg_weight, bg_weight: optional GT-box reweighting of L_AM (not in the paper; 1, 1 = paper).
        mask_source: ``"sum"`` (the paper's student + teacher attention) or ``"teacher"`` (the
            authors' code) as the source of L_AM's masks.
        attention_from: ``"raw"`` (default, the authors' code) or ``"adapted"``: the student features
            (before / after L_AM's 1×1 adaptation conv) whose attention enters L_AM's masks.
        non_local_pool_mode: ``"floor"`` (default, the reference block) or ``"ceil"``: the non-local
            blocks' key pooling on maps whose size is not a multiple of the sub-sampling.
    Each term is summed over FPN levels; each level's term is a per-image L2 norm (as in Eq. 2)
    averaged over the batch.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        num_levels: int,
        *,
        two_stage: bool = False,
        alpha: float | None = None,
        beta: float | None = None,
        gamma: float | None = None,
        temperature: float | None = None,
        use_at: bool = True,
        use_am: bool = True,
        use_nld: bool = True,
        spatial: bool = True,
        channel: bool = True,
        non_local_mode: str = "embedded_gaussian",
        non_local_sub_sample: int | Sequence[int] = DEFAULT_SUB_SAMPLE,
        always_adapt: bool = True,
        fg_weight: float = 1.0,
        bg_weight: float = 1.0,
        mask_source: str = "sum",
        attention_from: str = "raw",
        non_local_pool_mode: str = "floor",
    ) -> None:
        super().__init__(teacher_channels, student_channels, num_levels)
        defaults = nld_defaults(two_stage)
        alpha = defaults["alpha"] if alpha is None else alpha
        beta = defaults["beta"] if beta is None else beta
        gamma = defaults["gamma"] if gamma is None else gamma
        temperature = defaults["temperature"] if temperature is None else temperature
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("temperature", temperature)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not (use_at or use_am or use_nld):
            raise ValueError("at least one of use_at, use_am, use_nld must be True, got all False")

        self.hparams = {"alpha": alpha, "beta": beta, "gamma": gamma, "temperature": temperature}
        self.attention = (
            AttentionGuidedLoss(
                teacher_channels,
                student_channels,
                num_levels,
                temperature=temperature,
                use_at=use_at,
                use_am=use_am,
                spatial=spatial,
                channel=channel,
                fg_weight=fg_weight,
                bg_weight=bg_weight,
                always_adapt=always_adapt,
                mask_source=mask_source,
                attention_from=attention_from,
            )
            if use_at or use_am
            else None
        )
        self.non_local = (
            NonLocalDistillation(
                teacher_channels,
                student_channels,
                num_levels,
                mode=non_local_mode,
                sub_sample=non_local_sub_sample,
                always_adapt=always_adapt,
                pool_mode=non_local_pool_mode,
            )
            if use_nld
            else None
        )
        if use_at:
            self.loss_weights["loss_at"] = float(alpha)
        if use_am:
            self.loss_weights["loss_am"] = float(beta)
        if use_nld:
            self.loss_weights["loss_nld"] = float(gamma)

    @torch.no_grad()
    def set_identity(self) -> None:
        """Identity adaptation everywhere (tests, ablations; needs equal channel counts)."""
        if self.attention is not None:
            self.attention.set_identity()
        if self.non_local is not None and self.non_local.adapters is not None:
            self.non_local.adapters.set_identity()

    def losses(
        self,
        teacher_feats: list[torch.Tensor],
        student_feats: list[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        if self.attention is not None:
            losses.update(self.attention(teacher_feats, student_feats, boxes, image_shape))
        if self.non_local is not None:
            losses["loss_nld"] = self.non_local(teacher_feats, student_feats)
        return losses
