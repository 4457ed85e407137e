"""PKD: hand-computed values, parity with a reference written from the authors' PKDLoss
(open-mmlab/mmrazor, mmrazor/models/losses/pkd_loss.py), invariances, gradient routing."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
import torch.nn.functional as F
from distiller_checks import assert_gradient_routing

from drkd.config import ConfigError
from drkd.distill.pkd.distiller import PKDDistiller, standardise
from drkd.distill.pkd.params import PKDParams, search_space

NO_BOXES = [torch.zeros(0, 4)] * 2


def _authors_pkd(preds_s: list[torch.Tensor], preds_t: list[torch.Tensor], loss_weight: float) -> torch.Tensor:
    """The authors' loss as their code computes it: per level, reshape to (C, N·H·W), standardise
    with torch.std (unbiased) + 1e-6, MSE / 2; levels summed, times the weight."""

    def norm(feat: torch.Tensor) -> torch.Tensor:
        n, c, h, w = feat.shape
        flat = feat.permute(1, 0, 2, 3).reshape(c, -1)
        flat = (flat - flat.mean(dim=-1, keepdim=True)) / (flat.std(dim=-1, keepdim=True) + 1e-6)
        return flat.reshape(c, n, h, w).permute(1, 0, 2, 3)

    loss = 0.0
    for s, t in zip(preds_s, preds_t):
        if s.shape[2] != t.shape[2]:
            s = F.interpolate(s, t.shape[2:], mode="bilinear")
        loss = loss + F.mse_loss(norm(s), norm(t)) / 2
    return loss * loss_weight


def test_hand_computed_value_for_an_anti_correlated_student() -> None:
    """One channel holding 0, 1, 2, 3: mean 1.5, unbiased std √(5/3), so mean(T̂²) = 3/4; a student
    of −T gives Ŝ = −T̂, and (Ŝ − T̂)² / 2 averages 2·3/4 = 1.5 (up to the 1e-6)."""
    d = PKDDistiller(1, 1, 1)
    teacher = torch.arange(4.0).view(1, 1, 2, 2)
    loss = d([teacher], [-teacher], NO_BOXES[:1], (8, 8))["loss_pkd"]
    assert math.isclose(loss.item(), 1.5, rel_tol=1e-5)
    # a perfectly correlated student of any positive scale and offset: zero (Pearson's invariance)
    assert d([teacher], [3 * teacher + 7], NO_BOXES[:1], (8, 8))["loss_pkd"].item() < 1e-10


def test_standardise_is_per_channel_over_batch_and_positions() -> None:
    x = torch.randn(3, 4, 5, 6) * torch.tensor([1.0, 10.0, 0.1, 3.0]).view(1, 4, 1, 1) + 5
    z = standardise(x)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4)
    # a single value per channel (a 1×1 level of one image): 0, not the authors' NaN
    assert torch.equal(standardise(torch.randn(1, 4, 1, 1)), torch.zeros(1, 4, 1, 1))


def test_parity_with_the_authors_loss_on_several_levels() -> None:
    torch.manual_seed(0)
    d = PKDDistiller(8, 8, 3, weight=6.0)
    teacher = [torch.randn(2, 8, s, s + 1) for s in (8, 4, 2)]
    student = [torch.randn(2, 8, s, s + 1) for s in (8, 4, 2)]
    ours = d.weighted_total(d(teacher, student, NO_BOXES, (32, 36)))
    assert torch.allclose(ours, _authors_pkd(student, teacher, 6.0), rtol=1e-5)


def test_adapter_only_when_the_widths_differ() -> None:
    assert PKDDistiller(8, 8, 2).adapt.adapters is None and not list(PKDDistiller(8, 8, 2).parameters())
    assert PKDDistiller(8, 8, 2, always_adapt=True).adapt.adapters is not None
    narrow = PKDDistiller(8, 4, 2)
    assert [tuple(a.conv.weight.shape) for a in narrow.adapt.adapters.adapters] == [(8, 4, 1, 1)] * 2


def test_gradients_reach_student_and_adapters_never_the_teacher() -> None:
    torch.manual_seed(1)
    assert_gradient_routing(PKDDistiller(6, 4, 2), (6, 4), [4, 2], NO_BOXES, 16)


def test_image_order_does_not_matter_and_values_stay_finite() -> None:
    torch.manual_seed(2)
    d = PKDDistiller(4, 4, 2)
    teacher = [torch.randn(3, 4, 4, 4), torch.randn(3, 4, 1, 1)]
    student = [torch.randn(3, 4, 4, 4), torch.randn(3, 4, 1, 1)]
    order = torch.tensor([2, 0, 1])
    boxes = [torch.zeros(0, 4)] * 3  # images without objects
    a = d(teacher, student, boxes, (16, 16))["loss_pkd"]
    b = d([t[order] for t in teacher], [s[order] for s in student], boxes, (16, 16))["loss_pkd"]
    assert torch.isfinite(a) and torch.allclose(a, b, rtol=1e-6)
    # batch of one with a 1×1 level (the smallest FPN level of a small image): finite
    one = d([t[:1] for t in teacher], [s[:1] for s in student], boxes[:1], (16, 16))["loss_pkd"]
    assert torch.isfinite(one)


def test_defaults_per_detector_validation_and_search_space() -> None:
    assert PKDParams().distiller_kwargs(two_stage=True) == {"weight": 6.0, "always_adapt": False}
    assert PKDParams().distiller_kwargs(two_stage=False) == {"weight": 10.0, "always_adapt": False}
    assert PKDParams(weight=2.0).distiller_kwargs(True)["weight"] == 2.0
    with pytest.raises(ConfigError, match=r"distill.pkd.weight = 0"):
        PKDParams(weight=0).validate("distill.pkd")
    with pytest.raises(ValueError, match="weight"):
        PKDDistiller(4, 4, 1, weight=-1.0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    params = search_space(trial, two_stage=False)
    dist = trial.distributions["distill.pkd.weight"]
    assert list(params) == ["distill.pkd.weight"] and dist.log and (dist.low, dist.high) == (10 / 8, 80.0)
