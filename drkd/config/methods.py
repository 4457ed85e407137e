"""The method registry: what the rest of drkd knows about a distillation method, filled by the methods.

Each method package under ``drkd/distill/<name>/`` builds one :class:`MethodSpec` and passes it to
:func:`register_method` when it is imported (``drkd.distill`` imports every such package). Nothing
outside a method's package spells its name: the config schema takes its ``distill.<name>`` section
from here, the sweeps its search space, the presets its embedded-default weight scale, the tables
its display name and row order. The registry is torch-free, so reading results needs no torch.

The registry lives in the config layer (not in ``drkd.distill``) because config validation needs a
method's parameter class, and the config layer imports nothing above it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import optuna

NO_DISTILLATION = "none"  # `distill.method: none`: the student trains alone (the baseline)
DEFAULT_METHOD = "drkd"  # the platform's own method: the default of `distill.method` and of the search


class MethodParams:
    """Base of a method's typed parameters: the dataclass behind one ``distill.<name>`` section.

    Subclasses are ``@dataclass`` classes whose fields are the section's keys (defaults = the
    method's defaults; ``None`` where the paper's value depends on the detector type). Unknown keys
    and wrongly typed values are rejected by the config loader with the field named.
    """

    #: framework (one_stage, two_stage) -> factor the embedded default applies to all of this
    #: method's loss weights on that framework's pair (see presets); a framework left out: 1
    embedded_weight_scale: ClassVar[dict[str, float]] = {}

    def validate(self, where: str) -> None:
        """Range checks that types alone do not catch; raise ``ConfigError`` naming ``where.<field>``.

        Runs on every method's section, whichever method is selected."""

    def check_active(self, where: str) -> None:
        """Checks that matter only when this method is ``distill.method`` (e.g. "not every term off")."""

    def distiller_kwargs(self, two_stage: bool) -> dict[str, Any]:
        """Keyword arguments of the method's distiller for a one- or two-stage student.

        Default: every field as is. Override to fill the paper's per-detector values in
        (:meth:`with_defaults`).
        """
        del two_stage
        return self.field_values()

    def field_values(self) -> dict[str, Any]:
        """Every field by name, as set."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def with_defaults(self, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """Every field, the ``None`` ones replaced by ``defaults[field]`` where it has one."""
        return {k: defaults[k] if v is None and k in defaults else v for k, v in self.field_values().items()}


SearchSpaceFn = Callable[["optuna.trial.Trial", bool], "dict[str, Any] | None"]


@dataclass(frozen=True)
class MethodSpec:
    """Everything drkd needs to know about one distillation method.

    Args:
        name: the ``distill.method`` value and the config section name (``distill.<name>``).
        params: the method's :class:`MethodParams` dataclass (the section's schema and defaults).
        distiller: the :class:`~drkd.distill.base.Distiller` subclass, or its ``"module:Class"``
            path, imported on first use so that registering a method does not import torch.
        display_name: how tables name the method (e.g. ``"NLD"``).
        search_space: Optuna define-by-run space ``(trial, two_stage) -> {dotted key: value}`` for
            ``lambda_search.py --method <name>``; values it samples with ``trial.suggest_*`` under
            dotted keys (``distill.<name>.<field>``) are applied too.
        table_rank: position among the methods in Table 6 (baseline first, then ascending).
        live_columns: dotted keys shown in the sweep's live trial table.
        ddp_find_unused_parameters: the method leaves some of its parameters without a gradient in
            some steps, so DDP must look for them every step (slower); default False.
    """

    name: str
    params: type
    distiller: type | str
    display_name: str
    search_space: SearchSpaceFn
    table_rank: int = 50
    live_columns: tuple[str, ...] = ()
    ddp_find_unused_parameters: bool = False

    def distiller_class(self) -> type:
        """The distiller class (imports its module when registered by path)."""
        if not isinstance(self.distiller, str):
            return self.distiller
        module, _, attr = self.distiller.partition(":")
        return getattr(importlib.import_module(module), attr)


_METHODS: dict[str, MethodSpec] = {}
# Names a method cannot take: the distill section's own keys (drkd.config.schema.DistillConfig).
RESERVED_NAMES = (NO_DISTILLATION, "method", "weight_scale", "allow_untrained_teacher", "params")


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry (re-registering the same name replaces it); returns it."""
    if spec.name in RESERVED_NAMES or not spec.name.isidentifier():
        raise ValueError(f"method name {spec.name!r}: must be an identifier other than {', '.join(RESERVED_NAMES)}")
    if not (dataclasses.is_dataclass(spec.params) and issubclass(spec.params, MethodParams)):
        raise TypeError(f"method {spec.name!r}: params must be a dataclass subclassing MethodParams")
    _METHODS[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Remove ``name`` from the registry (tests and interactive sessions; a no-op if absent)."""
    _METHODS.pop(name, None)


def method_spec(name: str) -> MethodSpec:
    """The registered spec of ``name``; ``KeyError`` naming the known methods otherwise."""
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"method {name!r}: unknown (known: {', '.join(method_names(with_none=True))})") from None


def method_names(with_none: bool = False) -> tuple[str, ...]:
    """Registered method names in table order, optionally with the baseline ``none`` first."""
    names = tuple(s.name for s in sorted(_METHODS.values(), key=lambda s: (s.table_rank, s.name)))
    return ((NO_DISTILLATION,) if with_none else ()) + names


def method_specs() -> Iterator[MethodSpec]:
    """Registered specs in table order."""
    return (_METHODS[name] for name in method_names())


def display_name(method: str) -> str:
    """A method's name in tables (``Baseline`` for ``none``; the raw name if unregistered)."""
    if method == NO_DISTILLATION:
        return "Baseline"
    return _METHODS[method].display_name if method in _METHODS else method
