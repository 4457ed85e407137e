"""FitNet's parameters (the ``distill.fitnet`` section) and search space.

Torch-free: the config schema, the sweeps and the tables read these without building a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drkd.config.errors import ConfigError
from drkd.config.methods import MethodParams

if TYPE_CHECKING:
    import optuna

# With mean reduction the loss is a per-element squared error, independent of map size, channel
# count, batch size and number of levels, on the order of the FPN features' variance (≈ 0.1–1),
# i.e. the scale of the detection losses it is added to; the same for both detector types.
DEFAULT_WEIGHT = 1.0


@dataclass
class FitNetParams(MethodParams):
    """FitNets-style feature imitation (Romero et al., ICLR 2015) on every FPN level.

    Args:
        weight: the loss weight of L_fitnet (> 0); ``None``: 1.0 (DEFAULT_WEIGHT).
    """

    # On the embedded default weight 1 makes FitNet's loss 1.7x the detection loss on the one-stage pair and 3.5x on
    # the two-stage pair, where DRKD's paper λ give 0.63x and 0.34x; each factor gives it
    # DRKD's starting ratio on that pair (bench/loss_balance.py; two-stage measured 2026-12-06).
    embedded_weight_scale = {"one_stage": 0.37, "two_stage": 0.097}

    weight: float | None = None

    def validate(self, where: str) -> None:
        if self.weight is not None and not self.weight > 0:
            raise ConfigError(f"{where}.weight = {self.weight!r}: must be > 0")

    def distiller_kwargs(self, two_stage: bool) -> dict[str, Any]:
        return self.with_defaults({"weight": DEFAULT_WEIGHT})


def search_space(trial: optuna.trial.Trial, two_stage: bool) -> dict[str, object]:
    """weight log-uniform over [0.1, 10]."""
    del two_stage
    return {"distill.fitnet.weight": trial.suggest_float("distill.fitnet.weight", 0.1, 10.0, log=True)}
