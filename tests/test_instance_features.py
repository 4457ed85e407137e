"""ξ of Eq. 5: GT boxes pooled from the right place on every FPN level, in both ROI Align conventions."""

from __future__ import annotations

import pytest
import torch

from drkd.config import ConfigError, config_from_dict
from drkd.distill.instance_features import extract_instances, instance_counts, level_stride, pad_by_image

IMAGE = (1024, 1024)  # (H, W) of the padded batch tensor; large enough that no sample hits a border
STRIDES = (4, 8, 16, 32, 64, 128)  # P2 (Faster R-CNN) .. P7 (RetinaNet)


def ramp_level(stride: int) -> torch.Tensor:
    """One FPN level of stride ``stride`` whose channel 0 holds the column index j and channel 1
    the row index i: bilinear interpolation of it is exact, so a pooled value is a coordinate."""
    h, w = IMAGE[0] // stride, IMAGE[1] // stride
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    return torch.stack([cols, rows])[None]


@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("aligned", [True, False])
def test_box_centre_lands_on_the_level_coordinate(stride: int, aligned: bool) -> None:
    feat = ramp_level(stride)
    assert level_stride(feat, IMAGE) == stride
    boxes = [torch.tensor([[384.0, 448.0, 640.0, 576.0], [448.0, 448.0, 576.0, 576.0]])]
    pooled = extract_instances(feat, boxes, IMAGE, 1, aligned=aligned, sampling_ratio=2)
    # The box centre in level pixels: centre / stride, minus half a pixel with the aligned convention.
    # (Boxes are >= 1 level pixel: without `aligned`, torchvision stretches smaller ones to 1 pixel.)
    shift = 0.5 if aligned else 0.0
    centres = torch.tensor([[512.0, 512.0], [512.0, 512.0]]) / stride - shift
    torch.testing.assert_close(pooled[:, :, 0, 0], centres, rtol=0, atol=1e-4)


@pytest.mark.parametrize("stride", STRIDES[:4])
def test_kxk_bins_tile_the_box(stride: int) -> None:
    """K = 3: bin centres at 1/6, 3/6, 5/6 of the box, on every level."""
    feat = ramp_level(stride)
    x0, x1 = 96.0, 96.0 + 48.0 * stride / 4
    boxes = [torch.tensor([[x0, 32.0, x1, 80.0]])]
    pooled = extract_instances(feat, boxes, IMAGE, 3, sampling_ratio=2)
    expected = torch.tensor([x0 + (x1 - x0) * f for f in (1 / 6, 3 / 6, 5 / 6)]) / stride - 0.5
    torch.testing.assert_close(pooled[0, 0, 0], expected, rtol=0, atol=1e-4)


def test_instances_come_from_their_own_image() -> None:
    feat = torch.stack([torch.full((1, 16, 16), 1.0), torch.full((1, 16, 16), 2.0)])
    boxes = [torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 12.0, 12.0]])]
    pooled = extract_instances(feat, boxes, (64, 64), 1)
    assert instance_counts(boxes) == [1, 2]
    assert pooled.flatten().tolist() == [1.0, 2.0, 2.0]


def test_roi_options_are_config_fields_and_reach_the_losses() -> None:
    from drkd.distill.registry import build_distiller

    cfg = config_from_dict({"teacher": {}, "distill": {"drkd": {"roi_aligned": False, "roi_sampling_ratio": 0}}})
    d = build_distiller(cfg, 8, 8, 5)
    assert d.ir.roi == d.ins.roi == {"aligned": False, "sampling_ratio": 0}
    with pytest.raises(ConfigError, match=r"distill\.drkd\.roi_sampling_ratio = -1: must be >= 0"):
        config_from_dict({"teacher": {}, "distill": {"drkd": {"roi_sampling_ratio": -1}}})


@pytest.mark.parametrize("aligned, sampling_ratio", [(True, 2), (False, 0)])
def test_the_losses_pool_with_their_roi_options(aligned: bool, sampling_ratio: int) -> None:
    from torchvision.ops import roi_align

    from drkd.distill.drkd.instance_distill import InstanceDistillLoss
    from drkd.distill.drkd.instance_relation import InstanceRelationLoss

    torch.manual_seed(0)
    feat = torch.randn(2, 3, 16, 16)
    boxes = [torch.tensor([[3.3, 4.1, 30.2, 25.7]]), torch.tensor([[10.0, 2.5, 50.0, 40.0], [0.0, 0.0, 64.0, 64.0]])]
    expected = roi_align(feat, boxes, 3, spatial_scale=16 / 64, sampling_ratio=sampling_ratio, aligned=aligned)
    for loss in (
        InstanceDistillLoss(3, 3, roi_aligned=aligned, roi_sampling_ratio=sampling_ratio),
        InstanceRelationLoss(3, 3, roi_aligned=aligned, roi_sampling_ratio=sampling_ratio),
    ):
        torch.testing.assert_close(loss.instances(feat, boxes, (64, 64)), expected, rtol=0, atol=0)


def test_pad_by_image_lays_rows_out_per_image_and_passes_gradients_back() -> None:
    x = torch.arange(12.0).view(6, 2).requires_grad_(True)
    padded, valid = pad_by_image(x, [2, 0, 3, 1])
    assert padded.shape == (4, 3, 2)
    assert valid.tolist() == [[True, True, False], [False] * 3, [True, True, True], [True, False, False]]
    assert torch.equal(padded[0, :2], x[:2]) and torch.equal(padded[2], x[2:5]) and torch.equal(padded[3, 0], x[5])
    assert torch.equal(padded[~valid], torch.zeros(int((~valid).sum()), 2))
    (padded * torch.arange(1.0, 25.0).view(4, 3, 2)).sum().backward()
    # each row's gradient is the weight of the slot it landed in: image 0 slots 0-1, image 2 slots 0-2, image 3 slot 0
    expected = torch.arange(1.0, 25.0).view(12, 2)[[0, 1, 6, 7, 8, 9]]
    assert torch.equal(x.grad, expected)


def test_pad_by_image_without_instances_and_with_wrong_counts() -> None:
    padded, valid = pad_by_image(torch.zeros(0, 5), [0, 0])
    assert padded.shape == (2, 0, 5) and valid.shape == (2, 0)
    with pytest.raises(ValueError, match=r"sum to 3, but there are 4 rows"):
        pad_by_image(torch.zeros(4, 5), [1, 2])


def test_bfloat16_autocast_keeps_the_boxes_and_the_pooling_in_float32() -> None:
    # the ramp's values (0..255) are exact in bfloat16, so only a rounded box or a rounded result
    # could differ from float32: a bfloat16 copy of x1 = 1001.9 is 1000 (0.475 of a stride-4 cell)
    feat = ramp_level(4)
    boxes = [torch.tensor([[1001.9, 501.3, 1017.7, 517.1]])]
    ref = extract_instances(feat, boxes, IMAGE, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = extract_instances(feat.bfloat16(), boxes, IMAGE, 3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
    assert extract_instances(feat.double(), boxes, IMAGE, 3).dtype == torch.float64  # widened, never narrowed
