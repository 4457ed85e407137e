"""NLD's parameters (the ``distill.nld`` section), the paper's settings and NLD's search space.

Torch-free: the config schema, the sweeps and the tables read these without building a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drkd.config.errors import ConfigError
from drkd.config.methods import MethodParams

if TYPE_CHECKING:
    import optuna

# Sub-sampling of the non-local keys per level, highest resolution first, the last entry repeated
# for the remaining levels. The paper is silent; this is the authors' code (8, 4, then 2), which
# keeps the affinity matrix of a stride-4 level of an 800×1333 image to ~10^8 entries.
DEFAULT_SUB_SAMPLE = (8, 4, 2)
# Whose attention builds the L_AM masks: "sum" = student + teacher (the paper, Sec. 3.1); "teacher" =
# the teacher's alone (the authors' code multiplies the student's by 0).
MASK_SOURCES = ("sum", "teacher")
# Which student features give the student attention in the L_AM masks: "raw" = the student's own
# features (the authors' code and mmrazor's FBKD port); "adapted" = after L_AM's 1×1 adaptation conv.
# The paper's Sec. 3.1 writes A^S for both, which does not settle it.
ATTENTION_FROM = ("raw", "adapted")
# Key max-pooling of the non-local blocks on maps whose sides are not multiples of the sub-sampling
# k: "floor" drops the remainder rows/columns (the reference nn.MaxPool2d, the authors' code);
# "ceil" keeps them as partial windows. Mirrors drkd.distill.non_local.POOL_MODES (this module is torch-free).
NON_LOCAL_POOL_MODES = ("floor", "ceil")


def nld_defaults(two_stage: bool) -> dict[str, float]:
    """The paper's α, β, γ, T (Sec. 4.1) for two-stage or one-stage detectors."""
    if two_stage:
        return {"alpha": 7e-5, "beta": 4e-3, "gamma": 7e-5, "temperature": 0.1}
    return {"alpha": 4e-4, "beta": 2e-2, "gamma": 4e-4, "temperature": 0.5}


@dataclass
class NLDParams(MethodParams):
    """NLD (Zhang & Ma, ICLR 2021): L_Distill = α·L_AT + β·L_AM + γ·L_NLD (Eq. 3).

    Args:
        alpha, beta, gamma, temperature: λ of L_AT, L_AM, L_NLD and the softmax temperature T
            (Sec. 3.3, 4.1); ``None`` takes :func:`nld_defaults` for the student's framework.
        use_at, use_am, use_nld: switch each term (Table 4); disabled parts are not built.
        spatial, channel: the two kinds of attention (Appendix A).
        non_local_mode: ``embedded_gaussian`` (default, the paper's main results), ``gaussian``,
            ``dot_product`` or ``concatenation`` (Table 5).
        non_local_sub_sample: key sub-sampling per level, an int or a per-level list.
        always_adapt: build all adaptation layers of Appendix B even when channels match.
        fg_weight, bg_weight: GT-box reweighting of L_AM (not in the paper; 1, 1 = paper).
        mask_source: ``sum`` (the paper) or ``teacher`` (the authors' code), see MASK_SOURCES.
        attention_from: ``raw`` (default, the authors' code) or ``adapted``: the student features the
            L_AM masks' student attention comes from, see ATTENTION_FROM.
        non_local_pool_mode: ``floor`` (default, the reference block) or ``ceil``: key pooling on maps
            whose size is not a multiple of the sub-sampling, see NON_LOCAL_POOL_MODES.
    """

    # On the embedded default NLD's paper weights make its loss 16x the detection loss on the one-stage pair and 9.5x on
    # the two-stage pair, where DRKD's paper λ give 0.63x and 0.34x, and it diverges; each factor gives it
    # DRKD's starting ratio on that pair (bench/loss_balance.py; two-stage measured 2026-12-06).
    embedded_weight_scale = {"one_stage": 0.040, "two_stage": 0.035}

    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    temperature: float | None = None
    use_at: bool = True
    use_am: bool = True
    use_nld: bool = True
    spatial: bool = True
    channel: bool = True
    non_local_mode: str = "embedded_gaussian"
    non_local_sub_sample: int | list[int] = field(default_factory=lambda: list(DEFAULT_SUB_SAMPLE))
    always_adapt: bool = True
    fg_weight: float = 1.0
    bg_weight: float = 1.0
    mask_source: str = "sum"
    attention_from: str = "raw"
    non_local_pool_mode: str = "floor"

    def validate(self, where: str) -> None:
        for name in ("alpha", "beta", "gamma", "temperature"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{where}.{name} = {value!r}: must be > 0")
        if self.mask_source not in MASK_SOURCES:
            raise ConfigError(f"{where}.mask_source = {self.mask_source!r}: must be one of {', '.join(MASK_SOURCES)}")
        if self.attention_from not in ATTENTION_FROM:
            raise ConfigError(
                f"{where}.attention_from = {self.attention_from!r}: must be one of {', '.join(ATTENTION_FROM)}"
            )
        if self.non_local_pool_mode not in NON_LOCAL_POOL_MODES:
            raise ConfigError(
                f"{where}.non_local_pool_mode = {self.non_local_pool_mode!r}: "
                f"must be one of {', '.join(NON_LOCAL_POOL_MODES)}"
            )

    def check_active(self, where: str) -> None:
        if not (self.use_at or self.use_am or self.use_nld):
            raise ConfigError(f"{where}: use_at, use_am and use_nld are all off")

    def distiller_kwargs(self, two_stage: bool) -> dict[str, Any]:
        return self.with_defaults(nld_defaults(two_stage))


def search_space(trial: optuna.trial.Trial, two_stage: bool) -> dict[str, object]:
    """Log-uniform ranges around the paper's defaults.

    α and β span both the paper's assignment (α on L_AT, β on L_AM) and the authors' code, which
    weights L_AM by the smaller value and L_AT by the larger one.
    """
    # (low, high) per parameter; the one-stage defaults are ~5× the two-stage ones.
    ranges = (
        {
            "alpha": (1e-5, 1e-2),
            "beta": (1e-5, 1e-1),
            "gamma": (1e-5, 1e-3),
        }
        if two_stage
        else {
            "alpha": (5e-5, 5e-2),
            "beta": (5e-5, 5e-1),
            "gamma": (5e-5, 5e-3),
        }
    )
    ranges["temperature"] = (0.05, 1.0)
    return {
        f"distill.nld.{name}": trial.suggest_float(f"distill.nld.{name}", low, high, log=True)
        for name, (low, high) in ranges.items()
    }
