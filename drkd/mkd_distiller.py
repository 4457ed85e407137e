"""MKD (Xu et al., 2024): multiscale + frequency-mask + feature-alignment distillation.

L_all = L_det + α·(L_fea + L_Multiscale + L_FDMD + L_FAD)   (Eq. 6), α = 1.0 (Sec. 4.2, Table 5).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from drkd.adaptation import LevelAdapters
from drkd.distiller_base import Distiller, check_feature_levels, check_structure
from drkd.feature_alignment import feature_alignment_loss
from drkd.frequency_mask import frequency_mask_loss
from drkd.multiscale_pooling import DEFAULT_POOL_SCALES, multiscale_loss

if TYPE_CHECKING:
    import optuna


def mkd_defaults(two_stage: bool) -> dict[str, object]:
    """MKD's settings. Only α = 1.0 is given by the paper (Table 5, RTMDet, one-stage only); T and ζ
    are not stated: T = 1 follows the channel-wise distillation it builds on, ζ = 0.5 is our choice.
    The paper has no two-stage setting, so ``two_stage`` does not change them."""
    del two_stage
    return {"alpha": 1.0, "temperature": 1.0, "mask_ratio": 0.5, "pool_scales": DEFAULT_POOL_SCALES}


def search_space(trial: "optuna.trial.Trial", two_stage: bool) -> dict[str, object]:
    """α log-uniform over [0.05, 10] (Table 5 tried 0.1, 1, 5), T log-uniform over [0.5, 4], ζ over [0.1, 0.9]."""
    del two_stage
    return {
        "distill.mkd.alpha": trial.suggest_float("distill.mkd.alpha", 0.05, 10.0, log=True),
        "distill.mkd.temperature": trial.suggest_float("distill.mkd.temperature", 0.5, 4.0, log=True),
        "distill.mkd.mask_ratio": trial.suggest_float("distill.mkd.mask_ratio", 0.1, 0.9),
    }


class MKDDistiller(Distiller):
    """``loss_fea`` (plain feature MSE), ``loss_ms`` (Eq. 1), ``loss_freq`` (Eq. 2–4, L_FDMD),
    ``loss_align`` (Eq. 5, L_FAD), each summed over FPN levels and weighted by the same α (Eq. 6).

    Parameters: ``alpha``, ``temperature`` (T of Eq. 5), ``mask_ratio`` (ζ of Eq. 3), ``pool_scales``
    (the pool_k of Eq. 1) — ``None`` takes :func:`mkd_defaults`; ``use_fea``, ``use_ms``,
    ``use_freq``, ``use_align`` switch each term (Table 4); ``always_adapt`` keeps the 1×1 student
    adapter (shared by all terms) when channels match; ``seed`` makes the frequency masks
    reproducible.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        num_levels: int,
        *,
        two_stage: bool = False,
        alpha: float | None = None,
        temperature: float | None = None,
        mask_ratio: float | None = None,
        pool_scales: Sequence[int] | None = None,
        use_fea: bool = True,
        use_ms: bool = True,
        use_freq: bool = True,
        use_align: bool = True,
        always_adapt: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        defaults = mkd_defaults(two_stage)
        alpha = defaults["alpha"] if alpha is None else alpha
        temperature = defaults["temperature"] if temperature is None else temperature
        mask_ratio = defaults["mask_ratio"] if mask_ratio is None else mask_ratio
        pool_scales = tuple(defaults["pool_scales"] if pool_scales is None else pool_scales)
        check_structure(teacher_channels, student_channels, num_levels)
        for name, value in (("alpha", alpha), ("temperature", temperature)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio!r}")
        if not pool_scales or any(int(k) != k or k < 1 for k in pool_scales):
            raise ValueError(f"pool_scales must be positive integers, got {pool_scales!r}")
        if not (use_fea or use_ms or use_freq or use_align):
            raise ValueError("at least one of use_fea, use_ms, use_freq, use_align must be True, got all False")

        self.num_levels = num_levels
        self.temperature = float(temperature)
        self.mask_ratio = float(mask_ratio)
        self.pool_scales = pool_scales
        self.hparams = {"alpha": alpha, "temperature": temperature, "mask_ratio": mask_ratio,
                        "pool_scales": pool_scales}
        self.adapters = (
            LevelAdapters(student_channels, teacher_channels, num_levels)
            if always_adapt or teacher_channels != student_channels else None
        )
        self.generator = None
        if seed is not None and use_freq:
            self.generator = torch.Generator().manual_seed(int(seed))
        enabled = {"loss_fea": use_fea, "loss_ms": use_ms, "loss_freq": use_freq, "loss_align": use_align}
        self.loss_weights = {key: float(alpha) for key, on in enabled.items() if on}

    def set_identity(self) -> None:
        """Identity student adapter (tests, ablations; needs equal channel counts)."""
        if self.adapters is not None:
            self.adapters.set_identity()

    def forward(
        self,
        teacher_feats: Sequence[torch.Tensor],
        student_feats: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        del boxes, image_shape  # MKD uses no GT information
        check_feature_levels(teacher_feats, student_feats, self.num_levels)
        if self.adapters is not None:
            student_feats = self.adapters(list(student_feats))
        terms: dict[str, list[torch.Tensor]] = {key: [] for key in self.loss_weights}
        for t, s in zip(teacher_feats, student_feats):
            t = t.detach().float()
            s = s.float()
            if "loss_fea" in terms:
                terms["loss_fea"].append(F.mse_loss(s, t))
            if "loss_ms" in terms:
                terms["loss_ms"].append(multiscale_loss(s, t, self.pool_scales))
            if "loss_freq" in terms:
                terms["loss_freq"].append(
                    frequency_mask_loss(s, t, self.mask_ratio, generator=self.generator))
            if "loss_align" in terms:
                terms["loss_align"].append(feature_alignment_loss(s, t, self.temperature))
        return {key: torch.stack(values).sum() for key, values in terms.items()}
