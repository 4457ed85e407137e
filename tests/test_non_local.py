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


def _reference_relation(block: NonLocalBlock, x: torch.Tensor, k: int) -> torch.Tensor:
    """The reference block's y (Wang et al.'s non-local block as ported in NLD's authors' code and
    mmrazor's FBKD connector): g and φ followed by nn.MaxPool2d(kernel_size=(k, k)), i.e. floor;
    dot product f/N or embedded-Gaussian softmax. Written independently of NonLocalBlock.relation."""
    pool = torch.nn.MaxPool2d(kernel_size=(k, k)) if k > 1 else torch.nn.Identity()
    b, _, h, w = x.shape
    g_x = pool(block.g(x)).view(b, block.inter_channels, -1).permute(0, 2, 1)
    theta_x = block.theta(x).view(b, block.inter_channels, -1).permute(0, 2, 1)
    phi_x = pool(block.phi(x)).view(b, block.inter_channels, -1)
    f = torch.matmul(theta_x, phi_x)
    f = f / f.size(-1) if block.mode == "dot_product" else torch.softmax(f, dim=-1)
    y = torch.matmul(f, g_x).permute(0, 2, 1).contiguous()
    return y.view(b, block.inter_channels, h, w)


def _active_pair(channels: int, mode: str, k: int) -> tuple[NonLocalBlock, NonLocalBlock]:
    """A floor and a ceil block with the same random weights, W a random (non-zero) 1×1 conv; float64,
    so that a 1e-6 tolerance measures the pooling, not float32 rounding."""
    torch.manual_seed(0)
    floor = NonLocalBlock(channels, mode=mode, sub_sample=k, use_bn=False, pool_mode="floor")
    with torch.no_grad():
        floor.W.weight.normal_()
        floor.W.bias.normal_()
    ceil = NonLocalBlock(channels, mode=mode, sub_sample=k, use_bn=False, pool_mode="ceil")
    ceil.load_state_dict(floor.state_dict())
    return floor.double(), ceil.double()


@pytest.mark.parametrize("mode", ["dot_product", "embedded_gaussian"])
@pytest.mark.parametrize("k", [2, 4, 8])
def test_floor_pooling_matches_reference_on_uneven_map(mode, k):
    floor, ceil = _active_pair(6, mode, k)
    x = torch.randn(2, 6, 15, 23, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    with torch.no_grad():
        expected_y = _reference_relation(floor, x, k)
        expected = floor.W(expected_y) + x
        torch.testing.assert_close(floor.relation(x), expected_y, rtol=0, atol=1e-6)
        torch.testing.assert_close(floor(x), expected, rtol=0, atol=1e-6)
        # ceil keeps the 15 mod k rows and 23 mod k columns as partial windows: other keys
        assert (ceil.relation(x) - expected_y).abs().max() > 1e-2
        assert (ceil(x) - expected).abs().max() > 1e-2


@pytest.mark.parametrize("mode", ["dot_product", "embedded_gaussian"])
def test_floor_and_ceil_agree_when_the_stride_divides_the_map(mode):
    floor, ceil = _active_pair(4, mode, 4)
    x = torch.randn(2, 4, 8, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(floor(x), ceil(x), rtol=0, atol=0)
        torch.testing.assert_close(floor(x), floor.W(_reference_relation(floor, x, 4)) + x, rtol=0, atol=1e-6)


def test_floor_ignores_the_dropped_border_as_keys():
    # 15×23 with k = 2: the keys come from rows 0..13 and columns 0..21 only. Changing row 14 and
    # column 22 changes the outputs there (their queries) but nowhere else under floor; under ceil
    # they are part of the last pooling windows, so every output moves.
    floor, ceil = _active_pair(4, "embedded_gaussian", 2)
    x = torch.randn(1, 4, 15, 23, dtype=torch.float64)
    x2 = x.clone()
    x2[..., 14, :] += 5.0
    x2[..., :, 22] += 5.0
    with torch.no_grad():
        interior = (slice(None), slice(None), slice(0, 14), slice(0, 22))
        torch.testing.assert_close(floor(x2)[interior], floor(x)[interior], rtol=0, atol=1e-6)
        assert (ceil(x2)[interior] - ceil(x)[interior]).abs().max() > 1e-2


@pytest.mark.parametrize("pool_mode", ["floor", "ceil"])
def test_maps_smaller_than_the_stride(pool_mode):
    # The reference nn.MaxPool2d(2) cannot pool a 1×1 map (an empty key set); the block does not
    # pool it at all, and shrinks the window to the shorter side otherwise (3×5, k = 8 -> window 3).
    floor, ceil = _active_pair(4, "embedded_gaussian", 8)
    block = floor if pool_mode == "floor" else ceil
    with pytest.raises(RuntimeError):
        torch.nn.MaxPool2d(kernel_size=(2, 2))(torch.randn(1, 4, 1, 1))
    with torch.no_grad():
        one = torch.randn(2, 4, 1, 1, dtype=torch.float64)
        torch.testing.assert_close(block.relation(one), _reference_relation(block, one, 1), rtol=0, atol=1e-6)
        # a single position attends only to itself: softmax over one key = 1, y = g(x)
        torch.testing.assert_close(block.relation(one), block.g(one), rtol=0, atol=1e-6)
        thin = torch.randn(2, 4, 3, 5, dtype=torch.float64)
        y = block.relation(thin)
    if pool_mode == "floor":  # one 3×3 window: keys from columns 0..2 only
        torch.testing.assert_close(y, _reference_relation(block, thin, 3), rtol=0, atol=1e-6)
    else:  # ceil: a 3×3 and a partial 3×2 window
        assert (y - _reference_relation(block, thin, 3)).abs().max() > 1e-3


def test_pool_mode_default_and_validation():
    assert NonLocalBlock(4).pool_mode == "ceil"  # DRKD's pixel_module: non_local keeps its behaviour
    assert NonLocalBlock(4, pool_mode="floor").pool_mode == "floor"
    with pytest.raises(ValueError, match=r"pool_mode.*'round'"):
        NonLocalBlock(4, pool_mode="round")
