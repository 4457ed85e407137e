import math

import pytest
import torch

from drkd.distill.nld.attention_guided import (
    AttentionGuidedLoss,
    channel_attention,
    channel_mask,
    spatial_attention,
    spatial_mask,
)

# 1×2×2×2: channel 0 = [[1, -2], [3, 0]], channel 1 = [[-1, 0], [1, 2]]
A = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]], [[-1.0, 0.0], [1.0, 2.0]]]])
E = math.e


def test_attention_maps_by_hand():
    # G^s = mean_c |A| ; G^c = mean_ij |A|
    torch.testing.assert_close(spatial_attention(A), torch.tensor([[[1.0, 1.0], [2.0, 1.0]]]))
    torch.testing.assert_close(channel_attention(A), torch.tensor([[1.5, 1.0]]))


def test_masks_by_hand():
    # M^s = HW·softmax(G^s/T), T = 1
    ms = spatial_mask(spatial_attention(A), 1.0)
    torch.testing.assert_close(ms, 4 * torch.tensor([[[1.0, 1.0], [E, 1.0]]]) / (3 + E))
    # M^c = C·softmax(G^c/T), T = 0.5: softmax([3, 2])
    mc = channel_mask(channel_attention(A), 0.5)
    torch.testing.assert_close(mc, 2 * torch.tensor([[E / (E + 1), 1 / (E + 1)]]))
    assert math.isclose(ms.sum().item(), 4.0, rel_tol=1e-6) and math.isclose(mc.sum().item(), 2.0, rel_tol=1e-6)


def _plain(**kw):
    """Equal channels, no adaptation layers at all."""
    return AttentionGuidedLoss(2, 2, 1, temperature=kw.pop("temperature", 1.0), always_adapt=False, **kw)


def test_at_loss_by_hand():
    # student = 0: L_AT = ‖G^s(A)‖ + ‖G^c(A)‖
    loss = _plain(use_am=False)([A], [torch.zeros_like(A)], [torch.zeros(0, 4)], (2, 2))
    assert set(loss) == {"loss_at"}
    assert math.isclose(loss["loss_at"].item(), math.sqrt(7) + math.sqrt(1.5**2 + 1), rel_tol=1e-6)
    only_spatial = _plain(use_am=False, channel=False)([A], [torch.zeros_like(A)], [torch.zeros(0, 4)], (2, 2))
    assert math.isclose(only_spatial["loss_at"].item(), math.sqrt(7), rel_tol=1e-6)


def test_am_loss_by_hand():
    # student = 0, so the masks come from the teacher alone:
    # M^s = 4·[1, 1, e, 1]/(3+e) (T = 1), M^c = 2·[√e, 1]/(√e+1)
    loss = _plain(use_at=False)([A], [torch.zeros_like(A)], [torch.zeros(0, 4)], (2, 2))["loss_am"]
    mc0, mc1 = 2 * math.sqrt(E) / (math.sqrt(E) + 1), 2 / (math.sqrt(E) + 1)
    # Σ_ij A² M^s per channel: c0: (1 + 4 + 9e)·4/(3+e); c1: (1 + e + 4)·4/(3+e)
    total = mc0 * (1 + 4 + 9 * E) * 4 / (3 + E) + mc1 * (1 + E + 4) * 4 / (3 + E)
    assert math.isclose(loss.item(), math.sqrt(total), rel_tol=1e-6)


def test_mask_source_teacher_ignores_the_student_attention():
    # teacher = 0, student = A. "sum" (paper): masks from A's attention, the same value as above;
    # "teacher" (authors' code): masks from the zero teacher are uniform, so L_AM = ‖A‖ = √20.
    zero, boxes = torch.zeros_like(A), [torch.zeros(0, 4)]
    summed = _plain(use_at=False)([zero], [A], boxes, (2, 2))["loss_am"]
    teacher_only = _plain(use_at=False, mask_source="teacher")([zero], [A], boxes, (2, 2))["loss_am"]
    mc0, mc1 = 2 * math.sqrt(E) / (math.sqrt(E) + 1), 2 / (math.sqrt(E) + 1)
    total = mc0 * (1 + 4 + 9 * E) * 4 / (3 + E) + mc1 * (1 + E + 4) * 4 / (3 + E)
    assert math.isclose(summed.item(), math.sqrt(total), rel_tol=1e-6)
    assert math.isclose(teacher_only.item(), math.sqrt(20.0), rel_tol=1e-6)


def _uniform_teacher():
    """|t| = 1 everywhere, so with a zero student M^s = M^c = 1 exactly."""
    t = torch.ones(1, 2, 4, 4)
    t[:, :, ::2] = -1
    return t


def test_masked_loss_with_known_gt_mask():
    t, s = _uniform_teacher(), torch.zeros(1, 2, 4, 4)
    loss_fn = _plain(use_at=False, fg_weight=3.0, bg_weight=0.5)
    # 8×8 image, stride 2: box 0..4 covers 2×2 = 4 cells; Σ = C·(4·3 + 12·0.5) = 36
    box = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    assert math.isclose(loss_fn([t], [s], [box], (8, 8))["loss_am"].item(), 6.0, rel_tol=1e-6)
    # no boxes: everything is background, Σ = 2·16·0.5
    no_box = loss_fn([t], [s], [torch.zeros(0, 4)], (8, 8))["loss_am"]
    assert torch.isfinite(no_box) and math.isclose(no_box.item(), 4.0, rel_tol=1e-6)
    # equal weights reduce to the paper's unmasked-by-GT loss: sqrt(2·16)
    assert math.isclose(_plain(use_at=False)([t], [s], [box], (8, 8))["loss_am"].item(), math.sqrt(32), rel_tol=1e-6)


def test_box_order_invariance():
    torch.manual_seed(0)
    t, s = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 6.0], [4.0, 8.0, 16.0, 16.0], [1.0, 1.0, 2.0, 2.0]]), torch.zeros(0, 4)]
    loss_fn = AttentionGuidedLoss(3, 3, 1, temperature=0.5, fg_weight=2.0, bg_weight=0.25)
    a = loss_fn([t], [s], boxes, (16, 16))["loss_am"]
    b = loss_fn([t], [s], [boxes[0][[1, 2, 0]], boxes[1]], (16, 16))["loss_am"]
    torch.testing.assert_close(a, b)


def test_zero_when_equal_with_identity_adaptation():
    torch.manual_seed(0)
    feats = [torch.randn(2, 4, 6, 6), torch.randn(2, 4, 3, 3)]
    student = [f.clone().requires_grad_(True) for f in feats]
    loss_fn = AttentionGuidedLoss(4, 4, 2, temperature=0.1)
    loss_fn.set_identity()
    losses = loss_fn(feats, student, [torch.zeros(0, 4)] * 2, (24, 24))
    assert losses["loss_at"].item() < 1e-6 and losses["loss_am"].item() < 1e-6
    sum(losses.values()).backward()
    assert all(torch.isfinite(s.grad).all() for s in student)  # the norm at 0 gives no NaN


def test_gradients_reach_student_and_adapters_not_teacher():
    torch.manual_seed(0)
    teacher = [torch.randn(2, 6, 4, 4, requires_grad=True)]
    student = [torch.randn(2, 3, 4, 4, requires_grad=True)]
    loss_fn = AttentionGuidedLoss(6, 3, 1, temperature=0.5)
    losses = loss_fn(teacher, student, [torch.zeros(0, 4)] * 2, (16, 16))
    sum(losses.values()).backward()
    assert teacher[0].grad is None
    assert student[0].grad.abs().sum() > 0
    for module in (loss_fn.feature_adapters, loss_fn.spatial_adapters, loss_fn.channel_adapters):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_adapters_only_where_needed():
    same = AttentionGuidedLoss(4, 4, 2, temperature=1.0, always_adapt=False)
    assert same.feature_adapters is None and same.spatial_adapters is None and same.channel_adapters is None
    differ = AttentionGuidedLoss(4, 2, 2, temperature=1.0, always_adapt=False)
    assert differ.feature_adapters is not None and differ.channel_adapters is not None
    assert differ.spatial_adapters is None
    at_only = AttentionGuidedLoss(4, 2, 2, temperature=1.0, use_am=False)
    assert at_only.feature_adapters is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": 1.0, "fg_weight": -1.0}, "fg_weight"),
        ({"temperature": 1.0, "use_at": False, "use_am": False}, "use_at"),
        ({"temperature": 1.0, "spatial": False, "channel": False}, "spatial"),
        ({"temperature": 1.0, "mask_source": "student"}, "mask_source"),
    ],
)
def test_invalid_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionGuidedLoss(4, 4, 1, **kwargs)


def _perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("mask_source", ["sum", "teacher"])
def test_attention_from_raw_masks_ignore_the_adaptation_conv(mask_source):
    torch.manual_seed(0)
    t, s = torch.randn(2, 4, 6, 5), torch.randn(2, 4, 6, 5)
    raw = AttentionGuidedLoss(4, 4, 1, temperature=0.5, mask_source=mask_source)
    adapted = AttentionGuidedLoss(4, 4, 1, temperature=0.5, mask_source=mask_source, attention_from="adapted")
    assert raw.attention_from == "raw"  # the default (the authors' code)
    adapted.load_state_dict(raw.state_dict())
    before = {name: m.attention_masks(0, t, s) for name, m in (("raw", raw), ("adapted", adapted))}
    for m in (raw, adapted):
        _perturb(m.feature_adapters, seed=1)
    after = {name: m.attention_masks(0, t, s) for name, m in (("raw", raw), ("adapted", adapted))}
    # the raw masks are the student's own attention plus the teacher's, whatever the conv
    expected_s = spatial_mask(spatial_attention(t) + (mask_source == "sum") * spatial_attention(s), 0.5)
    expected_c = channel_mask(channel_attention(t) + (mask_source == "sum") * channel_attention(s), 0.5)
    for m_s, m_c in (before["raw"], after["raw"]):
        torch.testing.assert_close(m_s, expected_s.unsqueeze(1))
        torch.testing.assert_close(m_c, expected_c[:, :, None, None])
    for got, ref in zip(after["adapted"], before["adapted"]):
        if mask_source == "sum":  # the adapted student's attention moved with the conv
            assert (got - ref).abs().max() > 1e-2
        else:  # teacher-only masks never see the student
            torch.testing.assert_close(got, ref)


def test_attention_from_by_hand():
    # teacher = 0, student = A, adaptation f(x) = 2x. L_AM compares f(A) with 0 either way:
    # raw:     masks from G(A), the values of test_am_loss_by_hand -> L_AM = 2·√total;
    # adapted: masks from G(2A) = 2·G(A).
    zero, boxes = torch.zeros_like(A), [torch.zeros(0, 4)]
    losses = {}
    for source in ("raw", "adapted"):
        loss_fn = AttentionGuidedLoss(2, 2, 1, temperature=1.0, use_at=False, attention_from=source)
        loss_fn.set_identity()
        with torch.no_grad():
            loss_fn.feature_adapters.adapters[0].conv.weight.mul_(2.0)
        losses[source] = loss_fn([zero], [A], boxes, (2, 2))["loss_am"]
    mc0, mc1 = 2 * math.sqrt(E) / (math.sqrt(E) + 1), 2 / (math.sqrt(E) + 1)
    total = mc0 * (1 + 4 + 9 * E) * 4 / (3 + E) + mc1 * (1 + E + 4) * 4 / (3 + E)
    assert math.isclose(losses["raw"].item(), 2 * math.sqrt(total), rel_tol=1e-6)
    m_s = spatial_mask(spatial_attention(2 * A), 1.0).unsqueeze(1)
    m_c = channel_mask(channel_attention(2 * A), 1.0)[:, :, None, None]
    expected = ((2 * A) ** 2 * m_s * m_c).sum().sqrt()
    torch.testing.assert_close(losses["adapted"], expected)
    assert not math.isclose(losses["adapted"].item(), losses["raw"].item(), rel_tol=1e-3)


def test_attention_from_raw_with_different_channels():
    # C_s = 3 != C_t = 5: the raw spatial attention still enters M^s; the channel attention must be
    # C_t wide, so M^c takes the adapted student's (documented), and only M^c follows the conv.
    torch.manual_seed(0)
    t, s = torch.randn(2, 5, 4, 4), torch.randn(2, 3, 4, 4)
    loss_fn = AttentionGuidedLoss(5, 3, 1, temperature=0.5)
    m_s, m_c = loss_fn.attention_masks(0, t, s)
    torch.testing.assert_close(m_s, spatial_mask(spatial_attention(t) + spatial_attention(s), 0.5).unsqueeze(1))
    with torch.no_grad():
        s_adapted = loss_fn.feature_adapters.adapters[0](s)
    expected_c = channel_mask(channel_attention(t) + channel_attention(s_adapted), 0.5)
    torch.testing.assert_close(m_c, expected_c[:, :, None, None])
    _perturb(loss_fn.feature_adapters, seed=2)
    m_s2, m_c2 = loss_fn.attention_masks(0, t, s)
    torch.testing.assert_close(m_s2, m_s)
    assert (m_c2 - m_c).abs().max() > 1e-2
    losses = loss_fn([t], [s.requires_grad_(True)], [torch.zeros(0, 4)] * 2, (16, 16))
    assert torch.isfinite(losses["loss_am"]) and torch.isfinite(losses["loss_at"])


def test_attention_from_validation():
    with pytest.raises(ValueError, match=r"attention_from.*'features'"):
        AttentionGuidedLoss(4, 4, 1, temperature=1.0, attention_from="features")
