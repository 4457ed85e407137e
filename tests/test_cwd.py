"""CWD: hand-computed values, parity with a reference written from the authors' loss
(open-mmlab/mmrazor, mmrazor/models/losses/cwd.py), invariances, gradient routing."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
import torch.nn.functional as F
from distiller_checks import assert_gradient_routing

from drkd.config import ConfigError
from drkd.distill.cwd.distiller import CWDDistiller, channel_kl
from drkd.distill.cwd.params import CWDParams, search_space

NO_BOXES = [torch.zeros(0, 4)] * 2


def _authors_cwd(pred_s: torch.Tensor, pred_t: torch.Tensor, tau: float, loss_weight: float) -> torch.Tensor:
    """The authors' ChannelWiseDivergence for one level: rows of H·W per (n, c), softmax of the
    teacher, Σ p_T (log p_T − log p_S) · τ², divided by C·N, times the weight."""
    n, c, h, w = pred_s.shape
    p_t = F.softmax(pred_t.reshape(-1, w * h) / tau, dim=1)
    log = torch.nn.LogSoftmax(dim=1)
    loss = torch.sum(p_t * log(pred_t.reshape(-1, w * h) / tau) - p_t * log(pred_s.reshape(-1, w * h) / tau)) * tau**2
    return loss_weight * loss / (c * n)


def test_hand_computed_value_on_two_positions() -> None:
    """Teacher logits (0, ln 3) give p_T = (1/4, 3/4); a flat student gives p_S = (1/2, 1/2):
    KL = 1/4·ln(1/2) + 3/4·ln(3/2); with τ = 2 the logits halve, p_T = (1/(1+√3), √3/(1+√3)), × 4."""
    teacher = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    student = torch.zeros(1, 1, 1, 2)
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert math.isclose(channel_kl(student, teacher, 1.0).item(), expected, rel_tol=1e-6)
    p = 1 / (1 + math.sqrt(3))
    expected_tau2 = 4 * (p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p)))
    assert math.isclose(channel_kl(student, teacher, 2.0).item(), expected_tau2, rel_tol=1e-6)


def test_zero_where_the_channel_distributions_agree() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(2, 3, 4, 5)
    shift = torch.randn(2, 3, 1, 1)  # softmax ignores a per-(image, channel) constant
    d = CWDDistiller(3, 3, 1)
    assert d([teacher], [teacher + shift], NO_BOXES, (16, 20))["loss_cwd"].abs().item() < 1e-6
    assert channel_kl(teacher * 2, teacher, 1.0).item() > 1e-3  # but not a scale


def test_parity_with_the_authors_loss_summed_over_levels() -> None:
    torch.manual_seed(1)
    d = CWDDistiller(8, 8, 3, weight=10.0, temperature=2.0)
    teacher = [torch.randn(2, 8, s, s + 2) for s in (8, 4, 2)]
    student = [torch.randn(2, 8, s, s + 2) for s in (8, 4, 2)]
    ours = d.weighted_total(d(teacher, student, NO_BOXES, (32, 40)))
    ref = sum(_authors_cwd(s, t, 2.0, 10.0) for s, t in zip(student, teacher))
    assert torch.allclose(ours, ref, rtol=1e-5)


def test_gradients_reach_student_and_adapters_never_the_teacher() -> None:
    torch.manual_seed(2)
    assert_gradient_routing(CWDDistiller(6, 4, 2), (6, 4), [4, 2], NO_BOXES, 16)
    assert CWDDistiller(4, 4, 2).adapt.adapters is None  # equal widths: no connector


def test_image_order_does_not_matter_and_values_stay_finite() -> None:
    torch.manual_seed(3)
    d = CWDDistiller(4, 4, 2)
    teacher = [torch.randn(3, 4, 4, 4) * 50, torch.randn(3, 4, 1, 1)]  # large logits; a 1×1 level
    student = [torch.randn(3, 4, 4, 4) * 50, torch.randn(3, 4, 1, 1)]
    order = torch.tensor([1, 2, 0])
    boxes = [torch.zeros(0, 4)] * 3
    a = d(teacher, student, boxes, (16, 16))["loss_cwd"]
    b = d([t[order] for t in teacher], [s[order] for s in student], boxes, (16, 16))["loss_cwd"]
    assert torch.isfinite(a) and torch.allclose(a, b, rtol=1e-6)
    # bfloat16 features (autocast) are computed in float32: within 1 % of the fp32 value
    half = d([t.bfloat16() for t in teacher], [s.bfloat16() for s in student], boxes, (16, 16))["loss_cwd"]
    assert half.dtype == torch.float32 and torch.allclose(half, a, rtol=1e-2)


def test_defaults_validation_and_search_space() -> None:
    expected = {"weight": 10.0, "temperature": 1.0, "always_adapt": False}
    assert CWDParams().distiller_kwargs(True) == CWDParams().distiller_kwargs(False) == expected
    for field in ("weight", "temperature"):
        with pytest.raises(ConfigError, match=rf"distill.cwd.{field} = -1"):
            CWDParams(**{field: -1}).validate("distill.cwd")
    with pytest.raises(ValueError, match="temperature"):
        CWDDistiller(4, 4, 1, temperature=0.0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    assert set(search_space(trial, two_stage=True)) == {"distill.cwd.weight", "distill.cwd.temperature"}
    assert trial.distributions["distill.cwd.weight"].low == 1.25
