"""MGD: hand-computed values, parity with a reference written from the authors' FeatureLoss
(yzd-v/MGD, det/mmdet/distillation/losses/mgd.py), the mask, gradient routing."""

from __future__ import annotations

import optuna
import pytest
import torch
from distiller_checks import assert_gradient_routing
from torch import nn

from drkd.config import ConfigError
from drkd.distill.mgd.distiller import MGDDistiller, random_mask
from drkd.distill.mgd.params import MGDParams, search_space

NO_BOXES = [torch.zeros(0, 4)] * 2


@torch.no_grad()
def _identity_generation(d: MGDDistiller) -> None:
    """G(x) = ReLU(x): both 3×3 convs pass each channel's centre tap through."""
    for block in d.generation:
        for conv in (block[0], block[2]):
            conv.weight.zero_()
            conv.bias.zero_()
            for c in range(conv.weight.shape[0]):
                conv.weight[c, c, 1, 1] = 1.0


def _authors_mgd(d: MGDDistiller, preds_s: list[torch.Tensor], preds_t: list[torch.Tensor], alpha: float, lam: float):
    """Their per-level loss on our blocks: mask from torch.rand((N,1,H,W)) > 1 − λ → 0, generate,
    MSE(reduction='sum') / N, times α; levels summed (one FeatureLoss per level in their configs)."""
    loss = 0.0
    for s, t, generation in zip(preds_s, preds_t, d.generation):
        n, _, h, w = t.shape
        mat = torch.rand((n, 1, h, w))
        mat = torch.where(mat > 1 - lam, 0, 1)
        loss = loss + nn.MSELoss(reduction="sum")(generation(torch.mul(s, mat)), t) / n * alpha
    return loss


def test_hand_computed_value_with_nothing_masked() -> None:
    d = MGDDistiller(2, 2, 1, alpha=1.0, mask_ratio=0.0)
    _identity_generation(d)
    student = torch.full((2, 2, 2, 2), 3.0)  # G(S) = S; teacher 1: (3 − 1)² = 4 per element
    loss = d([torch.ones(2, 2, 2, 2)], [student], NO_BOXES, (8, 8))["loss_mgd"]
    assert loss.item() == pytest.approx(4 * 16 / 2)  # 2 images × 8 elements, summed, / N = 2
    # where the regenerated student equals the teacher, nothing is left
    assert d([student], [student], NO_BOXES, (8, 8))["loss_mgd"].item() == 0.0


def test_parity_with_the_authors_loss_including_their_masks() -> None:
    torch.manual_seed(0)
    d = MGDDistiller(4, 4, 2, alpha=2e-5, mask_ratio=0.65)
    teacher = [torch.randn(2, 4, 6, 5), torch.randn(2, 4, 3, 3)]
    student = [torch.randn(2, 4, 6, 5), torch.randn(2, 4, 3, 3)]
    torch.manual_seed(7)
    ours = d.weighted_total(d(teacher, student, NO_BOXES, (24, 20)))
    torch.manual_seed(7)  # the same draws, in the same order (level by level)
    assert torch.allclose(ours, _authors_mgd(d, student, teacher, 2e-5, 0.65), rtol=1e-5)


def test_mask_drops_whole_positions_at_the_ratio() -> None:
    feat = torch.randn(4, 3, 64, 64)
    mask = random_mask(feat, 0.65, torch.Generator().manual_seed(0))
    assert mask.shape == (4, 1, 64, 64) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert abs(1 - mask.mean().item() - 0.65) < 0.02
    assert torch.equal(random_mask(feat, 0.0), torch.ones(4, 1, 64, 64))


def test_gradients_reach_student_align_and_generation_never_the_teacher() -> None:
    torch.manual_seed(1)
    assert_gradient_routing(MGDDistiller(6, 4, 2), (6, 4), [4, 2], NO_BOXES, 16)
    assert MGDDistiller(4, 4, 1).adapt.adapters is None  # equal widths: no align conv (as theirs)


def test_image_order_does_not_matter_without_masking_and_values_stay_finite() -> None:
    torch.manual_seed(2)
    d = MGDDistiller(4, 4, 2, mask_ratio=0.0)
    teacher = [torch.randn(3, 4, 4, 4), torch.randn(3, 4, 1, 1)]
    student = [torch.randn(3, 4, 4, 4), torch.randn(3, 4, 1, 1)]
    boxes = [torch.zeros(0, 4)] * 3
    order = torch.tensor([2, 1, 0])
    a = d(teacher, student, boxes, (16, 16))["loss_mgd"]
    b = d([t[order] for t in teacher], [s[order] for s in student], boxes, (16, 16))["loss_mgd"]
    assert torch.isfinite(a) and torch.allclose(a, b, rtol=1e-6)


def test_defaults_per_detector_validation_and_search_space() -> None:
    assert MGDParams().distiller_kwargs(two_stage=True) == {"alpha": 5e-7, "mask_ratio": 0.45}
    assert MGDParams().distiller_kwargs(two_stage=False) == {"alpha": 2e-5, "mask_ratio": 0.65}
    with pytest.raises(ConfigError, match=r"distill.mgd.mask_ratio = 1.0: must be in \[0, 1\)"):
        MGDParams(mask_ratio=1.0).validate("distill.mgd")
    with pytest.raises(ConfigError, match=r"distill.mgd.alpha = 0"):
        MGDParams(alpha=0).validate("distill.mgd")
    with pytest.raises(ValueError, match="mask_ratio"):
        MGDDistiller(4, 4, 1, mask_ratio=-0.1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    assert set(search_space(trial, two_stage=False)) == {"distill.mgd.alpha", "distill.mgd.mask_ratio"}
    assert trial.distributions["distill.mgd.alpha"].high == pytest.approx(16e-5)
