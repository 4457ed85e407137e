import pytest
import torch

from drkd.distill.foreground_mask import foreground_mask, foreground_masks


def _feat(b=1, h=4, w=4, dtype=torch.float32):
    return torch.zeros(b, 3, h, w, dtype=dtype)


def test_box_covers_overlapping_cells():
    # 8×8 image, 4×4 level -> stride 2; x 1..5 -> cols 0,1,2; y 1..3 -> rows 0,1
    mask = foreground_mask([torch.tensor([[1.0, 1.0, 5.0, 3.0]])], _feat(), (8, 8))
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 0:2, 0:3] = 1
    torch.testing.assert_close(mask, expected)


def test_cell_aligned_and_tiny_boxes():
    mask = foreground_mask([torch.tensor([[2.0, 2.0, 4.0, 4.0]])], _feat(), (8, 8))
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 1, 1] = 1
    torch.testing.assert_close(mask, expected)
    # thinner than a cell: still marks the cell it lies in
    torch.testing.assert_close(foreground_mask([torch.tensor([[2.2, 2.2, 2.4, 2.4]])], _feat(), (8, 8)), expected)


def test_zero_boxes_and_mixed_batch():
    boxes = [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 8.0, 8.0]])]
    mask = foreground_mask(boxes, _feat(b=2), (8, 8))
    assert mask.shape == (2, 1, 4, 4)
    assert mask[0].sum() == 0 and mask[1].sum() == 16


def test_box_order_invariance_and_overlap():
    boxes = torch.tensor([[0.0, 0.0, 3.0, 3.0], [2.0, 2.0, 7.0, 5.0], [6.0, 0.0, 8.0, 1.0]])
    a = foreground_mask([boxes], _feat(), (8, 8))
    b = foreground_mask([boxes[[2, 0, 1]]], _feat(), (8, 8))
    torch.testing.assert_close(a, b)
    assert set(a.unique().tolist()) == {0.0, 1.0}


def test_levels_dtype_and_errors():
    feats = [_feat(h=8, w=8, dtype=torch.float64), _feat(h=4, w=4, dtype=torch.float64)]
    masks = foreground_masks(feats, [torch.tensor([[0.0, 0.0, 4.0, 4.0]])], (16, 16))
    assert [m.shape for m in masks] == [(1, 1, 8, 8), (1, 1, 4, 4)]
    assert masks[0].dtype == torch.float64 and masks[0].sum() == 4 and masks[1].sum() == 1
    with pytest.raises(ValueError):
        foreground_mask([torch.zeros(0, 4)] * 2, _feat(b=1), (8, 8))
