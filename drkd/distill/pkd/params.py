"""PKD's parameters (the ``distill.pkd`` section), the per-detector loss weights and the search space.

Torch-free: the config schema, the sweeps and the tables read these without building a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drkd.config.errors import ConfigError
from drkd.config.methods import MethodParams

if TYPE_CHECKING:
    import optuna


def pkd_defaults(two_stage: bool) -> dict[str, float]:
    """The loss weight of the authors' COCO configs (open-mmlab/mmrazor, configs/distill/mmdet/pkd):
    6 for Faster R-CNN (pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco), 10 for RetinaNet
    (pkd_fpn_retina_x101_retina_r50_2x_coco), applied to every FPN level's term."""
    return {"weight": 6.0 if two_stage else 10.0}


@dataclass
class PKDParams(MethodParams):
    """PKD (Cao et al., NeurIPS 2022): MSE between per-channel standardised FPN features, summed over levels.

    Args:
        weight: the loss weight of L_pkd (> 0); ``None``: :func:`pkd_defaults` for the student's framework.
        always_adapt: put a 1×1 adapter on the student even when its FPN width equals the teacher's
            (the paper has none; one is built anyway when the widths differ). Default False.
    """

    # On the embedded default PKD's published weight makes its loss 23x the detection loss on the one-stage pair and 11x on
    # the two-stage pair, where DRKD's paper λ give 0.63x and 0.34x; each factor gives it
    # DRKD's starting ratio on that pair (bench/loss_balance.py; two-stage measured 2026-12-06).
    embedded_weight_scale = {"one_stage": 0.027, "two_stage": 0.029}

    weight: float | None = None
    always_adapt: bool = False

    def validate(self, where: str) -> None:
        if self.weight is not None and not self.weight > 0:
            raise ConfigError(f"{where}.weight = {self.weight!r}: must be > 0")

    def distiller_kwargs(self, two_stage: bool) -> dict[str, Any]:
        return self.with_defaults(pkd_defaults(two_stage))


def search_space(trial: optuna.trial.Trial, two_stage: bool) -> dict[str, object]:
    """weight log-uniform over 1/8×–8× the framework's default, as DRKD's λ are searched."""
    default = pkd_defaults(two_stage)["weight"]
    name = "distill.pkd.weight"
    return {name: trial.suggest_float(name, default / 8, default * 8, log=True)}
