"""The ||·||_2 of the DRKD losses (Eq. 1, 7, 8), with a switch for how it is read.

The paper writes every DRKD loss with ``||a − b||_2``. The authors' released code
(nizhenliang/Dual-Relation-Knowledge-Distillation, ``mmdet/models/detectors/two_stage.py``)
computes all three with ``torch.dist(a, b, p=2)``: the literal Euclidean norm, square root
included. That is our default, ``"euclidean"``. The paper's λ were tuned against that distance
*and* the authors' sums over images and levels, which ``reduction="authors"`` reproduces
(:mod:`drkd.distill.drkd.reduction`); with the default ``"mean"`` reduction they are weaker.
``"squared"`` (sum of squared differences, the usual "L2 loss") is there for ablations.
"""

from __future__ import annotations

import torch

DISTANCES: tuple[str, ...] = ("euclidean", "squared")
DEFAULT_DISTANCE = "euclidean"


def check_distance(kind: str) -> str:
    """Return ``kind`` if it names a distance, else raise ValueError naming it."""
    if kind not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {kind!r}")
    return kind


def feature_distance(a: torch.Tensor, b: torch.Tensor, kind: str = DEFAULT_DISTANCE) -> torch.Tensor:
    """Per-sample distance ||a_s − b_s|| of the DRKD losses (the ||·||_2 of Eq. 1, 7, 8).

    ``"euclidean"``: sqrt(Σ (a − b)²) over every dimension but the first. Its gradient at
    a == b is zero, not NaN (PyTorch's norm backward masks a zero norm), so identical inputs
    are safe to backpropagate through.
    ``"squared"``: Σ (a − b)² over the same dimensions.

    Args:
        a, b: tensors of the same shape (S, ...) with at least one dimension, any float dtype;
            computed in float32 (a sum of squares overflows fp16).
        kind: ``"euclidean"`` (default) or ``"squared"``; anything else raises ValueError.

    Returns:
        (S,) float32, one distance per sample (row of the first dimension).
    """
    check_distance(kind)
    if a.shape != b.shape:
        raise ValueError(f"feature_distance needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() == 0:
        raise ValueError("feature_distance needs a leading sample dimension, got a 0-d tensor")
    # float32: a sum of squares over a whole feature map overflows fp16.
    diff = (a.float() - b.float()).flatten(1)
    if kind == "squared":
        return diff.pow(2).sum(dim=1)
    return torch.linalg.vector_norm(diff, ord=2, dim=1)
