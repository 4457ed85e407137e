"""The relation filter of instance-wise relation distillation (paper §3.2, Fig. 4, Eq. 6).

It produces the weights w_ij that scale the instance similarities g1(x_i)·g2(x_j) before the
softmax, for any number of instances N.

The authors' code (nizhenliang/Dual-Relation-Knowledge-Distillation, ``two_stage.py``,
``ObjectRelation_1.resize``) builds ``nn.Linear(D·K·K, N)`` afresh on every call and uses
softmax(fc(x)) as the mask, so the filter is random, never trained and never saved. Here it is a
small pairwise MLP, shared by all pairs, so it is trained, checkpointed and defined for every N:

    w_ij = 1 + tanh(h([q̂_i, k̂_j, q̂_i ⊙ k̂_j])),   q̂ = q/||q||, k̂ = k/||k||

with q = g1(x), k = g2(x). The student's filter starts with the last layer of h zero-initialised,
so w ≡ 1 at init (the filter starts switched off) and training moves it; w stays in (0, 2).
``init="random"`` gives h's last layer PyTorch's default Linear init instead: a fixed random
filter when it is frozen (one of the teacher-side choices of
:class:`~drkd.distill.drkd.instance_relation.InstanceRelationLoss`). A zero-initialised filter
that is frozen is the constant 1: that is no filter at all. Embeddings are L2-normalised first so the
MLP's input scale does not depend on the detector's feature scale. Applying the same h to every
pair makes W permutation-equivariant: permuting the instances permutes W's rows and columns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RelationFilter(nn.Module):
    """The relation filter: pairwise weights W (N, N), w_ij ∈ (0, 2), from instance embeddings q, k (N, E).

    w_ij = 1 + tanh(h([q̂_i, k̂_j, q̂_i ⊙ k̂_j])) with h a two-layer MLP (3E -> hidden -> 1, ReLU) shared
    by all pairs; its last layer is zero-initialised, so W ≡ 1 at init (module docstring).

    Args:
        embed_dim: E, the width of q = g1(x) and k = g2(x) (>= 1).
        hidden_dim: width of h's hidden layer (>= 1); default 64.
        init: ``"zero"`` (default: h's last layer zero, W ≡ 1 until trained) or ``"random"``
            (PyTorch's default Linear init: a random W from the start).
    """

    INITS = ("zero", "random")

    def __init__(self, embed_dim: int, hidden_dim: int = 64, init: str = "zero") -> None:
        super().__init__()
        if embed_dim < 1 or hidden_dim < 1:
            raise ValueError(f"embed_dim and hidden_dim must be >= 1, got {embed_dim}, {hidden_dim}")
        if init not in self.INITS:
            raise ValueError(f"init must be one of {self.INITS}, got {init!r}")
        self.hidden = nn.Linear(3 * embed_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, 1)
        if init == "zero":
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, q: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        """W (..., N, N) with W[..., i, j] = w_ij for query instance i and key instance j.

        Args:
            q: query embeddings g1(x), (N, E), or (B, N, E) for a batch of images (one W each).
            k: key embeddings g2(x), the same shape as ``q``; default ``q``.
        """
        k = q if k is None else k
        if q.dim() not in (2, 3) or q.shape != k.shape:
            raise ValueError(
                f"expected q and k of equal shape (N, E) or (B, N, E), got {tuple(q.shape)} and {tuple(k.shape)}"
            )
        n, e = q.shape[-2:]
        pair_shape = (*q.shape[:-2], n, n, e)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        qi = q.unsqueeze(-2).expand(pair_shape)
        kj = k.unsqueeze(-3).expand(pair_shape)
        pairs = torch.cat([qi, kj, qi * kj], dim=-1)
        return 1.0 + torch.tanh(self.out(F.relu(self.hidden(pairs))).squeeze(-1))
