"""DRKD's parameters (the ``distill.drkd`` section), the paper's λ and DRKD's search space.

Torch-free: the config schema, the sweeps and the tables read these without building a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drkd.config.errors import ConfigError
from drkd.config.methods import MethodParams

if TYPE_CHECKING:
    import optuna

ONE_STAGE_LAMBDAS: tuple[float, float, float] = (0.004, 0.004, 0.006)
# §4.5: for two-stage detectors λ1 and λ3 are multiplied by 0.25 and 0.3.
TWO_STAGE_FACTORS: tuple[float, float, float] = (0.25, 1.0, 0.3)
INSTANCE_SIZES: tuple[int, ...] = (1, 3, 5)  # the ROI sizes K the paper evaluates (Table 3)
PIXEL_MODULES: tuple[str, ...] = ("glore", "non_local")  # the pixel relation modules of Table 2
# How each term is reduced over images, instances and levels (drkd.distill.drkd.reduction):
# "mean" is batch-size invariant; "authors" sums as the authors' code does, which the paper's λ assume.
REDUCTIONS: tuple[str, ...] = ("mean", "authors")
# What L_IR distils: ψ (Eq. 7) or the authors' non-local block output z = W(ψ·g(x)) + x.
IR_TARGETS: tuple[str, ...] = ("relation", "features")
# The teacher-side pixel relation module: trained by L_PR (the authors') or frozen (its target cannot erode).
PR_TEACHER_MODULES: tuple[str, ...] = ("trainable", "frozen")
# The teacher side of the relation filter (drkd.distill.drkd.instance_relation).
TEACHER_FILTERS: tuple[str, ...] = ("identity", "shared", "random")
MAX_FPN_LEVEL = 4  # instance_levels index the 5 FPN levels, 0 = highest resolution (P3; P2 for Faster R-CNN)


def paper_lambdas(two_stage: bool) -> tuple[float, float, float]:
    """(λ1, λ2, λ3) from the paper's §4.5 for one-stage or two-stage detectors."""
    if not two_stage:
        return ONE_STAGE_LAMBDAS
    return tuple(lam * factor for lam, factor in zip(ONE_STAGE_LAMBDAS, TWO_STAGE_FACTORS))  # type: ignore[return-value]


@dataclass
class DRKDParams(MethodParams):
    """DRKD's switches and weights (paper §3, §4.3–4.5): L = L_det + λ1 L_PR + λ2 L_IR + λ3 L_INS (Eq. 9).

    Args:
        pr, ir, ins: switch the pixel-wise relation, instance-wise relation and instance
            distillation terms (Table 1). Default: all on.
        lambda_pr, lambda_ir, lambda_ins: λ1, λ2, λ3; ``None`` takes :func:`paper_lambdas` for
            the student's framework.
        instance_size: K of the K×K ROI Align of GT boxes (Table 3): 1, 3 or 5. Default 3.
        relation_filter: the learned relation filter w_ij of Eq. 6 (Table 4). Default on.
        instance_levels: FPN level indices (0 = highest resolution) instances are pooled from. Default [0, 1].
        pixel_module: the pixel relation module φ (Table 2): ``glore`` (default) or ``non_local``.
        teacher_embed_trainable: train the teacher-side IR modules (default off: trained, they
            collapse ψ_t to one-hot hubs, see bench/ir_collapse.py; the authors train theirs).
        ir_target: what L_IR distils: ``relation`` (default: ψ, Eq. 7) or ``features`` (the
            authors' code: their non-local block's output z = W(ψ·g(x)) + x, through a 1×1 conv).
        teacher_filter: the teacher side of the relation filter (``relation`` target):
            ``identity`` (default: ψ_t unfiltered), ``shared`` (the student's filter, no gradient
            from the teacher side) or ``random`` (a fixed random filter); bench/ir_collapse.py.
        reduction: ``mean`` (default: per image, averaged over images, instances and levels) or
            ``authors`` (the authors' code's sums, which the paper's λ were tuned against; the COCO
            configs use it). See :mod:`drkd.distill.drkd.reduction` for the factor between them.
        roi_aligned, roi_sampling_ratio: the ROI Align of the instance features (Eq. 5): drkd's
            default True, 2 (half-pixel correction, 2×2 samples per bin); the authors' code uses
            torchvision's defaults, False and adaptive sampling (0 here).
        glore_nodes: GloRe graph nodes per FPN level (5 entries; states = 2 × nodes); ``None``
            (default): a quarter of the FPN channels (states: half) on every level. The authors'
            COCO units: [64, 64, 256, 256, 256].
        pr_teacher: the teacher-side φ of L_PR: ``trainable`` (default, the authors': trained by
            L_PR alone, so it can erode its own target) or ``frozen`` (fixed at a random init, its
            output BatchNorm at γ = 1); ``python bench/pr_erosion.py`` measures both.
        glore_normalize, glore_zero_init: divide GloRe's node features by H·W, and start its
            output BatchNorm at γ = 0 (defaults True, True, as the reference GloRe; the authors'
            DRKD code: False, False).
    """

    pr: bool = True
    ir: bool = True
    ins: bool = True
    lambda_pr: float | None = None
    lambda_ir: float | None = None
    lambda_ins: float | None = None
    instance_size: int = 3
    relation_filter: bool = True
    instance_levels: list[int] = field(default_factory=lambda: [0, 1])
    pixel_module: str = "glore"
    teacher_embed_trainable: bool = False
    ir_target: str = "relation"
    teacher_filter: str = "identity"
    reduction: str = "mean"
    roi_aligned: bool = True
    roi_sampling_ratio: int = 2
    pr_teacher: str = "trainable"
    glore_nodes: list[int] | None = None
    glore_normalize: bool = True
    glore_zero_init: bool = True

    def validate(self, where: str) -> None:
        for name in ("lambda_pr", "lambda_ir", "lambda_ins"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{where}.{name} = {value!r}: must be >= 0")
        if self.instance_size not in INSTANCE_SIZES:
            raise ConfigError(
                f"{where}.instance_size = {self.instance_size!r}: must be one of {', '.join(map(str, INSTANCE_SIZES))}"
            )
        if self.glore_nodes is not None and (len(self.glore_nodes) != MAX_FPN_LEVEL + 1 or min(self.glore_nodes) < 1):
            raise ConfigError(
                f"{where}.glore_nodes = {self.glore_nodes}: must be {MAX_FPN_LEVEL + 1} positive integers, one per FPN level"
            )
        if self.roi_sampling_ratio < 0:
            raise ConfigError(f"{where}.roi_sampling_ratio = {self.roi_sampling_ratio}: must be >= 0 (0: adaptive)")
        for name, allowed in (
            ("ir_target", IR_TARGETS),
            ("teacher_filter", TEACHER_FILTERS),
            ("pr_teacher", PR_TEACHER_MODULES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{where}.{name} = {getattr(self, name)!r}: must be one of {', '.join(allowed)}")
        if self.reduction not in REDUCTIONS:
            raise ConfigError(f"{where}.reduction = {self.reduction!r}: must be one of {', '.join(REDUCTIONS)}")
        if self.pixel_module not in PIXEL_MODULES:
            raise ConfigError(
                f"{where}.pixel_module = {self.pixel_module!r}: must be one of {', '.join(PIXEL_MODULES)}"
            )
        if not self.instance_levels:
            raise ConfigError(f"{where}.instance_levels = []: needs at least one FPN level index")
        for i, level in enumerate(self.instance_levels):
            if not 0 <= level <= MAX_FPN_LEVEL:
                raise ConfigError(
                    f"{where}.instance_levels[{i}] = {level}: must be an FPN level index in 0..{MAX_FPN_LEVEL}"
                )

    def check_active(self, where: str) -> None:
        if not (self.pr or self.ir or self.ins):
            raise ConfigError(f"{where}: pr, ir and ins are all off; use distill.method: none for a baseline")

    def lambdas(self, two_stage: bool) -> tuple[float, float, float]:
        """(λ1, λ2, λ3): the given values, the paper's (§4.5) for the framework where unset."""
        given = (self.lambda_pr, self.lambda_ir, self.lambda_ins)
        return tuple(g if g is not None else d for g, d in zip(given, paper_lambdas(two_stage)))  # type: ignore[return-value]

    def distiller_kwargs(self, two_stage: bool) -> dict[str, Any]:
        lambda_pr, lambda_ir, lambda_ins = self.lambdas(two_stage)
        return dict(
            use_pr=self.pr,
            use_ir=self.ir,
            use_ins=self.ins,
            lambda_pr=lambda_pr,
            lambda_ir=lambda_ir,
            lambda_ins=lambda_ins,
            instance_size=self.instance_size,
            instance_levels=tuple(self.instance_levels),
            relation_filter=self.relation_filter,
            pixel_module=self.pixel_module,
            teacher_embed_trainable=self.teacher_embed_trainable,
            ir_target=self.ir_target,
            teacher_filter=self.teacher_filter,
            reduction=self.reduction,
            roi_aligned=self.roi_aligned,
            roi_sampling_ratio=self.roi_sampling_ratio,
            pr_teacher=self.pr_teacher,
            glore_nodes=None if self.glore_nodes is None else tuple(self.glore_nodes),
            glore_normalize=self.glore_normalize,
            glore_zero_init=self.glore_zero_init,
        )


def search_space(trial: optuna.trial.Trial, two_stage: bool) -> dict[str, object]:
    """Optuna define-by-run space: switches, then λ only for the terms that are on (log-uniform
    over 1/8×–8× the paper's value for the framework), instance size and filter only where used.

    At least one term is always on: INS is sampled only when PR or IR is on, and forced on otherwise.
    """
    defaults = paper_lambdas(two_stage)
    pr = trial.suggest_categorical("distill.drkd.pr", [True, False])
    ir = trial.suggest_categorical("distill.drkd.ir", [True, False])
    ins = trial.suggest_categorical("distill.drkd.ins", [True, False]) if (pr or ir) else True
    out: dict[str, object] = {} if (pr or ir) else {"distill.drkd.ins": True}
    for on, name, default in zip((pr, ir, ins), ("lambda_pr", "lambda_ir", "lambda_ins"), defaults):
        if on:
            trial.suggest_float(f"distill.drkd.{name}", default / 8, default * 8, log=True)
    if ir or ins:
        trial.suggest_categorical("distill.drkd.instance_size", list(INSTANCE_SIZES))
    if ir:
        trial.suggest_categorical("distill.drkd.relation_filter", [True, False])
    return out
