"""The authors' instance relation block, whose *output features* their L_IR distils.

In the authors' code (nizhenliang/Dual-Relation-Knowledge-Distillation,
``mmdet/models/detectors/two_stage.py``, ``ObjectRelation_1``) each side runs a non-local block
over the GT instances of one image, x ∈ R^{N×D·K·K}:

    f = θ(x)·φ(x)ᵀ ⊙ m(x),   ψ = softmax_j(f),   z = W(ψ·g(x)) + x

with θ, φ, g fully connected layers to D·K·K/2, W back to D·K·K, and the "relation filter"
m(x) = softmax_j(x·Aᵀ + b) from an ``nn.Linear(D·K·K, N)`` built afresh, with PyTorch's default
init, on every call: random, never trained, never saved. Its rows average 1/N, so it mostly
divides the logits by about N (a temperature). L_IR then compares z_t with a 1×1 conv of z_s, so
through the residual x it is partly instance-feature imitation, not only relation imitation
(the paper's Eq. 7 distils ψ; :class:`~drkd.distill.drkd.instance_relation.InstanceRelationLoss`
offers both as ``target``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def random_relation_mask(x: torch.Tensor) -> torch.Tensor:
    """m(x) = softmax_j(x·Aᵀ + b), (N, N), with A (N, D) and b (N,) drawn as a fresh ``nn.Linear(D, N)`` draws them.

    The draw uses the global CPU generator in ``nn.Linear``'s order (A then b, each U(−1/√D, 1/√D)) and
    then moves to ``x``'s device, as the authors' ``nn.Linear(...).cuda()`` does, so seeding
    ``torch.manual_seed`` reproduces their mask.

    Args:
        x: flattened instance features (N, D), N >= 1.
    """
    n, d = x.shape
    bound = 1.0 / math.sqrt(d)
    weight = torch.empty(n, d).uniform_(-bound, bound)
    bias = torch.empty(n).uniform_(-bound, bound)
    logits = nn.functional.linear(x, weight.to(x.device, x.dtype), bias.to(x.device, x.dtype))
    return torch.softmax(logits, dim=-1)


class ObjectRelationBlock(nn.Module):
    """One side's block: instance features (N, D, K, K) -> (z (N, D, K, K), ψ (N, N)), as the module docstring.

    Args:
        in_features: D·K·K, the size of one flattened instance feature.
        inter_features: width of θ, φ, g; default ``in_features // 2`` (the authors').
        relation_filter: multiply the logits by the random mask m(x) (default True; the authors' code
            always does); False: ψ = softmax_j(θ(x)·φ(x)ᵀ).
    """

    def __init__(self, in_features: int, inter_features: int | None = None, relation_filter: bool = True) -> None:
        super().__init__()
        inter = in_features // 2 if inter_features is None else inter_features
        if in_features < 1 or inter < 1:
            raise ValueError(f"in_features and inter_features must be >= 1, got {in_features}, {inter}")
        self.theta = nn.Linear(in_features, inter)
        self.phi = nn.Linear(in_features, inter)
        self.g = nn.Linear(in_features, inter)
        self.W = nn.Linear(inter, in_features)
        self.relation_filter = relation_filter

    def forward(self, instances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = instances.flatten(1)
        logits = self.theta(x) @ self.phi(x).t()
        if self.relation_filter and x.shape[0] > 0:
            logits = logits * random_relation_mask(x)
        psi = torch.softmax(logits, dim=-1)
        z = self.W(psi @ self.g(x)).view_as(instances) + instances
        return z, psi
