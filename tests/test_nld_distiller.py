import math

import optuna
import pytest
import torch

from drkd.config.errors import ConfigError
from drkd.distill.nld.distiller import NLDDistiller
from drkd.distill.nld.params import NON_LOCAL_POOL_MODES, NLDParams, nld_defaults, search_space
from drkd.distill.non_local import NON_LOCAL_MODES, POOL_MODES

IMAGE = (32, 32)


def _feats(c, b=2, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(b, c, 8, 8, generator=g).requires_grad_(requires_grad),
        torch.randn(b, c, 4, 4, generator=g).requires_grad_(requires_grad),
    ]


BOXES = [torch.tensor([[2.0, 3.0, 20.0, 18.0], [10.0, 10.0, 30.0, 31.0]]), torch.zeros(0, 4)]


def test_paper_defaults():
    assert nld_defaults(True) == {"alpha": 7e-5, "beta": 4e-3, "gamma": 7e-5, "temperature": 0.1}
    assert nld_defaults(False) == {"alpha": 4e-4, "beta": 2e-2, "gamma": 4e-4, "temperature": 0.5}
    d = NLDDistiller(8, 8, 2, two_stage=True)
    assert d.loss_weights == {"loss_at": 7e-5, "loss_am": 4e-3, "loss_nld": 7e-5}
    assert d.attention.temperature == 0.1
    d = NLDDistiller(8, 8, 2, alpha=1.0)
    assert d.loss_weights["loss_at"] == 1.0 and d.loss_weights["loss_am"] == 2e-2


def test_keys_and_switches():
    losses = NLDDistiller(8, 4, 2)(_feats(8), _feats(4), BOXES, IMAGE)
    assert set(losses) == {"loss_at", "loss_am", "loss_nld"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    d = NLDDistiller(8, 4, 2, use_nld=False)
    assert d.non_local is None and set(d.loss_weights) == {"loss_at", "loss_am"}
    assert set(d(_feats(8), _feats(4), BOXES, IMAGE)) == {"loss_at", "loss_am"}
    d = NLDDistiller(8, 4, 2, use_at=False, use_am=False)
    assert d.attention is None and set(d(_feats(8), _feats(4), BOXES, IMAGE)) == {"loss_nld"}
    d = NLDDistiller(8, 4, 2, use_at=False)
    assert d.attention.spatial_adapters is None and d.attention.channel_adapters is None
    with pytest.raises(ValueError, match="use_at"):
        NLDDistiller(8, 4, 2, use_at=False, use_am=False, use_nld=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": -1.0}, r"alpha.*-1\.0"),
        ({"temperature": 0.0}, "temperature"),
        ({"non_local_mode": "cosine"}, r"non_local_mode.*cosine"),
        ({"non_local_sub_sample": 0}, "non_local_sub_sample"),
        ({"bg_weight": -0.5}, "bg_weight"),
        ({"attention_from": "teacher"}, r"attention_from.*'teacher'"),
        ({"non_local_pool_mode": "round"}, r"non_local_pool_mode.*'round'"),
    ],
)
def test_invalid_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NLDDistiller(8, 4, 2, **kwargs)
    with pytest.raises(ValueError, match="num_levels"):
        NLDDistiller(8, 4, 0)


def test_zero_when_teacher_equals_student():
    d = NLDDistiller(6, 6, 2, two_stage=True)
    d.set_identity()
    with torch.no_grad():  # make the relation modules non-trivial, then share their weights
        for block in d.non_local.student_blocks:
            for p in block.parameters():
                p.add_(0.3)
        d.non_local.teacher_blocks.load_state_dict(d.non_local.student_blocks.state_dict())
    feats = _feats(6)
    student = [f.clone().requires_grad_(True) for f in feats]
    losses = d(feats, student, BOXES, IMAGE)
    for key, value in losses.items():
        assert value.item() < 1e-5, key
    d.weighted_total(losses).backward()
    assert all(torch.isfinite(s.grad).all() for s in student)


def test_nld_at_initialisation_is_feature_distance():
    # blocks start as the identity, so with identity adaptation L_NLD = Σ_levels mean_b ‖S − T‖
    d = NLDDistiller(4, 4, 2, use_at=False, use_am=False)
    d.set_identity()
    t, s = _feats(4, seed=1), _feats(4, seed=2)
    expected = sum((si - ti).flatten(1).norm(dim=1).mean() for si, ti in zip(s, t))
    torch.testing.assert_close(d(t, s, BOXES, IMAGE)["loss_nld"], expected)


def test_gradients_reach_student_and_modules_not_teacher():
    d = NLDDistiller(8, 4, 2)
    teacher = _feats(8, requires_grad=True)
    student = _feats(4, seed=1, requires_grad=True)
    losses = d(teacher, student, BOXES, IMAGE)
    d.weighted_total(losses).backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad.abs().sum() > 0 for s in student)
    for side in (d.non_local.student_blocks, d.non_local.teacher_blocks):
        assert all(block.W[1].weight.grad.abs().sum() > 0 for block in side)
    assert all(p.grad.abs().sum() > 0 for p in d.non_local.adapters.parameters())
    assert all(p.grad.abs().sum() > 0 for p in d.attention.feature_adapters.parameters())
    assert all(p.grad.abs().sum() > 0 for p in d.attention.channel_adapters.parameters())


@pytest.mark.parametrize("mode", NON_LOCAL_MODES)
def test_non_local_modes_and_empty_boxes(mode):
    d = NLDDistiller(8, 4, 2, non_local_mode=mode, fg_weight=2.0, bg_weight=0.5)
    losses = d(_feats(8), _feats(4), [torch.zeros(0, 4)] * 2, IMAGE)
    assert all(torch.isfinite(v) for v in losses.values())
    assert torch.isfinite(d.weighted_total(losses))


def test_box_order_invariance():
    d = NLDDistiller(8, 4, 2, fg_weight=2.0, bg_weight=0.5)
    t, s = _feats(8), _feats(4, seed=1)
    a = d(t, s, BOXES, IMAGE)
    b = d(t, s, [BOXES[0].flip(0), BOXES[1]], IMAGE)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_weighted_total():
    d = NLDDistiller(8, 4, 2, alpha=1.0, beta=2.0, gamma=3.0)
    losses = d(_feats(8), _feats(4), BOXES, IMAGE)
    expected = losses["loss_at"] + 2 * losses["loss_am"] + 3 * losses["loss_nld"]
    torch.testing.assert_close(d.weighted_total(losses), expected)


@pytest.mark.parametrize("two_stage", [True, False])
def test_search_space(two_stage):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    params = search_space(trial, two_stage)
    assert set(params) == {"distill.nld.alpha", "distill.nld.beta", "distill.nld.gamma", "distill.nld.temperature"}
    for key, value in params.items():
        dist = trial.distributions[key]
        assert dist.log and dist.low <= value <= dist.high
        default = nld_defaults(two_stage)[key.rsplit(".", 1)[1]]
        assert dist.low < default < dist.high
    # the sampled values are constructor arguments
    d = NLDDistiller(8, 4, 2, two_stage=two_stage, **{k.rsplit(".", 1)[1]: v for k, v in params.items()})
    assert math.isclose(d.loss_weights["loss_am"], params["distill.nld.beta"])


def _uneven_feats(c, seed):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(2, c, 15, 23, generator=g),
        torch.randn(2, c, 8, 12, generator=g),
        torch.randn(2, c, 1, 1, generator=g),
    ]


def _activate(d):
    """Random, shared non-local weights and a non-zero W, so the relation (not the residual) matters."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in d.non_local.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    d.eval()  # W's BatchNorm uses its running statistics


def test_defaults_follow_the_authors_code():
    d = NLDDistiller(8, 4, 3)
    assert d.attention.attention_from == "raw"
    assert all(b.pool_mode == "floor" for b in [*d.non_local.student_blocks, *d.non_local.teacher_blocks])
    assert [b.sub_sample for b in d.non_local.student_blocks] == [8, 4, 2]
    assert NON_LOCAL_POOL_MODES == POOL_MODES  # params.py is torch-free and mirrors the block's modes


def test_non_local_pool_modes_on_uneven_and_1x1_maps():
    # levels 15×23 (k = 8: floor keys 1×2, ceil 2×3), 8×12 (k = 4 divides it), 1×1 (not pooled)
    t, s = _uneven_feats(8, seed=1), _uneven_feats(4, seed=2)
    built = {}
    for pool in ("floor", "ceil"):
        d = NLDDistiller(8, 4, 3, use_at=False, use_am=False, non_local_pool_mode=pool)
        _activate(d)
        with torch.no_grad():
            built[pool] = (d, d(t, s, BOXES, IMAGE)["loss_nld"])
        assert torch.isfinite(built[pool][1])
    (floor, floor_total), (ceil, ceil_total) = built["floor"], built["ceil"]
    with torch.no_grad():
        for level in range(3):
            diff = max(
                (f[level](x[level]) - c[level](x[level])).abs().max().item()
                for f, c, x in (
                    (floor.non_local.teacher_blocks, ceil.non_local.teacher_blocks, t),
                    (floor.non_local.student_blocks, ceil.non_local.student_blocks, s),
                )
            )
            if level == 0:
                assert diff > 1e-2  # the border rows/columns change the keys
            else:
                assert diff == 0.0  # k divides 8×12; a 1×1 map is not pooled in either mode
    assert abs(floor_total.item() - ceil_total.item()) > 1e-3


def test_non_local_floor_trains_on_a_1x1_level():
    d = NLDDistiller(8, 4, 3, use_at=False, use_am=False)
    student = [f.requires_grad_(True) for f in _uneven_feats(4, seed=3)]
    loss = d(_uneven_feats(8, seed=4), student, BOXES, IMAGE)["loss_nld"]
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0 for f in student)


def test_attention_from_reaches_the_masks():
    t, s = _feats(4, seed=5), _feats(4, seed=6)
    masks = {}
    for source in ("raw", "adapted"):
        d = NLDDistiller(4, 4, 2, use_nld=False, attention_from=source)
        before = [d.attention.attention_masks(i, t[i], s[i]) for i in range(2)]
        with torch.no_grad():
            for p in d.attention.feature_adapters.parameters():
                p.mul_(-3.0).add_(0.5)
        after = [d.attention.attention_masks(i, t[i], s[i]) for i in range(2)]
        masks[source] = max((a - b).abs().max().item() for x, y in zip(before, after) for a, b in zip(x, y))
    assert masks["raw"] == 0.0 and masks["adapted"] > 1e-2


def test_params_fields_validation_and_kwargs():
    params = NLDParams()
    assert params.attention_from == "raw" and params.non_local_pool_mode == "floor"
    kwargs = params.distiller_kwargs(two_stage=False)
    assert kwargs["attention_from"] == "raw" and kwargs["non_local_pool_mode"] == "floor"
    d = NLDDistiller(8, 8, 2, **NLDParams(attention_from="adapted", non_local_pool_mode="ceil").distiller_kwargs(True))
    assert d.attention.attention_from == "adapted" and d.non_local.student_blocks[0].pool_mode == "ceil"
    for field, value in (("attention_from", "student"), ("non_local_pool_mode", "nearest")):
        with pytest.raises(ConfigError, match=rf"distill\.nld\.{field} = '{value}'"):
            NLDParams(**{field: value}).validate("distill.nld")
    NLDParams(attention_from="adapted", non_local_pool_mode="ceil").validate("distill.nld")
