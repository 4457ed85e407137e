"""The one place a config's ``distill`` section becomes a distiller module."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drkd.config.methods import NO_DISTILLATION, method_spec

if TYPE_CHECKING:
    from drkd.config import Config
    from drkd.distill.base import Distiller


def distiller_class(method: str) -> type:
    """The Distiller subclass registered under ``method``."""
    return method_spec(method).distiller_class()


def build_distiller(cfg: Config, teacher_channels: int, student_channels: int, num_levels: int) -> Distiller | None:
    """The configured method's distiller, or None for ``method: none``.

    Args:
        cfg: a validated Config; ``cfg.distill.method`` picks the method and
            ``cfg.distill.<method>`` its parameters, ``cfg.student.two_stage`` the paper's defaults.
        teacher_channels, student_channels: FPN channels of the two detectors.
        num_levels: FPN levels both detectors hand in.

    Every loss weight is multiplied by ``cfg.distill.scale_for(method, cfg.student.framework)``
    (``distill.weight_scale``; default 1).
    """
    method = cfg.distill.method
    if method == NO_DISTILLATION:
        return None
    distiller = distiller_class(method).from_params(
        cfg.distill.params[method], teacher_channels, student_channels, num_levels, cfg.student.two_stage
    )
    scale = cfg.distill.scale_for(method, cfg.student.framework)
    distiller.loss_weights = {k: w * scale for k, w in distiller.loss_weights.items()}
    return distiller
