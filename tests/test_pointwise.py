"""drkd.distill.pointwise: a 1×1 convolution as a matrix product must be that convolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from drkd.distill.pointwise import is_pointwise, pointwise


def _conv2d(c_in: int, c_out: int, bias: bool) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(c_in, c_out, kernel_size=1, bias=bias)


def test_hand_computed_value() -> None:
    conv = nn.Conv2d(2, 1, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(1, 2, 1, 1))
        conv.bias.fill_(0.5)
    x = torch.tensor([[[[1.0, 3.0]], [[4.0, 1.0]]]])  # (1, 2, 1, 2)
    # 2·1 − 1·4 + 0.5 = −1.5; 2·3 − 1·1 + 0.5 = 5.5
    assert torch.equal(pointwise(conv, x), torch.tensor([[[[-1.5, 5.5]]]]))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(4, 6, 5, 3), (1, 6, 1, 1), (2, 6, 7, 9)])
def test_equals_conv2d_values_and_gradients(bias: bool, shape: tuple[int, ...]) -> None:
    conv = _conv2d(6, 5, bias)
    x = torch.randn(*shape, requires_grad=True)
    ref = conv(x)
    out = pointwise(conv, x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, [x, *conv.parameters()], upstream)
    out_grads = torch.autograd.grad(out, [x, *conv.parameters()], upstream)
    for a, b in zip(out_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_equals_conv1d_on_a_transposed_view() -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(4, 4, kernel_size=1)
    v = torch.randn(3, 7, 4).transpose(1, 2)  # (3, 4, 7), not contiguous, as GloRe's A is applied
    torch.testing.assert_close(pointwise(conv, v), conv(v), rtol=1e-5, atol=1e-5)


def test_channels_last_input_goes_through_the_convolution() -> None:
    conv = _conv2d(6, 5, True)
    x = torch.randn(2, 6, 4, 4).to(memory_format=torch.channels_last)
    out = pointwise(conv, x)
    torch.testing.assert_close(out, conv(x))
    assert out.is_contiguous(memory_format=torch.channels_last)  # the convolution's own layout


def test_autocast_dtype_matches_the_convolution() -> None:
    conv = _conv2d(6, 5, True)
    x = torch.randn(2, 6, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, out = conv(x), pointwise(conv, x)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 4, kernel_size=3),
        nn.Conv2d(4, 4, kernel_size=1, stride=2),
        nn.Conv2d(4, 4, kernel_size=1, padding=1),
        nn.Conv2d(4, 4, kernel_size=1, groups=2),
        nn.Linear(4, 4),
    ],
)
def test_anything_else_is_refused(conv: nn.Module) -> None:
    assert not is_pointwise(conv)
    with pytest.raises(ValueError, match="1x1"):
        pointwise(conv, torch.randn(1, 4, 4, 4))  # type: ignore[arg-type]
