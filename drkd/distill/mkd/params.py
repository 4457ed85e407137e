"""MKD's parameters (the ``distill.mkd`` section), its settings and MKD's search space.

Torch-free: the config schema, the sweeps and the tables read these without building a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drkd.config.errors import ConfigError
from drkd.config.methods import MethodParams

if TYPE_CHECKING:
    import optuna

DEFAULT_POOL_SCALES = (2, 4, 8)  # the pool_k of Eq. 1


def mkd_defaults(two_stage: bool) -> dict[str, object]:
    """MKD's settings. Only α = 1.0 is given by the paper (Table 5, RTMDet, one-stage only); T and ζ
    are not stated: T = 1 follows the channel-wise distillation it builds on, ζ = 0.5 is our choice.
    The paper has no two-stage setting, so ``two_stage`` does not change them."""
    del two_stage
    return {"alpha": 1.0, "temperature": 1.0, "mask_ratio": 0.5, "pool_scales": DEFAULT_POOL_SCALES}


@dataclass
class MKDParams(MethodParams):
    """MKD (Xu et al., 2024): L_all = L_det + α·(L_fea + L_Multiscale + L_FDMD + L_FAD) (Eq. 6).

    Args:
        alpha: the one weight of all four terms; ``None``: 1.0 (Table 5).
        temperature: T of Eq. 5; ``None``: 1.0.
        mask_ratio: ζ of Eq. 3, in [0, 1]; ``None``: 0.5.
        pool_scales: the pool_k of Eq. 1; ``None``: (2, 4, 8).
        use_fea, use_ms, use_freq, use_align: switch each term (Table 4).
        always_adapt: keep the 1×1 student adapter (shared by all terms) when channels match.
        seed: seeds the frequency masks (reproducible runs); ``None``: the global RNG.
    """

    # On the embedded default MKD's paper weight makes its loss 255x the detection loss on the one-stage pair and 590x on
    # the two-stage pair, where DRKD's paper λ give 0.63x and 0.34x, and it diverges; each factor gives it
    # DRKD's starting ratio on that pair (bench/loss_balance.py; two-stage measured 2026-12-06).
    embedded_weight_scale = {"one_stage": 0.0025, "two_stage": 0.00057}

    alpha: float | None = None
    temperature: float | None = None
    mask_ratio: float | None = None
    pool_scales: list[int] | None = None
    use_fea: bool = True
    use_ms: bool = True
    use_freq: bool = True
    use_align: bool = True
    always_adapt: bool = True
    seed: int | None = None

    def validate(self, where: str) -> None:
        for name in ("alpha", "temperature"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{where}.{name} = {value!r}: must be > 0")
        if self.mask_ratio is not None and not 0.0 <= self.mask_ratio <= 1.0:
            raise ConfigError(f"{where}.mask_ratio = {self.mask_ratio!r}: must be in [0, 1]")
        if self.pool_scales is not None and (not self.pool_scales or min(self.pool_scales) < 1):
            raise ConfigError(f"{where}.pool_scales = {self.pool_scales!r}: must be positive integers")

    def check_active(self, where: str) -> None:
        if not (self.use_fea or self.use_ms or self.use_freq or self.use_align):
            raise ConfigError(f"{where}: use_fea, use_ms, use_freq and use_align are all off")

    def distiller_kwargs(self, two_stage: bool) -> dict[str, Any]:
        return self.with_defaults(mkd_defaults(two_stage))


def search_space(trial: optuna.trial.Trial, two_stage: bool) -> dict[str, object]:
    """α log-uniform over [0.05, 10] (Table 5 tried 0.1, 1, 5), T log-uniform over [0.5, 4], ζ over [0.1, 0.9]."""
    del two_stage
    return {
        "distill.mkd.alpha": trial.suggest_float("distill.mkd.alpha", 0.05, 10.0, log=True),
        "distill.mkd.temperature": trial.suggest_float("distill.mkd.temperature", 0.5, 4.0, log=True),
        "distill.mkd.mask_ratio": trial.suggest_float("distill.mkd.mask_ratio", 0.1, 0.9),
    }
