import math

import optuna
import pytest
import torch
import torch.nn.functional as F

from drkd.distill.mkd.distiller import MKDDistiller
from drkd.distill.mkd.feature_alignment import feature_alignment_loss
from drkd.distill.mkd.frequency_mask import apply_frequency_mask, frequency_mask_loss, random_frequency_mask
from drkd.distill.mkd.multiscale_pooling import multiscale_loss, multiscale_pool
from drkd.distill.mkd.params import mkd_defaults, search_space

IMAGE = (32, 32)
NO_BOXES = [torch.zeros(0, 4)] * 2


def _feats(c, b=2, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(b, c, 8, 8, generator=g).requires_grad_(requires_grad),
        torch.randn(b, c, 4, 4, generator=g).requires_grad_(requires_grad),
    ]


# ---- frequency mask (Eq. 2–4) ----


def test_ratio_zero_is_plain_mse():
    s, t = torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)
    assert random_frequency_mask(2, 5, 6, 0.0).min() == 1
    torch.testing.assert_close(frequency_mask_loss(s, t, 0.0), F.mse_loss(s, t), rtol=1e-5, atol=1e-6)


def test_ratio_one_drops_everything():
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert random_frequency_mask(2, 4, 4, 1.0).max() == 0
    torch.testing.assert_close(frequency_mask_loss(s, t, 1.0), t.pow(2).mean())


def test_known_mask_keeps_only_dc():
    # keeping only frequency (0, 0) replaces each channel by its spatial mean
    s = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])
    t = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    mask = torch.zeros(1, 1, 2, 2)
    mask[..., 0, 0] = 1
    torch.testing.assert_close(apply_frequency_mask(s, mask), torch.full_like(s, 3.0))
    expected = ((3 - 0) ** 2 + (3 - 1) ** 2 + (3 - 2) ** 2 + (3 - 3) ** 2) / 4
    assert math.isclose(frequency_mask_loss(s, t, 0.5, mask=mask).item(), expected, rel_tol=1e-6)


def test_random_mask_seeded_and_ratio():
    a = random_frequency_mask(4, 16, 16, 0.3, generator=torch.Generator().manual_seed(1))
    b = random_frequency_mask(4, 16, 16, 0.3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 1, 16, 16) and torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert 0.2 < 1 - a.mean().item() < 0.4
    with pytest.raises(ValueError, match="mask_ratio"):
        random_frequency_mask(1, 2, 2, 1.5)


# ---- multiscale pooling (Eq. 1) ----


def test_multiscale_by_hand():
    t = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    s = torch.zeros_like(t)
    # pool_2 -> 2.5; (2.5²) / (H·W = 4)
    assert math.isclose(multiscale_loss(s, t, (2,)).item(), 2.5**2 / 4, rel_tol=1e-6)
    # k = 1 adds Σ t² / 4 = 7.5; a window larger than the map acts like k = 2
    assert math.isclose(multiscale_loss(s, t, (1, 2)).item(), 7.5 + 1.5625, rel_tol=1e-6)
    assert math.isclose(multiscale_loss(s, t, (8,)).item(), 1.5625, rel_tol=1e-6)


def test_multiscale_pool_border_windows():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    (p,) = multiscale_pool(x, (2,))
    # windows: [0,1,3,4], [2,5], [6,7], [8]
    torch.testing.assert_close(p, torch.tensor([[[[2.0, 3.5], [6.5, 8.0]]]]))


# ---- feature alignment (Eq. 5) ----


def test_alignment_kl_two_positions():
    t = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)  # softmax -> [1/4, 3/4]
    s = torch.zeros(1, 1, 1, 2)  # softmax -> [1/2, 1/2]
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert math.isclose(feature_alignment_loss(s, t, 1.0).item(), kl, rel_tol=1e-6)
    # T = 2: p_T = softmax([0, ln3 / 2]), times T² = 4
    p = [1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))]
    kl2 = sum(pi * math.log(pi / 0.5) for pi in p)
    assert math.isclose(feature_alignment_loss(s, t, 2.0).item(), 4 * kl2, rel_tol=1e-6)
    # a second, already aligned channel halves the per-channel mean
    t2, s2 = torch.cat([t, t], 1), torch.cat([s, t], 1)
    assert math.isclose(feature_alignment_loss(s2, t2, 1.0).item(), kl / 2, rel_tol=1e-6)


# ---- distiller (Eq. 6) ----


def test_defaults_and_switches():
    assert mkd_defaults(True)["alpha"] == mkd_defaults(False)["alpha"] == 1.0
    d = MKDDistiller(8, 4, 2, alpha=0.5)
    assert d.loss_weights == {"loss_fea": 0.5, "loss_ms": 0.5, "loss_freq": 0.5, "loss_align": 0.5}
    losses = d(_feats(8), _feats(4), NO_BOXES, IMAGE)
    assert set(losses) == set(d.loss_weights) and all(torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(d.weighted_total(losses), 0.5 * sum(losses.values()))
    d = MKDDistiller(8, 4, 2, use_ms=False, use_freq=False)
    assert set(d(_feats(8), _feats(4), NO_BOXES, IMAGE)) == {"loss_fea", "loss_align"}
    with pytest.raises(ValueError, match="use_fea"):
        MKDDistiller(8, 4, 2, use_fea=False, use_ms=False, use_freq=False, use_align=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 0.0}, r"alpha.*0\.0"),
        ({"temperature": -1.0}, "temperature"),
        ({"mask_ratio": 1.2}, r"mask_ratio.*1\.2"),
        ({"pool_scales": (2, 0)}, "pool_scales"),
    ],
)
def test_invalid_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MKDDistiller(8, 4, 2, **kwargs)


def test_zero_when_teacher_equals_student():
    d = MKDDistiller(6, 6, 2, mask_ratio=0.0)
    d.set_identity()
    feats = _feats(6)
    student = [f.clone().requires_grad_(True) for f in feats]
    losses = d(feats, student, NO_BOXES, IMAGE)
    for key, value in losses.items():
        assert abs(value.item()) < 1e-5, key
    d.weighted_total(losses).backward()
    assert all(torch.isfinite(s.grad).all() for s in student)


def test_seeded_frequency_loss_is_deterministic():
    t, s = _feats(4), _feats(4, seed=1)
    a = MKDDistiller(4, 4, 2, seed=3, use_fea=False, use_ms=False, use_align=False)
    b = MKDDistiller(4, 4, 2, seed=3, use_fea=False, use_ms=False, use_align=False)
    b.load_state_dict(a.state_dict())
    c = MKDDistiller(4, 4, 2, seed=4, use_fea=False, use_ms=False, use_align=False)
    c.load_state_dict(a.state_dict())
    la, lb, lc = (m(t, s, NO_BOXES, IMAGE)["loss_freq"] for m in (a, b, c))
    torch.testing.assert_close(la, lb)
    assert not torch.allclose(la, lc)


def test_gradients_reach_student_and_adapter_not_teacher():
    d = MKDDistiller(8, 4, 2, seed=0)
    teacher = _feats(8, requires_grad=True)
    student = _feats(4, seed=1, requires_grad=True)
    d.weighted_total(d(teacher, student, NO_BOXES, IMAGE)).backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad.abs().sum() > 0 for s in student)
    assert all(p.grad.abs().sum() > 0 for p in d.adapters.parameters())


def test_adapter_only_where_needed():
    assert MKDDistiller(4, 4, 2, always_adapt=False).adapters is None
    assert MKDDistiller(8, 4, 2, always_adapt=False).adapters is not None


def test_search_space():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    params = search_space(trial, two_stage=False)
    assert set(params) == {"distill.mkd.alpha", "distill.mkd.temperature", "distill.mkd.mask_ratio"}
    defaults = mkd_defaults(False)
    for key, value in params.items():
        dist = trial.distributions[key]
        assert dist.low <= value <= dist.high
        assert dist.low < defaults[key.rsplit(".", 1)[1]] < dist.high
    d = MKDDistiller(8, 4, 2, **{k.rsplit(".", 1)[1]: v for k, v in params.items()})
    assert math.isclose(d.loss_weights["loss_fea"], params["distill.mkd.alpha"])
