"""NLD (Zhang & Ma, ICLR 2021): attention-guided + non-local distillation.

L_Distill = α·L_AT + β·L_AM + γ·L_NLD  (Eq. 3), with the paper's settings (Sec. 4.1):
two-stage α = γ = 7e-5, β = 4e-3, T = 0.1; one-stage α = γ = 4e-4, β = 2e-2, T = 0.5.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from drkd.adaptation import LevelAdapters
from drkd.attention_guided import AttentionGuidedLoss, per_image_l2
from drkd.distiller_base import Distiller, check_feature_levels, check_structure
from drkd.non_local import NON_LOCAL_MODES, NonLocalBlock

if TYPE_CHECKING:
    import optuna

# Sub-sampling of the non-local keys per level, highest resolution first, the last entry repeated
# for the remaining levels. The paper is silent; this is the authors' code (8, 4, then 2), which
# keeps the affinity matrix of a stride-4 level of an 800×1333 image to ~10^8 entries.
DEFAULT_SUB_SAMPLE = (8, 4, 2)


def nld_defaults(two_stage: bool) -> dict[str, float]:
    """The paper's α, β, γ, T (Sec. 4.1) for two-stage or one-stage detectors."""
    if two_stage:
        return {"alpha": 7e-5, "beta": 4e-3, "gamma": 7e-5, "temperature": 0.1}
    return {"alpha": 4e-4, "beta": 2e-2, "gamma": 4e-4, "temperature": 0.5}


def search_space(trial: "optuna.trial.Trial", two_stage: bool) -> dict[str, object]:
    """Log-uniform ranges around the paper's defaults.

    α and β span both the paper's assignment (α on L_AT, β on L_AM) and the authors' code, which
    weights L_AM by the smaller value and L_AT by the larger one.
    """
    # (low, high) per parameter; the one-stage defaults are ~5× the two-stage ones.
    ranges = {
        "alpha": (1e-5, 1e-2), "beta": (1e-5, 1e-1), "gamma": (1e-5, 1e-3),
    } if two_stage else {
        "alpha": (5e-5, 5e-2), "beta": (5e-5, 5e-1), "gamma": (5e-5, 5e-3),
    }
    ranges["temperature"] = (0.05, 1.0)
    return {
        f"distill.nld.{name}": trial.suggest_float(f"distill.nld.{name}", low, high, log=True)
        for name, (low, high) in ranges.items()
    }


class NonLocalDistillation(nn.Module):
    """L_NLD = Σ_levels mean_b ‖f(NL_S(A^S)) − NL_T(A^T)‖₂ (Sec. 3.2, Fig. 2b).

    One non-local block per level on each side (both trained by this loss alone; the teacher
    features are detached), the student's followed by a 1×1 adaptation conv (Appendix B). The
    distilled relation is the block output, as in the authors' code: with both blocks trainable,
    distilling the bare response y would let both collapse to y = 0.
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
    ) -> None:
        super().__init__()
        if mode not in NON_LOCAL_MODES:
            raise ValueError(f"non_local_mode must be one of {NON_LOCAL_MODES}, got {mode!r}")
        schedule = [sub_sample] if isinstance(sub_sample, int) else list(sub_sample)
        if not schedule or any(int(k) != k or k < 1 for k in schedule):
            raise ValueError(f"non_local_sub_sample must be positive integers, got {sub_sample!r}")
        schedule = (schedule + [schedule[-1]] * num_levels)[:num_levels]
        self.num_levels = num_levels
        self.student_blocks = nn.ModuleList(
            NonLocalBlock(student_channels, mode=mode, sub_sample=k) for k in schedule)
        self.teacher_blocks = nn.ModuleList(
            NonLocalBlock(teacher_channels, mode=mode, sub_sample=k) for k in schedule)
        self.adapters = (
            LevelAdapters(student_channels, teacher_channels, num_levels)
            if always_adapt or teacher_channels != student_channels else None
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

    Parameters (paper section in brackets):
      * ``alpha``, ``beta``, ``gamma``, ``temperature``: λ of L_AT, L_AM, L_NLD and the softmax
        temperature T [Sec. 3.3, 4.1]; ``None`` takes :func:`nld_defaults` for ``two_stage``.
      * ``use_at``, ``use_am``, ``use_nld``: switch each term [Table 4]; disabled parts are not built.
      * ``spatial``, ``channel``: the two kinds of attention [Appendix A].
      * ``non_local_mode``: embedded_gaussian (default, the paper's main results) | gaussian |
        dot_product | concatenation [Table 5].
      * ``non_local_sub_sample``: key sub-sampling per level (int or per-level sequence).
      * ``always_adapt``: build all adaptation layers of Appendix B even when channels match.
      * ``fg_weight``, ``bg_weight``: optional GT-box reweighting of L_AM (not in the paper;
        1, 1 = paper).
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
    ) -> None:
        super().__init__()
        defaults = nld_defaults(two_stage)
        alpha = defaults["alpha"] if alpha is None else alpha
        beta = defaults["beta"] if beta is None else beta
        gamma = defaults["gamma"] if gamma is None else gamma
        temperature = defaults["temperature"] if temperature is None else temperature
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("temperature", temperature)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        check_structure(teacher_channels, student_channels, num_levels)
        if not (use_at or use_am or use_nld):
            raise ValueError("at least one of use_at, use_am, use_nld must be True, got all False")

        self.hparams = {"alpha": alpha, "beta": beta, "gamma": gamma, "temperature": temperature}
        self.attention = (
            AttentionGuidedLoss(
                teacher_channels, student_channels, num_levels, temperature=temperature,
                use_at=use_at, use_am=use_am, spatial=spatial, channel=channel,
                fg_weight=fg_weight, bg_weight=bg_weight, always_adapt=always_adapt, mask_source=mask_source)
            if use_at or use_am else None
        )
        self.non_local = (
            NonLocalDistillation(
                teacher_channels, student_channels, num_levels, mode=non_local_mode,
                sub_sample=non_local_sub_sample, always_adapt=always_adapt)
            if use_nld else None
        )
        self.loss_weights = {}
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

    def forward(
        self,
        teacher_feats: Sequence[torch.Tensor],
        student_feats: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        teacher_feats = [t.detach() for t in teacher_feats]
        losses: dict[str, torch.Tensor] = {}
        if self.attention is not None:
            losses.update(self.attention(teacher_feats, student_feats, boxes, image_shape))
        if self.non_local is not None:
            losses["loss_nld"] = self.non_local(teacher_feats, student_feats)
        return losses
