"""Pixel-wise relation distillation (paper §3.1, Eq. 1).

L_PR = 1/k Σ_i ||φ(t_i) − f(φ(s_i))||_2 over the k FPN levels, with a relation module φ per level
on each side (its own weights on the teacher side, trained with the distiller; the teacher
detector itself stays frozen) and an adaptive 1×1 conv f applied to the student's relation
features, after φ, as the equation writes.

Reduction (``reduction="mean"``, the default): per level, the distance is taken per image over
(C, H, W) and averaged over the images of the batch, then averaged over the k levels.
``reduction="authors"`` reproduces the authors' code (nizhenliang/Dual-Relation-Knowledge-
Distillation, ``two_stage.py``): one ``torch.dist`` over the whole (B, C, H, W) batch tensor per
level, summed over the levels, about sqrt(B)·k times the mean for the same per-image error.

Teacher features are detached here as well, so no gradient can reach the teacher detector even
if its features were computed with grad enabled.

The teacher-side φ_t is trained by L_PR alone (as in the authors' code), so it can erode its own
target: nothing stops it from shrinking or smoothing φ_t(t) towards what the student already
produces. ``teacher_module="frozen"`` guards against that: φ_t keeps its random init, with its
output BatchNorm at γ = 1 whatever ``glore_zero_init`` says (a frozen γ = 0 unit would be the
identity, and L_PR plain feature imitation); the same for ``pixel_module: non_local``. Its
parameters are frozen; its BatchNorm still normalises with the batch's statistics, as in training. ``python bench/pr_erosion.py`` measures both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from drkd.distill.adaptation import LevelAdapters
from drkd.distill.drkd.glore import GloRe
from drkd.distill.drkd.params import PR_TEACHER_MODULES
from drkd.distill.drkd.reduction import batch_distance, check_reduction, over_levels
from drkd.distill.feature_distance import DEFAULT_DISTANCE, check_distance, feature_distance
from drkd.distill.non_local import NonLocalBlock

# name -> constructor taking the channel count; add new pixel relation modules here.
# "non_local" is Table 2's alternative; its keys are max-pooled 2x so that a stride-8 level of
# a COCO-sized image stays within memory (the attention matrix is (HW) x (HW/4)).
PIXEL_RELATION_MODULES: dict[str, Callable[[int], nn.Module]] = {
    "glore": GloRe,
    "non_local": partial(NonLocalBlock, sub_sample=2),
}


def build_relation_module(name: str, channels: int, **options: object) -> nn.Module:
    """A pixel relation module φ for ``channels`` channels, by name (see PIXEL_RELATION_MODULES).

    Args:
        name: ``"glore"`` (:class:`~drkd.distill.drkd.glore.GloRe` with its defaults, the paper's) or
            ``"non_local"`` (an embedded-Gaussian :class:`~drkd.distill.non_local.NonLocalBlock` with
            keys max-pooled 2×, Table 2); anything else raises ValueError.
        channels: C of the features it runs on.
        options: keyword arguments of the module's constructor (e.g. GloRe's ``num_node``).

    Returns:
        A fresh module mapping (B, C, H, W) -> (B, C, H, W) that starts as the identity.
    """
    try:
        factory = PIXEL_RELATION_MODULES[name]
    except KeyError:
        raise ValueError(f"relation_module must be one of {sorted(PIXEL_RELATION_MODULES)}, got {name!r}") from None
    return factory(channels, **options)


def _module_options(
    relation_module: str, num_levels: int, glore_nodes: Sequence[int] | None, normalize: bool, zero_init: bool
) -> list[dict[str, object]]:
    """Per level, the constructor options of φ: GloRe's sizes and switches, none for other modules."""
    if relation_module != "glore":
        return [{} for _ in range(num_levels)]
    if glore_nodes is not None and (len(glore_nodes) != num_levels or min(glore_nodes) < 1):
        raise ValueError(f"glore_nodes must be {num_levels} positive integers (one per level), got {glore_nodes!r}")
    switches = {"normalize": normalize, "zero_init": zero_init}
    if glore_nodes is None:
        return [dict(switches) for _ in range(num_levels)]
    return [{**switches, "num_node": n, "num_state": 2 * n} for n in glore_nodes]


class PixelRelationLoss(nn.Module):
    """L_PR = 1/k Σ_i ||φ(t_i) − f(φ(s_i))||_2 (Eq. 1) over the k FPN levels; a scalar.

    Per level, φ_t runs on the (detached) teacher level, φ_s then the adapter f (1×1 conv C_s -> C_t)
    on the student level; the distance is taken per image over (C_t, H_l, W_l), averaged over the
    images, then averaged over the k levels (see the module docstring for the authors' reduction).

    Args:
        teacher_channels: C_t of every teacher level (width of the teacher-side φ).
        student_channels: C_s of every student level (width of the student-side φ; f maps C_s -> C_t).
        num_levels: k, the number of FPN levels (>= 1); each level has its own φ_t, φ_s and f.
        relation_module: φ, by name (:func:`build_relation_module`): ``"glore"`` (default, the
            paper's) or ``"non_local"`` (Table 2).
        distance: ``"euclidean"`` (default, the literal ||·||_2) or ``"squared"``
            (:func:`~drkd.distill.feature_distance.feature_distance`).
        reduction: ``"mean"`` (default: per image, averaged over images and levels) or
            ``"authors"`` (one distance over the batch per level, summed over levels; see
            :mod:`drkd.distill.drkd.reduction`).
        glore_nodes: GloRe only: graph nodes C2 per level (k entries; states C1 = 2·C2, as the
            reference's ``GloRe_Unit(C, mid)``); ``None`` (default): C2 = C/4, C1 = C/2 on every level.
            The authors' COCO setting is (64, 64, 256, 256, 256) on 256-channel FPNs.
        glore_normalize, glore_zero_init: GloRe's ``normalize`` and ``zero_init`` (default True,
            True; the authors' DRKD code: False, False).
        teacher_module: ``"trainable"`` (default, the authors': φ_t trained by L_PR) or ``"frozen"``
            (φ_t fixed at a random init with γ = 1: its target cannot erode; module docstring).

    ``forward(teacher_feats, student_feats)`` takes k levels on each side, (B, C_t, H_l, W_l) and
    (B, C_s, H_l, W_l) with equal B, H_l, W_l (ValueError otherwise), and returns a float32 scalar.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        num_levels: int,
        relation_module: str = "glore",
        distance: str = DEFAULT_DISTANCE,
        reduction: str = "mean",
        glore_nodes: Sequence[int] | None = None,
        glore_normalize: bool = True,
        glore_zero_init: bool = True,
        teacher_module: str = "trainable",
    ) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        if teacher_module not in PR_TEACHER_MODULES:
            raise ValueError(f"teacher_module must be one of {PR_TEACHER_MODULES}, got {teacher_module!r}")
        self.distance = check_distance(distance)
        self.reduction = check_reduction(reduction)
        options = _module_options(relation_module, num_levels, glore_nodes, glore_normalize, glore_zero_init)
        frozen = teacher_module == "frozen"
        teacher_options = _module_options(
            relation_module, num_levels, glore_nodes, glore_normalize, not frozen and glore_zero_init
        )
        if frozen and relation_module != "glore":
            # a frozen zero-initialised unit would be the identity, and L_PR plain feature imitation
            teacher_options = [{**o, "zero_init": False} for o in teacher_options]
        self.teacher_relation = nn.ModuleList(
            build_relation_module(relation_module, teacher_channels, **teacher_options[level])
            for level in range(num_levels)
        )
        self.teacher_relation.requires_grad_(not frozen)
        self.student_relation = nn.ModuleList(
            build_relation_module(relation_module, student_channels, **options[level]) for level in range(num_levels)
        )
        self.adapters = LevelAdapters(student_channels, teacher_channels, num_levels)

    def forward(self, teacher_feats: Sequence[torch.Tensor], student_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        k = len(self.teacher_relation)
        if len(teacher_feats) != k or len(student_feats) != k:
            raise ValueError(
                f"expected {k} feature levels, got {len(teacher_feats)} teacher and {len(student_feats)} student"
            )
        terms = []
        for level, (t, s) in enumerate(zip(teacher_feats, student_feats)):
            if t.shape[0] != s.shape[0] or t.shape[-2:] != s.shape[-2:]:
                raise ValueError(
                    f"level {level}: teacher {tuple(t.shape)} and student {tuple(s.shape)} differ in batch or size"
                )
            phi_t = self.teacher_relation[level](t.detach())  # never train the teacher detector
            phi_s = self.adapters.adapters[level](self.student_relation[level](s))
            if self.reduction == "authors":
                terms.append(batch_distance(phi_t, phi_s, self.distance, self.reduction))
            else:
                terms.append(feature_distance(phi_t, phi_s, self.distance).mean())
        if self.reduction == "authors":
            return over_levels(terms, self.reduction)
        # mean: summed level by level, then / k, the arithmetic L_PR always had (bit-for-bit results)
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total / len(terms)
