"""Registry of distillation methods selected by name (`distill.method`)."""
from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    import optuna

    from drkd.config import Config
    from drkd.distiller_base import Distiller

# name -> (module, distiller class); each module also defines `search_space(trial, two_stage)`.
METHODS: dict[str, tuple[str, str]] = {
    "drkd": ("drkd.drkd_distiller", "DRKDDistiller"),
    "nld": ("drkd.nld_distiller", "NLDDistiller"),
    "mkd": ("drkd.mkd_distiller", "MKDDistiller"),
    "fitnet": ("drkd.fitnet_distiller", "FitNetDistiller"),
}
# Constructor arguments every distiller takes that are not method parameters.
_STRUCTURAL = {"self", "teacher_channels", "student_channels", "num_levels", "two_stage"}


def _lookup(method: str) -> tuple[Any, type]:
    if method not in METHODS:
        raise ValueError(f"method = {method!r}: unknown (known: none, {', '.join(METHODS)})")
    module_name, class_name = METHODS[method]
    module = importlib.import_module(module_name)
    return module, getattr(module, class_name)


def distiller_class(method: str) -> type:
    """The Distiller subclass registered under ``method``."""
    return _lookup(method)[1]


def method_params(method: str) -> list[str]:
    """The parameter names a peer method's config section may set."""
    _, cls = _lookup(method)
    return [p for p in inspect.signature(cls.__init__).parameters if p not in _STRUCTURAL]


def check_method_params(method: str, params: Mapping[str, Any]) -> None:
    """Reject unknown parameter names at config load, before any run starts."""
    known = method_params(method)
    for name in params:
        if name not in known:
            raise ValueError(f"{name}: unknown parameter of method {method!r} (known: {', '.join(known)})")


def build_distiller(cfg: "Config", teacher_channels: int, student_channels: int, num_levels: int) -> "Distiller | None":
    """The configured method's distiller, or None for `method: none`."""
    method = cfg.distill.method
    if method == "none":
        return None
    _, cls = _lookup(method)
    distiller = _construct(cls, cfg, teacher_channels, student_channels, num_levels)
    scale = cfg.distill.weight_scale.get(method, 1.0)
    distiller.loss_weights = {k: w * scale for k, w in distiller.loss_weights.items()}
    return distiller


def _construct(cls: type, cfg: "Config", teacher_channels: int, student_channels: int, num_levels: int) -> "Distiller":
    method = cfg.distill.method
    two_stage = cfg.student.two_stage
    if method == "drkd":
        from drkd.config import resolved_lambdas

        k = cfg.distill.drkd
        lambda_pr, lambda_ir, lambda_ins = resolved_lambdas(cfg)
        return cls(
            teacher_channels,
            student_channels,
            num_levels,
            use_pr=k.pr,
            use_ir=k.ir,
            use_ins=k.ins,
            lambda_pr=lambda_pr,
            lambda_ir=lambda_ir,
            lambda_ins=lambda_ins,
            instance_size=k.instance_size,
            instance_levels=tuple(k.instance_levels),
            relation_filter=k.relation_filter,
            pixel_module=k.pixel_module,
            teacher_embed_trainable=k.teacher_embed_trainable,
        )
    return cls(teacher_channels, student_channels, num_levels, two_stage=two_stage, **getattr(cfg.distill, method))


def search_space_fn(method: str) -> Callable[["optuna.trial.Trial", bool], dict[str, Any]]:
    """The method's Optuna define-by-run space: (trial, two_stage) -> flat dotted overrides."""
    module, _ = _lookup(method)
    return module.search_space
