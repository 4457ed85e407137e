"""A check every distiller's tests run: gradients reach the student and the distiller's own
modules, never the teacher."""

from __future__ import annotations

import torch

from drkd.distill.base import Distiller


def assert_gradient_routing(
    distiller: Distiller, channels: tuple[int, int], sizes: list[int], boxes: list[torch.Tensor], image_size: int
) -> None:
    """One backward of the weighted total on random features: every student level and every
    parameter of ``distiller`` gets a non-zero gradient, no teacher level gets one.

    Args:
        distiller: the module under test (its state as the test set it up).
        channels: (C_t, C_s).
        sizes: the side of each square level, highest resolution first.
        boxes: per image its GT boxes; their count is the batch size.
        image_size: the side of the square padded image.
    """
    b = len(boxes)
    teacher = [torch.randn(b, channels[0], s, s, requires_grad=True) for s in sizes]
    student = [torch.randn(b, channels[1], s, s, requires_grad=True) for s in sizes]
    distiller.weighted_total(distiller(teacher, student, boxes, (image_size, image_size))).backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    silent = [n for n, p in distiller.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not silent, f"parameters without a gradient: {silent}"
