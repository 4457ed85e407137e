import math

import pytest
import torch

from drkd.distill.drkd.glore import GloRe


def _set_scalar_weights(unit: GloRe, *, state, proj, adj, update, extend, gamma, beta) -> None:
    """Hand-set every weight of a 1-channel, 1-state, 1-node unit."""
    with torch.no_grad():
        unit.state.weight.fill_(state[0])
        unit.state.bias.fill_(state[1])
        unit.projection.weight.fill_(proj[0])
        unit.projection.bias.fill_(proj[1])
        unit.gcn.adjacency.weight.fill_(adj[0])
        unit.gcn.adjacency.bias.fill_(adj[1])
        unit.gcn.state_update.weight.fill_(update)
        unit.extend.weight.fill_(extend)
        unit.blocker.weight.fill_(gamma)
        unit.blocker.bias.fill_(beta)


def test_defaults_follow_reference_ratios():
    unit = GloRe(256)
    assert (unit.num_state, unit.num_node) == (128, 64)
    assert GloRe(2).num_node == 1 and GloRe(1).num_state == 1


def test_identity_at_init_zero_gamma():
    torch.manual_seed(0)
    unit = GloRe(8)
    assert torch.count_nonzero(unit.blocker.weight) == 0
    x = torch.randn(2, 8, 5, 7)
    assert torch.equal(unit(x), x)
    unit.eval()
    assert torch.equal(unit(x), x)


def test_hand_computed_1x2x2():
    unit = GloRe(1, num_state=1, num_node=1).eval()
    _set_scalar_weights(
        unit, state=(0.5, 1.0), proj=(1.0, -2.0), adj=(0.5, 0.25), update=2.0, extend=3.0, gamma=2.0, beta=0.5
    )
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    # X̄ = 0.5x + 1 = [1.5, 2, 2.5, 3];  B = x − 2 = [−1, 0, 1, 2]
    # V = X̄·B / (H·W) = (−1.5 + 0 + 2.5 + 6) / 4 = 1.75
    v, b = unit.node_features(x)
    assert v.item() == pytest.approx(1.75)
    assert b.flatten().tolist() == [-1.0, 0.0, 1.0, 2.0]
    # (I − A)V = 1.75 − (0.5·1.75 + 0.25) = 0.625; ReLU; W = 2 -> Z = 1.25
    # F = Z·B = [−1.25, 0, 1.25, 2.5]; extend ×3; BN (eval, running mean 0, var 1): 2·y/√(1+1e-4) + 0.5
    f = torch.tensor([-1.25, 0.0, 1.25, 2.5]) * 3.0
    expected = x.flatten() + 2.0 * f / math.sqrt(1 + 1e-4) + 0.5
    assert torch.allclose(unit(x).flatten(), expected, atol=1e-6)


def test_hand_computed_relu_clips_negative_graph_state():
    unit = GloRe(1, num_state=1, num_node=1).eval()
    _set_scalar_weights(
        unit, state=(0.5, 1.0), proj=(1.0, -2.0), adj=(2.0, 0.0), update=2.0, extend=3.0, gamma=2.0, beta=0.5
    )
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    # (I − A)V = 1.75 − 3.5 < 0 -> ReLU -> Z = 0, so only the BN bias is added.
    assert torch.allclose(unit(x), x + 0.5)


def test_unnormalised_node_features_scale_with_area():
    unit = GloRe(1, num_state=1, num_node=1, normalize=False)
    _set_scalar_weights(
        unit, state=(0.5, 1.0), proj=(1.0, -2.0), adj=(0.5, 0.25), update=2.0, extend=3.0, gamma=2.0, beta=0.5
    )
    v, _ = unit.node_features(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
    assert v.item() == pytest.approx(7.0)


def test_matches_explicit_matrix_formula():
    """Checks which axis A (nodes) and W (states) act on, against Eq. 2–4 written with matrices."""
    torch.manual_seed(1)
    c, s, n = 4, 3, 2
    unit = GloRe(c, num_state=s, num_node=n).eval()
    with torch.no_grad():
        for p in unit.parameters():
            p.copy_(torch.randn_like(p))
        unit.blocker.running_mean.copy_(torch.randn(c))
        unit.blocker.running_var.copy_(torch.rand(c) + 0.5)
    x = torch.randn(2, c, 3, 5)
    hw = 15
    xf = x.flatten(2)  # (B, C, HW)
    xbar = torch.einsum("sc,bcp->bsp", unit.state.weight[:, :, 0, 0], xf) + unit.state.bias[None, :, None]
    bmat = torch.einsum("nc,bcp->bnp", unit.projection.weight[:, :, 0, 0], xf) + unit.projection.bias[None, :, None]
    v = xbar @ bmat.transpose(1, 2) / hw  # (B, S, N)
    a = unit.gcn.adjacency.weight[:, :, 0]  # (N, N)
    av = v @ a.t() + unit.gcn.adjacency.bias[None, None, :]
    z = torch.einsum("ts,bsn->btn", unit.gcn.state_update.weight[:, :, 0], torch.relu(v - av))
    f = z @ bmat  # (B, S, HW)
    y = torch.einsum("cs,bsp->bcp", unit.extend.weight[:, :, 0, 0], f)
    bn = unit.blocker
    y = (y - bn.running_mean[None, :, None]) / torch.sqrt(bn.running_var[None, :, None] + bn.eps)
    y = y * bn.weight[None, :, None] + bn.bias[None, :, None]
    expected = (xf + y).view_as(x)
    assert torch.allclose(unit(x), expected, atol=1e-4, rtol=1e-4)


def test_node_features_independent_of_input_size():
    torch.manual_seed(2)
    unit = GloRe(4).eval()
    with torch.no_grad():
        unit.blocker.weight.fill_(1.0)
    value = torch.randn(1, 4, 1, 1)
    small, large = value.expand(1, 4, 4, 4), value.expand(1, 4, 8, 8)
    v_small, _ = unit.node_features(small)
    v_large, _ = unit.node_features(large)
    assert torch.allclose(v_small, v_large, atol=1e-6)
    # Hence the same per-pixel output at both sizes.
    assert torch.allclose(unit(small)[..., 0, 0], unit(large)[..., 0, 0], atol=1e-5)
    raw = GloRe(4, normalize=False)
    raw.load_state_dict(unit.state_dict())
    assert torch.allclose(raw.node_features(large)[0], 4 * raw.node_features(small)[0], rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 6, 1, 1), (1, 6, 3, 2), (3, 6, 7, 1), (2, 6, 9, 11)])
def test_any_size_trains_and_backprops(shape):
    torch.manual_seed(3)
    unit = GloRe(6).train()
    with torch.no_grad():
        unit.blocker.weight.fill_(0.5)
    x = torch.randn(shape, requires_grad=True)
    out = unit(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().sum().backward()
    assert x.grad is not None
    assert all(p.grad is not None for p in unit.parameters())


def test_zero_gamma_still_passes_gradient_to_gamma():
    torch.manual_seed(4)
    unit = GloRe(16)
    x = torch.randn(2, 16, 3, 3)
    (unit(x) * torch.randn_like(x)).sum().backward()
    assert unit.blocker.weight.grad.abs().sum() > 0


def test_bad_channels_raise():
    with pytest.raises(ValueError, match="channels"):
        GloRe(0)


def test_unnormalised_node_features_do_not_overflow_under_float16_autocast():
    # V = X̄Bᵀ sums over the H·W pixels: here about 4 · 4 · 22500 ≈ 3.6e5 per entry, past float16's
    # 65504 (the COCO configs run GloRe unnormalised on levels of 10^4–10^5 pixels, under float16 on CUDA)
    unit = GloRe(4, normalize=False, zero_init=False).eval()
    with torch.no_grad():
        for conv in (unit.state, unit.projection):
            conv.weight.fill_(0.5)
            conv.bias.zero_()
    x = torch.full((1, 4, 150, 150), 2.0) + 0.1 * torch.rand(1, 4, 150, 150, generator=torch.Generator().manual_seed(0))
    ref_v, _ = unit.node_features(x)
    ref = unit(x)
    assert ref_v.min() > 65504
    with torch.autocast("cpu", dtype=torch.float16):
        v, _ = unit.node_features(x)
        out = unit(x)
    assert v.dtype == torch.float32 and torch.isfinite(v).all() and torch.isfinite(out).all()
    torch.testing.assert_close(v, ref_v, rtol=1e-2, atol=0)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)
