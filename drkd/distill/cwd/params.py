"""CWD's parameters (the ``distill.cwd`` section), its COCO settings and search space.

Torch-free: the config schema, the sweeps and the tables read these without building a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drkd.config.errors import ConfigError
from drkd.config.methods import MethodParams

if TYPE_CHECKING:
    import optuna

# The FPN settings of the COCO configs in open-mmlab/mmrazor (configs/distill/mmdet/cwd:
# cwd_fpn_retina_r101_retina_r50_1x_coco inherits cwd_fpn_frcnn_r101_frcnn_r50_1x_coco): τ = 1 and
# weight 10 on every level, for both detector types.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_WEIGHT = 10.0


@dataclass
class CWDParams(MethodParams):
    """CWD (Shu et al., ICCV 2021): per-channel spatial softmax, KL from teacher to student, × τ².

    Args:
        weight: the loss weight of L_cwd (> 0); ``None``: 10.
        temperature: τ of the spatial softmax (> 0); ``None``: 1.
        always_adapt: a 1×1 adapter on the student even when its FPN width equals the teacher's
            (one is built anyway when the widths differ). Default False.
    """

    # On the embedded default CWD's published weights make its loss 32x the detection loss on the one-stage pair and 49x on
    # the two-stage pair, where DRKD's paper λ give 0.63x and 0.34x; each factor gives it
    # DRKD's starting ratio on that pair (bench/loss_balance.py; two-stage measured 2026-12-06).
    embedded_weight_scale = {"one_stage": 0.020, "two_stage": 0.0068}

    weight: float | None = None
    temperature: float | None = None
    always_adapt: bool = False

    def validate(self, where: str) -> None:
        for name in ("weight", "temperature"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{where}.{name} = {value!r}: must be > 0")

    def distiller_kwargs(self, two_stage: bool) -> dict[str, Any]:
        del two_stage  # the same settings for both detector types
        return self.with_defaults({"weight": DEFAULT_WEIGHT, "temperature": DEFAULT_TEMPERATURE})


def search_space(trial: optuna.trial.Trial, two_stage: bool) -> dict[str, object]:
    """weight log-uniform over 1/8×–8× the default; τ log-uniform over [0.5, 4] (the CWD paper's
    segmentation runs use τ = 4)."""
    del two_stage
    return {
        "distill.cwd.weight": trial.suggest_float(
            "distill.cwd.weight", DEFAULT_WEIGHT / 8, DEFAULT_WEIGHT * 8, log=True
        ),
        "distill.cwd.temperature": trial.suggest_float("distill.cwd.temperature", 0.5, 4.0, log=True),
    }
