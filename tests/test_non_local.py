import math

import pytest
import torch

from drkd.distill.non_local import NON_LOCAL_MODES, NonLocalBlock


def _unit_block(mode: str) -> NonLocalBlock:
    """1 channel, 1 inter channel, θ = φ = g = identity, no sub-sampling."""
    block = NonLocalBlock(1, inter_channels=1, mode=mode)
    with torch.no_grad():
        convs = [block.g] + ([block.theta, block.phi] if mode != "gaussian" else [])
        for conv in convs:
            conv.weight.fill_(1.0)
            conv.bias.zero_()
        if mode == "concatenation":
            block.concat_project.weight.fill_(1.0)
    return block


X = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2)  # two positions with values 1 and 2
E = math.e


@pytest.mark.parametrize(
    "mode, expected",
    [
        # f_ij = x_i x_j / N, N = 2
        ("dot_product", [(1 * 1 + 2 * 2) / 2, (2 * 1 + 4 * 2) / 2]),
        # f_ij = softmax_j(x_i x_j)
        ("embedded_gaussian", [(1 + 2 * E) / (1 + E), (1 + 2 * E**2) / (1 + E**2)]),
        ("gaussian", [(1 + 2 * E) / (1 + E), (1 + 2 * E**2) / (1 + E**2)]),
        # f_ij = ReLU(x_i + x_j) / N
        ("concatenation", [(2 * 1 + 3 * 2) / 2, (3 * 1 + 4 * 2) / 2]),
    ],
)
def test_relation_hand_computed(mode, expected):
    y = _unit_block(mode).relation(X)
    assert y.shape == (1, 1, 1, 2)
    torch.testing.assert_close(y.flatten(), torch.tensor(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", NON_LOCAL_MODES)
def test_starts_as_identity(mode):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7)
    block = NonLocalBlock(6, mode=mode, sub_sample=2)
    torch.testing.assert_close(block(x), x)
    block.eval()
    torch.testing.assert_close(block(x), x)


def test_default_constructor_and_shapes():
    block = NonLocalBlock(8)
    assert block.mode == "embedded_gaussian" and block.inter_channels == 4 and block.sub_sample == 1
    assert block(torch.randn(2, 8, 3, 4)).shape == (2, 8, 3, 4)
    # a window larger than the map shrinks instead of failing
    assert NonLocalBlock(8, sub_sample=8)(torch.randn(2, 8, 4, 3)).shape == (2, 8, 4, 3)


def test_without_bn_zero_conv_identity():
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(NonLocalBlock(4, use_bn=False)(x), x)


def test_active_after_training_signal_and_gradients():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 4, 4, requires_grad=True)
    block = NonLocalBlock(4, sub_sample=2)
    block(x).pow(2).sum().backward()
    assert block.W[1].weight.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()
    with torch.no_grad():
        block.W[1].weight.fill_(1.0)
    assert not torch.allclose(block(x), x)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"mode": "softmax"}, "mode"), ({"sub_sample": 0}, "sub_sample"), ({"inter_channels": 0}, "inter_channels")],
)
def test_invalid_params(kwargs, name):
    with pytest.raises(ValueError, match=name):
        NonLocalBlock(4, **kwargs)
