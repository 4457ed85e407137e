import math

import optuna
import pytest
import torch

from drkd.distill.fitnet.distiller import FitNetDistiller
from drkd.distill.fitnet.params import FitNetParams, search_space


def test_hand_computed_mean_over_levels():
    d = FitNetDistiller(3, 3, 2)
    d.set_identity()
    teacher = [torch.ones(2, 3, 4, 4), torch.full((2, 3, 2, 2), 2.0)]
    student = [torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 2, 2)]
    loss = d(teacher, student, [torch.zeros(0, 4)] * 2, (16, 16))
    assert set(loss) == {"loss_fitnet"}
    assert math.isclose(loss["loss_fitnet"].item(), (1.0 + 4.0) / 2, rel_tol=1e-6)


def test_zero_when_equal_and_gradients():
    d = FitNetDistiller(4, 4, 2)
    d.set_identity()
    feats = [torch.randn(2, 4, 4, 4), torch.randn(2, 4, 2, 2)]
    student = [f.clone().requires_grad_(True) for f in feats]
    loss = d(feats, student, [torch.zeros(0, 4)] * 2, (16, 16))["loss_fitnet"]
    assert loss.item() < 1e-10

    d = FitNetDistiller(6, 4, 2)
    teacher = [torch.randn(2, 6, 4, 4, requires_grad=True), torch.randn(2, 6, 2, 2, requires_grad=True)]
    d.weighted_total(d(teacher, student, [torch.zeros(0, 4)] * 2, (16, 16))).backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad.abs().sum() > 0 for s in student)
    assert all(p.grad.abs().sum() > 0 for p in d.adapters.parameters())


def test_defaults_and_validation():
    assert FitNetParams().distiller_kwargs(True) == FitNetParams().distiller_kwargs(False) == {"weight": 1.0}
    assert FitNetDistiller(4, 4, 1).loss_weights == {"loss_fitnet": 1.0}
    assert FitNetDistiller(4, 4, 1, weight=0.3).loss_weights == {"loss_fitnet": 0.3}
    with pytest.raises(ValueError, match=r"weight.*-2"):
        FitNetDistiller(4, 4, 1, weight=-2.0)
    with pytest.raises(ValueError, match="student_channels"):
        FitNetDistiller(4, 0, 1)


def test_search_space():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    params = search_space(trial, two_stage=True)
    assert list(params) == ["distill.fitnet.weight"]
    dist = trial.distributions["distill.fitnet.weight"]
    assert dist.log and dist.low <= params["distill.fitnet.weight"] <= dist.high and dist.low < 1.0 < dist.high


@pytest.mark.parametrize("method", ["drkd", "nld", "mkd", "fitnet", "pkd", "cwd", "mgd", "fgd"])
def test_every_method_names_a_wrong_level_count(method: str) -> None:
    from drkd.distill.registry import distiller_class

    distiller = distiller_class(method)(8, 8, 2)
    feats = [torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4)]
    with pytest.raises(ValueError, match="expected 2 feature levels, got teacher 1, student 2"):
        distiller(feats[:1], feats, [torch.zeros(0, 4)], (32, 32))
