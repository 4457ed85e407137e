"""FGD: hand-computed masks, parity with a reference written from the authors' FeatureLoss
(yzd-v/FGD, mmdet/distillation/losses/fgd.py), zero loss for a copied student, box and image order,
gradient routing."""

from __future__ import annotations

import optuna
import pytest
import torch
import torch.nn.functional as F
from distiller_checks import assert_gradient_routing
from torch import nn

from drkd.config import ConfigError
from drkd.distill.fgd.distiller import FGDDistiller
from drkd.distill.fgd.focal_masks import attention, scale_masks
from drkd.distill.fgd.params import FGDParams, search_space


def test_scale_masks_by_hand() -> None:
    """A 4×4 level of a 16×16 image (stride 4): box (0, 0, 8, 4) covers cells (0, 0) and (0, 1),
    1/2 each; box (0, 0, 4, 4) covers (0, 0) alone, 1, which wins there; the 14 others are
    background, 1/14 each. An image without boxes is all background, 1/16."""
    feat = torch.zeros(2, 3, 4, 4)
    boxes = [torch.tensor([[0.0, 0.0, 8.0, 4.0], [0.0, 0.0, 4.0, 4.0]]), torch.zeros(0, 4)]
    fg, bg = scale_masks(boxes, feat, (16, 16))
    expected = torch.zeros(4, 4)
    expected[0, 0], expected[0, 1] = 1.0, 0.5
    assert torch.equal(fg[0], expected)
    assert torch.allclose(bg[0], (expected == 0).float() / 14)
    assert torch.equal(fg[1], torch.zeros(4, 4)) and torch.allclose(bg[1], torch.full((4, 4), 1 / 16))
    # box order does not matter
    fg_rev, _ = scale_masks([boxes[0].flip(0), boxes[1]], feat, (16, 16))
    assert torch.equal(fg_rev, fg)


def _authors_masks(gt_bboxes, img_shape, n, h, w):
    """Their loop, as written (the x range indexes rows, the y range columns)."""
    mask_fg = torch.zeros(n, h, w)
    mask_bg = torch.ones(n, h, w)
    for i in range(n):
        b = torch.ones_like(gt_bboxes[i])
        b[:, 0] = gt_bboxes[i][:, 0] / img_shape[1] * w
        b[:, 2] = gt_bboxes[i][:, 2] / img_shape[1] * w
        b[:, 1] = gt_bboxes[i][:, 1] / img_shape[0] * h
        b[:, 3] = gt_bboxes[i][:, 3] / img_shape[0] * h
        wmin, wmax = torch.floor(b[:, 0]).int(), torch.ceil(b[:, 2]).int()
        hmin, hmax = torch.floor(b[:, 1]).int(), torch.ceil(b[:, 3]).int()
        area = 1.0 / (hmax.view(1, -1) + 1 - hmin.view(1, -1)) / (wmax.view(1, -1) + 1 - wmin.view(1, -1))
        for j in range(len(gt_bboxes[i])):
            cur = mask_fg[i][wmin[j] : wmax[j] + 1, hmin[j] : hmax[j] + 1]
            mask_fg[i][wmin[j] : wmax[j] + 1, hmin[j] : hmax[j] + 1] = torch.maximum(cur, area[0][j])
        mask_bg[i] = torch.where(mask_fg[i] > 0, 0, 1)
        if torch.sum(mask_bg[i]):
            mask_bg[i] /= torch.sum(mask_bg[i])
    return mask_fg, mask_bg


def _authors_loss(d: FGDDistiller, level: int, preds_s, preds_t, gt_bboxes, img_shape, temp, a, b, g, lam):
    """Their FeatureLoss.forward for one level, on our modules' weights."""

    def get_attention(preds):
        n, c, h, w = preds.shape
        value = torch.abs(preds)
        fea_map = value.mean(axis=1, keepdim=True)
        s_att = (h * w * F.softmax((fea_map / temp).view(n, -1), dim=1)).view(n, h, w)
        channel_map = value.mean(axis=2, keepdim=False).mean(axis=2, keepdim=False)
        return s_att, c * F.softmax(channel_map / temp, dim=1)

    def relation(x, block):
        batch, channel, width, height = x.size()
        input_x = x.view(batch, channel, height * width).unsqueeze(1)
        context_mask = F.softmax(block.context_weights(x).view(batch, 1, height * width), dim=2).unsqueeze(-1)
        context = torch.matmul(input_x, context_mask).view(batch, channel, 1, 1)
        return x + block.transform(context)

    mse = nn.MSELoss(reduction="sum")
    n, _, h, w = preds_s.shape
    s_t, c_t = get_attention(preds_t)
    s_s, c_s = get_attention(preds_s)
    mask_fg, mask_bg = _authors_masks(gt_bboxes, img_shape, n, h, w)
    mask_fg, mask_bg = mask_fg.unsqueeze(1), mask_bg.unsqueeze(1)
    ct, st = c_t.unsqueeze(-1).unsqueeze(-1), s_t.unsqueeze(1)
    fea_t = preds_t * torch.sqrt(st) * torch.sqrt(ct)
    fea_s = preds_s * torch.sqrt(st) * torch.sqrt(ct)
    fg = mse(fea_s * torch.sqrt(mask_fg), fea_t * torch.sqrt(mask_fg)) / len(mask_fg)
    bg = mse(fea_s * torch.sqrt(mask_bg), fea_t * torch.sqrt(mask_bg)) / len(mask_bg)
    mask = torch.sum(torch.abs(c_s - c_t)) / len(c_s) + torch.sum(torch.abs(s_s - s_t)) / len(s_s)
    rela = mse(relation(preds_s, d.context_s[level]), relation(preds_t, d.context_t[level])) / len(preds_s)
    return a * fg + b * bg + g * mask + lam * rela


def test_parity_with_the_authors_loss_on_two_levels() -> None:
    torch.manual_seed(0)
    kwargs = {"alpha": 1e-3, "beta": 5e-4, "gamma": 5e-4, "lam": 5e-6, "temperature": 0.5}
    d = FGDDistiller(8, 8, 2, box_cells="authors", **kwargs)
    with torch.no_grad():  # a trained state: the GcBlocks' last convs away from their zero init
        for block in (*d.context_s, *d.context_t):
            block.transform[-1].weight.normal_()
            block.transform[-1].bias.normal_()
    # square maps (their axis swap stays inside the map) and no padding (their img_shape scaling)
    teacher = [torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)]
    student = [torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)]
    boxes = [torch.tensor([[2.0, 3.0, 17.0, 9.0], [20.0, 4.0, 30.0, 31.0]]), torch.tensor([[0.0, 0.0, 5.0, 5.0]])]
    ours = d.weighted_total(d(teacher, student, boxes, (32, 32)))
    ref = sum(_authors_loss(d, lv, student[lv], teacher[lv], boxes, (32, 32), **_ref_args(kwargs)) for lv in range(2))
    assert torch.allclose(ours, ref, rtol=1e-5)


def _ref_args(kwargs: dict) -> dict:
    return {
        "temp": kwargs["temperature"],
        "a": kwargs["alpha"],
        "b": kwargs["beta"],
        "g": kwargs["gamma"],
        "lam": kwargs["lam"],
    }


def test_zero_loss_for_a_copied_student_at_initialisation() -> None:
    """Equal features: the focal and attention terms vanish; both GcBlocks start as the identity
    (last conv zero), so the global term does too."""
    torch.manual_seed(1)
    d = FGDDistiller(8, 8, 2)
    feats = [torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)]
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.zeros(0, 4)]
    out = d(feats, [f.clone() for f in feats], boxes, (32, 32))
    assert set(out) == {"loss_fg", "loss_bg", "loss_at", "loss_global"}
    assert all(v.item() == 0.0 for v in out.values())


def test_attention_sums_to_the_map_size() -> None:
    spatial, channel = attention(torch.randn(3, 5, 4, 6), 0.5)
    assert torch.allclose(spatial.sum(dim=(1, 2)), torch.full((3,), 24.0))
    assert torch.allclose(channel.sum(dim=1), torch.full((3,), 5.0))


def test_gradients_reach_student_and_modules_never_the_teacher() -> None:
    torch.manual_seed(2)
    d = FGDDistiller(8, 4, 2)
    with torch.no_grad():
        for block in (*d.context_s, *d.context_t):
            block.transform[-1].weight.normal_()
    assert_gradient_routing(d, (8, 4), [8, 4], [torch.tensor([[0.0, 0.0, 12.0, 20.0]]), torch.zeros(0, 4)], 32)


def test_image_order_and_images_without_objects() -> None:
    torch.manual_seed(3)
    d = FGDDistiller(8, 8, 1)
    teacher, student = [torch.randn(3, 8, 8, 8)], [torch.randn(3, 8, 8, 8)]
    boxes = [torch.tensor([[0.0, 0.0, 12.0, 12.0]]), torch.zeros(0, 4), torch.tensor([[4.0, 4.0, 30.0, 20.0]])]
    a = d(teacher, student, boxes, (32, 32))
    order = [2, 0, 1]
    b = d([teacher[0][order]], [student[0][order]], [boxes[i] for i in order], (32, 32))
    for k in a:
        assert torch.isfinite(a[k]) and torch.allclose(a[k], b[k], rtol=1e-5), k
    empty = d(teacher, student, [torch.zeros(0, 4)] * 3, (32, 32))
    assert empty["loss_fg"].item() == 0.0 and all(torch.isfinite(v) for v in empty.values())


def test_switches_defaults_validation_and_search_space() -> None:
    d = FGDDistiller(8, 8, 1, use_global=False, use_bg=False)
    assert set(d.loss_weights) == {"loss_fg", "loss_at"} and not hasattr(d, "context_s")
    assert FGDParams().distiller_kwargs(True)["alpha"] == 5e-5 and FGDParams().distiller_kwargs(False)["lam"] == 5e-6
    with pytest.raises(ConfigError, match=r"distill.fgd.box_cells = 'mmdet'"):
        FGDParams(box_cells="mmdet").validate("distill.fgd")
    with pytest.raises(ConfigError, match="all off"):
        FGDParams(use_fg=False, use_bg=False, use_attention=False, use_global=False).check_active("distill.fgd")
    with pytest.raises(ValueError, match="gamma"):
        FGDDistiller(8, 8, 1, gamma=0.0)
    with pytest.raises(ValueError, match="box_cells must be one of"):
        FGDDistiller(8, 8, 1, box_cells="mmdet")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    space = search_space(trial, two_stage=False)
    assert space["distill.fgd.beta"] == pytest.approx(space["distill.fgd.alpha"] / 2)  # the paper's ratio
    assert set(trial.params) == {"distill.fgd.alpha", "distill.fgd.gamma", "distill.fgd.lam", "distill.fgd.temperature"}
