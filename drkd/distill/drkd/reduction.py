"""How DRKD's distances become one loss value: batch-size invariant means, or the authors' sums.

The paper's λ (§4.5) were tuned against the authors' code (nizhenliang/Dual-Relation-Knowledge-
Distillation, ``mmdet/models/detectors/two_stage.py``), which reduces each term by sums:

* L_PR: one ``torch.dist`` over the whole (B, C, H, W) batch tensor per FPN level, summed over levels;
* L_IR and L_INS: one ``torch.dist`` per image (over all of its instances), summed over images and
  over the instance levels.

``"authors"`` reproduces those reductions, so the paper's λ give the authors' training signal
(the COCO configs use it). ``"mean"`` (the default, the embedded default's) averages instead: per
image, over images (or instances for L_INS) and over levels, so a loss does not grow with the batch
size, the number of levels or of instances. At the paper's setting (2 images per GPU, 5 levels,
instances on 2 levels, about 7 instances per image) the authors' value is about 5·√2 ≈ 7.1× the
mean for L_PR, 2·2 = 4× for L_IR and 2·2·√7 ≈ 10.6× for L_INS, for the same per-image error: the
paper's λ in ``"mean"`` mode are that much weaker (``python bench/paper_parity.py`` measures the factors).
"""

from __future__ import annotations

import torch

from drkd.distill.drkd.params import REDUCTIONS
from drkd.distill.feature_distance import feature_distance


def check_reduction(kind: str) -> str:
    """Return ``kind`` if it names a reduction (:data:`~drkd.distill.drkd.params.REDUCTIONS`), else raise ValueError."""
    if kind not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {kind!r}")
    return kind


def over_levels(terms: list[torch.Tensor], reduction: str) -> torch.Tensor:
    """The loss from its per-level terms: their mean (``"mean"``) or sum (``"authors"``)."""
    stacked = torch.stack(terms)
    return stacked.sum() if reduction == "authors" else stacked.mean()


def batch_distance(a: torch.Tensor, b: torch.Tensor, distance: str, reduction: str) -> torch.Tensor:
    """One level's distance between two (S, ...) tensors: the mean of the S per-sample distances
    (``"mean"``), or one distance over all of them at once (``"authors"``: ``torch.dist(a, b)``).

    An empty S gives an exact 0 that stays connected to the graph.
    """
    if reduction == "authors":
        return feature_distance(a.reshape(1, -1), b.reshape(1, -1), distance)[0]
    distances = feature_distance(a, b, distance)
    return distances.sum() / max(1, distances.shape[0])
