"""FGD's parameters (the ``distill.fgd`` section), its per-detector settings and search space.

Torch-free: the config schema, the sweeps and the tables read these without building a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drkd.config.errors import ConfigError
from drkd.config.methods import MethodParams

if TYPE_CHECKING:
    import optuna

# How GT boxes become feature cells: "paper" (Eq. 1–2: the cells a box covers, box/stride, scale
# 1/(H_r·W_r) over those cells) or "authors" (yzd-v/FGD's fgd.py: one extra cell past ceil on each
# axis, area counted with it, and the mask indexed [x-range, y-range] of an (H, W) map, i.e. with
# the axes swapped). Mirrors drkd.distill.fgd.focal_masks.BOX_CELLS (this module is torch-free).
BOX_CELLS = ("paper", "authors")


def fgd_defaults(two_stage: bool) -> dict[str, float]:
    """α, β, γ, λ and T of the authors' COCO configs (yzd-v/FGD, configs/distillers/fgd):
    Faster R-CNN (fgd_cascade_mask_rcnn_rx101_32x4d_distill_faster_rcnn_r50_fpn_2x_coco)
    5e-5, 2.5e-5, 5e-5, 5e-7; RetinaNet (fgd_retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco)
    1e-3, 5e-4, 5e-4, 5e-6; T = 0.5 for both."""
    if two_stage:
        return {"alpha": 5e-5, "beta": 2.5e-5, "gamma": 5e-5, "lam": 5e-7, "temperature": 0.5}
    return {"alpha": 1e-3, "beta": 5e-4, "gamma": 5e-4, "lam": 5e-6, "temperature": 0.5}


@dataclass
class FGDParams(MethodParams):
    """FGD (Yang et al., CVPR 2022): L = α·L_fg + β·L_bg + γ·L_at + λ·L_global (Eq. 4, 8, 11).

    Args:
        alpha, beta, gamma, lam: the weights of the foreground, background, attention and global
            losses (> 0); ``None``: :func:`fgd_defaults` for the student's framework.
        temperature: T of the attention softmaxes (> 0); ``None``: 0.5.
        use_fg, use_bg, use_attention, use_global: switch each term; a disabled one is not computed.
        box_cells: ``paper`` (default) or ``authors``, see BOX_CELLS.
    """

    # On the embedded default FGD's published weights make its loss 12x the detection loss on the one-stage pair and 2.2x on
    # the two-stage pair, where DRKD's paper λ give 0.63x and 0.34x; each factor gives it
    # DRKD's starting ratio on that pair (bench/loss_balance.py; two-stage measured 2026-12-06).
    embedded_weight_scale = {"one_stage": 0.054, "two_stage": 0.15}

    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    lam: float | None = None
    temperature: float | None = None
    use_fg: bool = True
    use_bg: bool = True
    use_attention: bool = True
    use_global: bool = True
    box_cells: str = "paper"

    def validate(self, where: str) -> None:
        for name in ("alpha", "beta", "gamma", "lam", "temperature"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{where}.{name} = {value!r}: must be > 0")
        if self.box_cells not in BOX_CELLS:
            raise ConfigError(f"{where}.box_cells = {self.box_cells!r}: must be one of {', '.join(BOX_CELLS)}")

    def check_active(self, where: str) -> None:
        if not (self.use_fg or self.use_bg or self.use_attention or self.use_global):
            raise ConfigError(f"{where}: use_fg, use_bg, use_attention and use_global are all off")

    def distiller_kwargs(self, two_stage: bool) -> dict[str, Any]:
        return self.with_defaults(fgd_defaults(two_stage))


def search_space(trial: optuna.trial.Trial, two_stage: bool) -> dict[str, object]:
    """α, γ, λ each log-uniform over 1/8×–8× the framework's default, β tied to α at the paper's
    β = α/2; T log-uniform over [0.25, 1]."""
    d = fgd_defaults(two_stage)

    def around(name: str) -> float:
        return trial.suggest_float(f"distill.fgd.{name}", d[name] / 8, d[name] * 8, log=True)

    alpha = around("alpha")
    return {
        "distill.fgd.alpha": alpha,
        "distill.fgd.beta": alpha * d["beta"] / d["alpha"],
        "distill.fgd.gamma": around("gamma"),
        "distill.fgd.lam": around("lam"),
        "distill.fgd.temperature": trial.suggest_float("distill.fgd.temperature", 0.25, 1.0, log=True),
    }
