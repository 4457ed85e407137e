import math

import pytest
import torch

from drkd.distill.drkd.relation_filter import RelationFilter


@pytest.mark.parametrize("n", [0, 1, 7])
def test_ones_at_init_for_any_n(n):
    torch.manual_seed(0)
    filt = RelationFilter(5)
    q, k = torch.randn(n, 5), torch.randn(n, 5)
    w = filt(q, k)
    assert w.shape == (n, n)
    assert torch.equal(w, torch.ones(n, n))


def _randomise(filt: RelationFilter) -> None:
    with torch.no_grad():
        for p in filt.parameters():
            p.copy_(torch.randn_like(p))


def test_permutation_equivariant():
    torch.manual_seed(1)
    filt = RelationFilter(4, hidden_dim=8)
    _randomise(filt)
    q, k = torch.randn(7, 4), torch.randn(7, 4)
    perm = torch.randperm(7)
    w = filt(q, k)
    assert not torch.allclose(w, torch.ones_like(w))
    assert torch.allclose(filt(q[perm], k[perm]), w[perm][:, perm], atol=1e-6)


def test_hand_computed_weights_and_orientation():
    filt = RelationFilter(1, hidden_dim=1)
    with torch.no_grad():
        filt.hidden.weight.copy_(torch.tensor([[2.0, -1.0, 0.0]]))  # 2·q̂_i − k̂_j
        filt.hidden.bias.zero_()
        filt.out.weight.fill_(0.4)
        filt.out.bias.fill_(-0.2)
    q = torch.tensor([[2.0], [-1.0]])  # q̂ = [1, −1]
    k = torch.tensor([[1.0], [-3.0]])  # k̂ = [1, −1]
    # relu(2q̂_i − k̂_j) = [[1, 3], [0, 0]] -> h = 0.4·that − 0.2
    expected = 1 + torch.tanh(torch.tensor([[0.2, 1.0], [-0.2, -0.2]]))
    assert torch.allclose(filt(q, k), expected, atol=1e-6)
    assert filt(q).shape == (2, 2)  # k defaults to q


def test_weights_stay_in_open_interval_0_2():
    torch.manual_seed(2)
    filt = RelationFilter(3)
    _randomise(filt)
    with torch.no_grad():
        filt.out.weight.mul_(3.0)
    w = filt(torch.randn(6, 3), torch.randn(6, 3))
    assert (w >= 0).all() and (w <= 2).all()


def test_parameters_and_inputs_get_gradients():
    torch.manual_seed(3)
    filt = RelationFilter(4)
    q = torch.randn(5, 4, requires_grad=True)
    k = torch.randn(5, 4, requires_grad=True)
    target = torch.randn(5, 5)
    (filt(q, k) * target).sum().backward()
    # At init only the zero-initialised last layer can move (it blocks the rest).
    assert filt.out.weight.grad.abs().sum() > 0 and filt.out.bias.grad.abs().sum() > 0
    filt.zero_grad()
    with torch.no_grad():
        filt.out.weight.normal_()
    (filt(q, k) * target).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in filt.parameters())
    assert q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0


def test_empty_input_backward():
    filt = RelationFilter(4)
    q = torch.zeros(0, 4, requires_grad=True)
    filt(q, q).sum().backward()
    assert all(p.grad is not None for p in filt.parameters())


def test_scale_of_embeddings_does_not_matter():
    torch.manual_seed(4)
    filt = RelationFilter(4)
    _randomise(filt)
    q, k = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.allclose(filt(q, k), filt(100 * q, 0.01 * k), atol=1e-5)


def test_bad_args():
    with pytest.raises(ValueError, match="embed_dim"):
        RelationFilter(0)
    with pytest.raises(ValueError, match=r"\(N, E\)"):
        RelationFilter(3)(torch.zeros(2, 3), torch.zeros(3, 3))
    assert math.isclose(RelationFilter(2)(torch.ones(1, 2)).item(), 1.0)


def test_a_batch_of_images_gives_each_image_its_own_weights():
    torch.manual_seed(6)
    filt = RelationFilter(4, hidden_dim=8)
    _randomise(filt)
    q, k = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    w = filt(q, k)
    assert w.shape == (3, 5, 5)
    for b in range(3):
        assert torch.allclose(w[b], filt(q[b], k[b]), atol=1e-6)


def test_batch_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"\(B, N, E\)"):
        RelationFilter(4)(torch.randn(2, 3, 4), torch.randn(3, 4))
