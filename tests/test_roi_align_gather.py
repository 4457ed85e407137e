"""The gathered ROI Align against torchvision's: values, gradients, levels, edge boxes, a detector."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from drkd.config import DataConfig, DetectorConfig
from drkd.models.detectors import build_detector
from drkd.models.roi_align_gather import GatherMultiScaleRoIAlign, box_pooler, roi_align_gather, torchvision_box_pooler


def random_rois(n: int, batch: int, image: float, seed: int) -> torch.Tensor:
    """Boxes of every kind: inside, crossing the border, beyond it, thinner than a feature pixel."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * (image * 1.3) - 0.15 * image
    wh = torch.rand(n, 2, generator=g) ** 2 * image * 0.8
    wh[: n // 8] *= 0.01  # sub-pixel boxes: the 1-pixel minimum size when not aligned
    idx = torch.randint(0, batch, (n, 1), generator=g).float()
    return torch.cat([idx, xy, xy + wh], dim=1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize(("sampling_ratio", "output_size"), [(2, (7, 7)), (1, (3, 5)), (3, (2, 2))])
def test_one_level_matches_torchvision_forward_and_backward(aligned, sampling_ratio, output_size):
    torch.manual_seed(0)
    feats = torch.randn(3, 5, 12, 10, dtype=torch.float64).float().requires_grad_()
    rois = random_rois(40, batch=3, image=80.0, seed=1)
    scale = 1 / 8
    ours = roi_align_gather(
        [feats], rois, torch.zeros(40, dtype=torch.long), [scale], output_size, sampling_ratio, aligned
    )
    ref = roi_align(feats, rois, output_size, spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    grad_out = torch.randn_like(ref)
    (g_ours,) = torch.autograd.grad(ours, feats, grad_out)
    (g_ref,) = torch.autograd.grad(ref, feats, grad_out)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-5)


def test_hand_computed_values():
    # a 2x2 map, one bin, one sample: the box (0, 0)-(1, 1) at scale 1 samples at (0.5, 0.5),
    # the mean of the four pixels; a box beyond the map (sample at y = 5.5 > H) gives 0; a box at
    # (1, 1)-(2, 2) samples at 1.5 >= H - 1: clamped to the last pixel.
    feats = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    rois = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 5, 1, 6], [0, 1, 1, 2, 2]], dtype=torch.float32)
    out = roi_align_gather([feats], rois, torch.zeros(3, dtype=torch.long), [1.0], (1, 1), 1)
    assert out.flatten().tolist() == [2.5, 0.0, 4.0]


def test_no_rois_gives_an_empty_batch():
    feats = torch.randn(2, 4, 6, 6)
    out = roi_align_gather([feats], torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), [0.25], (7, 7), 2)
    assert out.shape == (0, 4, 7, 7)


def pyramid(batch: int, channels: int, size: int, seed: int) -> OrderedDict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (str(i), torch.randn(batch, channels, size // 2**i, size // 2**i, generator=g).requires_grad_())
        for i in range(4)
    )


def test_multiscale_matches_torchvision_pooler():
    # Faster R-CNN's pooler: 4 levels of strides 4..32, ROIs assigned to levels by their size
    feats = pyramid(batch=2, channels=6, size=128, seed=0)
    boxes = [random_rois(60, batch=1, image=512.0, seed=s)[:, 1:].clamp(0, 512) for s in (2, 3)]
    boxes = [torch.cat([b[:, :2], torch.maximum(b[:, 2:], b[:, :2] + 1)], dim=1) for b in boxes]
    shapes = [(512, 512), (512, 512)]
    ours = box_pooler()(feats, boxes, shapes)
    ref = torchvision_box_pooler()(feats, boxes, shapes)
    levels = torchvision_box_pooler()
    levels(feats, boxes, shapes)
    assert len(set(levels.map_levels(boxes).tolist())) >= 3  # the test spans several levels
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    grad_out = torch.randn_like(ref)
    g_ours = torch.autograd.grad(ours, list(feats.values()), grad_out)
    g_ref = torch.autograd.grad(ref, list(feats.values()), grad_out)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_a_single_level_pooler_matches_torchvisions():
    # one feature map: torchvision pools it directly; ours maps every ROI to it through the level mapper
    feats = OrderedDict([("0", torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)))])
    boxes = [torch.tensor([[1.0, 2.0, 100.0, 90.0], [5.0, 5.0, 9.0, 12.0]]), torch.tensor([[0.0, 0.0, 127.0, 127.0]])]
    ours = GatherMultiScaleRoIAlign(["0"], 7, 2)(feats, boxes, [(128, 128)] * 2)
    ref = MultiScaleRoIAlign(["0"], 7, 2)(feats, boxes, [(128, 128)] * 2)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_bfloat16_features_come_back_in_their_dtype():
    feats = OrderedDict((k, v.detach().bfloat16()) for k, v in pyramid(1, 4, 32, 1).items())
    boxes = [torch.tensor([[4.0, 4.0, 60.0, 50.0], [10.0, 12.0, 20.0, 30.0]])]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as a bfloat16 training step runs it
        out = box_pooler()(feats, boxes, [(128, 128)])
        ref = torchvision_box_pooler()(feats, boxes, [(128, 128)])
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=1e-2, atol=1e-2)


def test_faster_rcnn_uses_it_and_its_losses_match_torchvisions_pooler():
    cfg = DetectorConfig(arch="fasterrcnn", backbone="resnet18", fpn_channels=16, head_norm="gn")
    data = DataConfig(root="unused", min_size=96, max_size=96)
    torch.manual_seed(0)
    model = build_detector(cfg, num_classes=3, data=data)
    assert isinstance(model.roi_heads.box_roi_pool, GatherMultiScaleRoIAlign)
    images = [torch.rand(3, 96, 96) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[30.0, 5.0, 90.0, 40.0], [2.0, 50.0, 20.0, 90.0]]), "labels": torch.tensor([2, 1])},
    ]

    def losses() -> dict[str, torch.Tensor]:
        torch.manual_seed(1)  # the same proposal sampling for both poolers
        return model(images, targets)

    ours = losses()
    model.roi_heads.box_roi_pool = torchvision_box_pooler()
    ref = losses()
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-4, atol=1e-6)


def test_bench_script_prints_both_rows_with_their_ratio():
    """bench/roi_pool.py as a user runs it (one repetition): a smoke test, not a timing."""
    bench = Path(__file__).resolve().parents[1] / "bench" / "roi_pool.py"
    run = subprocess.run(
        [sys.executable, str(bench), "--reps", "1", "--warmup", "0"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"batch 8, \d+ ROIs", run.stdout)
    for label in ("box pooler, forward \\+ backward", "training step"):
        row = re.search(rf"^\| {label} \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", run.stdout, re.MULTILINE)
        assert row is not None, run.stdout
        torchvision_ms, gather_ms, ratio = (float(x) for x in row.groups())
        assert ratio == pytest.approx(gather_ms / torchvision_ms, abs=2e-3)
