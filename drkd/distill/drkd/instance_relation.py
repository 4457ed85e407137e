"""Instance-wise relation distillation (paper §3.2, Eq. 5–7).

Per image and per configured FPN level, the GT boxes are ROI-aligned to K×K (Eq. 5), flattened
to x ∈ R^{N×D·K·K}, and each side builds its relation matrix (Eq. 6)

    M_ij = w_ij · g1(x_i)·g2(x_j),   ψ_ij = exp(M_ij) / Σ_i' exp(M_i'j)

with g1, g2 fully connected layers and w_ij from a :class:`RelationFilter`. The softmax runs
over the *first* index i, as Eq. 6 writes (τ = Σ_∀i), so each column of ψ sums to 1. (Usual
non-local blocks, and the authors' code, ``nn.Softmax(-1)``, normalise over j instead.)

Eq. 7 then compares ψ_t with f(ψ_s). Teacher and student each have their own g1, g2 and filter,
and the student's g1, g2 read the student's D_s·K·K features directly, so the channel counts
never need matching: the "adaptive convolution" f acts on the relation matrix, read as a 1×1
conv on the N×N map seen as a one-channel image, i.e. a learned scale and bias, initialised to
the identity.

Reduction: the distance over all N² entries per image, averaged over the images that have at
least one instance, then over levels. With no instance in the batch the loss is an exact 0 that
is still connected to the graph (all modules run on empty inputs), so backward and DDP work.

Two targets (``target``): ``"relation"`` (default) distils ψ as Eq. 7 writes it. ``"features"``
distils what the authors' code distils (nizhenliang/Dual-Relation-Knowledge-Distillation,
``two_stage.py``): the non-local block's output z = W(ψ·g(x)) + x of each side, the student's
through a 1×1 conv, with their random relation mask, a D·K·K/2 embedding and the softmax over j
(:mod:`drkd.distill.drkd.object_relation`). Eq. 7 read literally sums a norm per pair, i.e. an L1
over the scalars ψ_ij; both targets take one Euclidean norm per image over all entries, which is
the authors' ``torch.dist`` (and so what the paper's λ were tuned against).

The teacher side of the relation filter (``teacher_filter``, ``"relation"`` target): its own
filter, frozen with the teacher's g1, g2, would be the constant 1 (the filter's last layer starts
at zero). ``"identity"`` (default) says so: ψ_t is unfiltered, and the filter (Table 4) is a
learned reweighting of the student's relations only. ``"shared"`` filters ψ_t with the student's
filter (its parameters get no gradient through the teacher side), so the switch changes both
sides; ``"random"`` gives the teacher a fixed random filter of its own (as the authors' code
effectively has). ``python bench/ir_collapse.py`` measured the choice: ``"shared"`` drifts ψ_t
towards uniform (column entropy 0.77 → 0.85 · log N in 600 steps, 0.87 in 2400, still rising),
because the student-side gradient learns a filter that flattens both sides; ``"random"`` changes
ψ_t by 2% (its weights are 1 + tanh of small values: about a constant); ``"identity"`` stays put.

Trivial solutions: trained on this loss alone, the teacher side is free to move ψ_t towards a
pattern the student matches without learning from the teacher (uniform, or one-hot columns).
bench/ir_collapse.py measures it: with trainable teacher embeddings ψ_t sharpens from a column
entropy of 0.77·log N to 0.07–0.22·log N and piles onto "hub" instances, while the loss drops
below what a frozen teacher allows. ``teacher_embed_trainable=False`` (the default) therefore
freezes the teacher's modules as fixed random projections (kept in the state dict). The authors
train theirs (set it True to reproduce them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from drkd.distill.drkd.instance_loss import InstanceLoss
from drkd.distill.drkd.object_relation import ObjectRelationBlock
from drkd.distill.drkd.params import IR_TARGETS, TEACHER_FILTERS
from drkd.distill.drkd.reduction import over_levels
from drkd.distill.drkd.relation_filter import RelationFilter
from drkd.distill.feature_distance import DEFAULT_DISTANCE, feature_distance
from drkd.distill.instance_features import instance_counts, pad_by_image


class InstanceRelationModule(nn.Module):
    """ψ of Eq. 6 for one image: (N, D, K, K) instance features -> (N, N), columns summing to 1.

    ψ_ij = exp(w_ij · g1(x_i)·g2(x_j)) / Σ_i' exp(w_i'j · g1(x_i')·g2(x_j)), x the flattened instances
    (N, D·K·K); N = 0 gives a (0, 0) matrix.

    Args:
        in_features: D·K·K, the size of one flattened instance feature (input width of g1, g2).
        embed_dim: E, the output width of the fully connected layers g1, g2.
        relation_filter: weight the similarities with a
            :class:`~drkd.distill.drkd.relation_filter.RelationFilter` of its own (default True, Table 4);
            False: w_ij = 1 unless ``forward`` is handed a filter.
        filter_init: the own filter's init, ``"zero"`` (default, W ≡ 1 until trained) or ``"random"``.
    """

    def __init__(
        self, in_features: int, embed_dim: int, relation_filter: bool = True, filter_init: str = "zero"
    ) -> None:
        super().__init__()
        self.g1 = nn.Linear(in_features, embed_dim)
        self.g2 = nn.Linear(in_features, embed_dim)
        self.filter = RelationFilter(embed_dim, init=filter_init) if relation_filter else None

    def forward(self, instances: torch.Tensor, relation_filter: RelationFilter | None = None) -> torch.Tensor:
        """ψ (N, N) of one image's ``instances`` (N, D, K, K); ``relation_filter``, if given, is used in
        place of the module's own filter, with its parameters detached (it gets no gradient from this side)."""
        valid = torch.ones(1, instances.shape[0], dtype=torch.bool, device=instances.device)
        return self.batched(instances.flatten(1).unsqueeze(0), valid, relation_filter)[0]

    def batched(
        self, x: torch.Tensor, valid: torch.Tensor, relation_filter: RelationFilter | None = None
    ) -> torch.Tensor:
        """ψ of every image of a padded batch at once, as :meth:`forward` computes it per image.

        Args:
            x: (B, N_max, D·K·K) flattened instance features per image, padded
                (:func:`~drkd.distill.instance_features.pad_by_image`).
            valid: (B, N_max) bool, True on real instances.
            relation_filter: as in :meth:`forward`.

        Returns:
            (B, N_max, N_max): image b's ψ (N_b × N_b, columns summing to 1) in its top-left block, zeros
            elsewhere. Padded rows are left out of each column's softmax (Eq. 6's Σ_i runs over the image's
            instances only).
        """
        q, k = self.g1(x), self.g2(x)
        logits = q @ k.transpose(-1, -2)
        if relation_filter is not None:
            detached = {name: p.detach() for name, p in relation_filter.named_parameters()}
            logits = torch.func.functional_call(relation_filter, detached, (q, k)) * logits
        elif self.filter is not None:
            logits = self.filter(q, k) * logits
        # the dtype's lowest finite value, not -inf: an image without instances must not give NaN
        logits = logits.masked_fill(~valid[:, :, None], torch.finfo(logits.dtype).min)
        return torch.softmax(logits, dim=1) * pair_mask(valid)


def pair_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, N, N) bool: True where both instances i and j of image b are real ones, from ``valid`` (B, N)."""
    return valid[:, :, None] & valid[:, None, :]


class RelationAdapter(nn.Module):
    """f of Eq. 7 on a relation matrix: a 1×1 conv on a one-channel map, i.e. a·ψ + b; identity at init."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, relation: torch.Tensor) -> torch.Tensor:
        return relation * self.weight + self.bias


class InstanceRelationLoss(InstanceLoss):
    """L_IR = Σ_(i,j) ||ψ(t_i, t_j) − f(ψ(s_i, s_j))||_2 (Eq. 7), averaged over images with instances and over levels.

    Per configured level and image, the GT boxes are ROI-aligned on both sides (Eq. 5), each side's
    :class:`InstanceRelationModule` gives ψ_t and ψ_s (N_i × N_i), f is a learned scale and bias
    (identity at init), and one distance is taken over all N_i² entries of ψ_t − f(ψ_s); the sum
    over images is divided by the number of images with at least one instance (the module docstring
    has the details and the authors' variant). With ``target="features"`` the distance is between
    the authors' block outputs z_t and conv1×1(z_s) (N_i, D_t, K, K) instead.

    Args:
        teacher_channels: D_t, channels of the teacher FPN levels (g1, g2 of ψ_t read D_t·K·K).
        student_channels: D_s, channels of the student FPN levels (g1, g2 of ψ_s read D_s·K·K).
        instance_size: K of the K×K ROI Align, 1, 3 or 5 (Table 3); default 3.
        levels: FPN level indices (0 = highest resolution) to pool instances from, distinct and
            non-negative; default (0, 1). Checked against the number of levels handed to ``forward``.
        embed_dim: E, width of g1, g2 of the ``"relation"`` target (default 128; the authors use
            D·K·K/2 = 1152, which only costs parameters: what is distilled is the N×N matrix). The
            ``"features"`` target always uses D·K·K/2, as the authors.
        relation_filter: use the relation filter of Eq. 6 in ψ (default True, Table 4).
        teacher_embed_trainable: train the teacher side's modules (default False: frozen random
            projections, which keeps ψ_t from collapsing; see the module docstring).
        target: ``"relation"`` (default: ψ, Eq. 7) or ``"features"`` (the authors' z).
        teacher_filter: the teacher side's filter for the ``"relation"`` target: ``"identity"``
            (default: none), ``"shared"`` (the student's, no gradient through the teacher side) or
            ``"random"`` (its own, random init, frozen unless ``teacher_embed_trainable``).
        distance: ``"euclidean"`` (default) or ``"squared"``
            (:func:`~drkd.distill.feature_distance.feature_distance`).
        reduction: ``"mean"`` (default: averaged over the images with instances, then over levels)
            or ``"authors"`` (summed over images and levels, as the authors' code; see
            :mod:`drkd.distill.drkd.reduction`).
        roi_aligned, roi_sampling_ratio: ``aligned`` and ``sampling_ratio`` of the ROI Align
            (:func:`~drkd.distill.instance_features.extract_instances`); default True, 2.

    ``forward(teacher_feats, student_feats, boxes, image_shape)``: the FPN levels of each side,
    (B, D_t, H_l, W_l) and (B, D_s, H_l, W_l); per image the GT boxes (N_i, 4), xyxy, in the
    coordinates of the padded batch tensor of shape ``image_shape`` = (H, W). Returns a float32
    scalar; an exact, graph-connected 0 when the batch has no instance.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        *,
        instance_size: int = 3,
        levels: Sequence[int] = (0, 1),
        embed_dim: int = 128,
        relation_filter: bool = True,
        teacher_embed_trainable: bool = False,
        target: str = "relation",
        teacher_filter: str = "identity",
        distance: str = DEFAULT_DISTANCE,
        reduction: str = "mean",
        roi_aligned: bool = True,
        roi_sampling_ratio: int = 2,
    ) -> None:
        super().__init__(
            instance_size=instance_size,
            levels=levels,
            distance=distance,
            reduction=reduction,
            roi_aligned=roi_aligned,
            roi_sampling_ratio=roi_sampling_ratio,
        )
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        if target not in IR_TARGETS:
            raise ValueError(f"target must be one of {IR_TARGETS}, got {target!r}")
        if teacher_filter not in TEACHER_FILTERS:
            raise ValueError(f"teacher_filter must be one of {TEACHER_FILTERS}, got {teacher_filter!r}")
        self.target = target
        self.teacher_filter = teacher_filter if relation_filter and target == "relation" else "identity"
        area = self.instance_size**2
        if target == "features":
            self.teacher_relation = nn.ModuleList(
                ObjectRelationBlock(teacher_channels * area, relation_filter=relation_filter) for _ in self.levels
            )
            self.student_relation = nn.ModuleList(
                ObjectRelationBlock(student_channels * area, relation_filter=relation_filter) for _ in self.levels
            )
            self.adapters = nn.ModuleList(nn.Conv2d(student_channels, teacher_channels, 1) for _ in self.levels)
        else:
            own_teacher_filter = self.teacher_filter == "random"
            self.teacher_relation = nn.ModuleList(
                InstanceRelationModule(teacher_channels * area, embed_dim, own_teacher_filter, filter_init="random")
                for _ in self.levels
            )
            self.student_relation = nn.ModuleList(
                InstanceRelationModule(student_channels * area, embed_dim, relation_filter) for _ in self.levels
            )
            self.adapters = nn.ModuleList(RelationAdapter() for _ in self.levels)
        self.teacher_embed_trainable = teacher_embed_trainable
        self.teacher_relation.requires_grad_(teacher_embed_trainable)

    def _teacher_side_filter(self, student: InstanceRelationModule) -> RelationFilter | None:
        """The filter handed to the teacher's ψ: the student's with ``teacher_filter="shared"``, else None
        (the teacher's module then uses its own filter, if it has one)."""
        return student.filter if self.teacher_filter == "shared" else None

    def relations(
        self, level_index: int, teacher_instances: torch.Tensor, student_instances: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two sides of Eq. 7 for one image's instances at the ``level_index``-th configured level:
        (ψ_t, f(ψ_s)), or (z_t, conv1×1(z_s)) for the ``"features"`` target."""
        student = self.student_relation[level_index]
        if self.target == "features":
            # student first: each block draws its random mask, in the authors' order
            z_s, _ = student(student_instances)
            z_t, _ = self.teacher_relation[level_index](teacher_instances)
            return z_t, self.adapters[level_index](z_s)
        psi_t = self.teacher_relation[level_index](teacher_instances, self._teacher_side_filter(student))
        return psi_t, self.adapters[level_index](student(student_instances))

    def image_distances(
        self, level_index: int, teacher_instances: torch.Tensor, student_instances: torch.Tensor, counts: list[int]
    ) -> torch.Tensor:
        """Eq. 7's distance per image at the ``level_index``-th configured level, (B,) float32.

        Args:
            teacher_instances, student_instances: the level's ROI features, (ΣN_i, D_t, K, K) and
                (ΣN_i, D_s, K, K), image 0 first.
            counts: N_i per image.
        """
        if self.target == "features":  # per image: each block draws a random mask per call
            terms = [
                self.relations(level_index, t_img, s_img)
                for t_img, s_img in zip(teacher_instances.split(counts), student_instances.split(counts))
            ]
            return torch.stack(
                [feature_distance(t.reshape(1, -1), s.reshape(1, -1), self.distance)[0] for t, s in terms]
            )
        # the "relation" target, every image at once on padded (B, N_max, N_max) relation matrices
        t, valid = pad_by_image(teacher_instances.flatten(1), counts)
        s, _ = pad_by_image(student_instances.flatten(1), counts)
        student = self.student_relation[level_index]
        psi_t = self.teacher_relation[level_index].batched(t, valid, self._teacher_side_filter(student))
        # f(ψ_s) off the image's block is f(0) = b: masked, so only the N_b² real pairs are compared
        f_psi_s = self.adapters[level_index](student.batched(s, valid)) * pair_mask(valid)
        return feature_distance(psi_t.flatten(1), f_psi_s.flatten(1), self.distance)

    def from_instances(
        self, levels: Sequence[tuple[torch.Tensor, torch.Tensor]], boxes: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """L_IR from the ROI features of :meth:`~drkd.distill.drkd.instance_loss.InstanceLoss.level_instances`."""
        counts = instance_counts(boxes)
        images_with_instances = max(1, sum(1 for n in counts if n > 0))
        level_terms = []
        # Images without instances add an exact, graph-connected 0.
        for index, (t, s) in enumerate(levels):
            total = self.image_distances(index, t, s, counts).sum()
            level_terms.append(total if self.reduction == "authors" else total / images_with_instances)
        return over_levels(level_terms, self.reduction)
