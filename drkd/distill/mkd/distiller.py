"""MKD (Xu et al., 2024): multiscale + frequency-mask + feature-alignment distillation.

L_all = L_det + α·(L_fea + L_Multiscale + L_FDMD + L_FAD)   (Eq. 6), α = 1.0 (Sec. 4.2, Table 5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from drkd.distill.adaptation import LevelAdapters
from drkd.distill.base import Distiller
from drkd.distill.mkd.feature_alignment import feature_alignment_loss
from drkd.distill.mkd.frequency_mask import frequency_mask_loss
from drkd.distill.mkd.multiscale_pooling import multiscale_loss
from drkd.distill.mkd.params import mkd_defaults


class MKDDistiller(Distiller):
    """MKD's four distillation terms: L = L_det + α·(L_fea + L_Multiscale + L_FDMD + L_FAD) (Eq. 6).

    ``loss_fea`` (plain feature MSE), ``loss_ms`` (Eq. 1), ``loss_freq`` (Eq. 2–4, L_FDMD),
    ``loss_align`` (Eq. 5, L_FAD), each summed over FPN levels and weighted by the same α (Eq. 6).
    All four compare the student levels, passed through one 1×1 adapter f per level (shared by the
    terms; see ``always_adapt``), with the teacher's, in float32; MKD uses no GT boxes.

    Args:
        teacher_channels, student_channels, num_levels: see :class:`~drkd.distill.base.Distiller`.
        two_stage: passed to :func:`~drkd.distill.mkd.params.mkd_defaults`, which ignores it (the
            paper has one-stage settings only).
        alpha: the one weight α of every enabled term, > 0; ``None``: 1.0 (Table 5).
        temperature: T of Eq. 5, > 0; ``None``: 1.0.
        mask_ratio: ζ of Eq. 3, the probability that a frequency is masked out, in [0, 1]; ``None``: 0.5.
        pool_scales: the pool_k window sizes of Eq. 1, positive integers; ``None``: (2, 4, 8).
        use_fea, use_ms, use_freq, use_align: switch each term (Table 4); at least one; default all on.
        always_adapt: keep the 1×1 student adapter when the channels match (default True); it is
            always built when they differ.
        seed: seeds a CPU generator for the frequency masks (reproducible runs); ``None``: the global RNG.

    Returns (from ``forward``): the unweighted ``loss_fea``, ``loss_ms``, ``loss_freq``, ``loss_align``
    of the enabled terms, each a float32 scalar; ``loss_weights`` holds α for each of them.
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
        super().__init__(teacher_channels, student_channels, num_levels)
        defaults = mkd_defaults(two_stage)
        alpha = defaults["alpha"] if alpha is None else alpha
        temperature = defaults["temperature"] if temperature is None else temperature
        mask_ratio = defaults["mask_ratio"] if mask_ratio is None else mask_ratio
        pool_scales = tuple(defaults["pool_scales"] if pool_scales is None else pool_scales)
        for name, value in (("alpha", alpha), ("temperature", temperature)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio!r}")
        if not pool_scales or any(int(k) != k or k < 1 for k in pool_scales):
            raise ValueError(f"pool_scales must be positive integers, got {pool_scales!r}")
        if not (use_fea or use_ms or use_freq or use_align):
            raise ValueError("at least one of use_fea, use_ms, use_freq, use_align must be True, got all False")

        self.temperature = float(temperature)
        self.mask_ratio = float(mask_ratio)
        self.pool_scales = pool_scales
        self.hparams = {
            "alpha": alpha,
            "temperature": temperature,
            "mask_ratio": mask_ratio,
            "pool_scales": pool_scales,
        }
        self.adapters = (
            LevelAdapters(student_channels, teacher_channels, num_levels)
            if always_adapt or teacher_channels != student_channels
            else None
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

    def losses(
        self,
        teacher_feats: list[torch.Tensor],
        student_feats: list[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shape: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        del boxes, image_shape  # MKD uses no GT information
        if self.adapters is not None:
            student_feats = self.adapters(student_feats)
        terms: dict[str, list[torch.Tensor]] = {key: [] for key in self.loss_weights}
        for t, s in zip(teacher_feats, student_feats):
            t = t.float()
            s = s.float()
            if "loss_fea" in terms:
                terms["loss_fea"].append(F.mse_loss(s, t))
            if "loss_ms" in terms:
                terms["loss_ms"].append(multiscale_loss(s, t, self.pool_scales))
            if "loss_freq" in terms:
                terms["loss_freq"].append(frequency_mask_loss(s, t, self.mask_ratio, generator=self.generator))
            if "loss_align" in terms:
                terms["loss_align"].append(feature_alignment_loss(s, t, self.temperature))
        return {key: torch.stack(values).sum() for key, values in terms.items()}
