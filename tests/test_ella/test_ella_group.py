"""p4 group layers of ``ella.layers.group`` (paper 000, App. A, B, F.3), in float64."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ella.layers import parameter_paths
from ella.layers.group import (
    GroupConv,
    GroupFC,
    GroupFFC,
    LiftingConv,
    PointwiseGroupConv,
    group_pool,
    rotate_p4,
)

DTYPE = torch.float64
TOL = 1e-10


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """float64 copy of ``model`` with every parameter (biases included) drawn from N(0, 1)."""
    model = model.to(DTYPE)
    g = _gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DTYPE))
    return model


def _planar(b: int = 2, c: int = 3, h: int = 7, w: int = 7, seed: int = 0) -> Tensor:
    return torch.randn(b, c, h, w, generator=_gen(seed), dtype=DTYPE)


def _group(b: int = 2, c: int = 3, h: int = 7, w: int = 7, seed: int = 0) -> Tensor:
    return torch.randn(b, c, 4, h, w, generator=_gen(seed), dtype=DTYPE)


def _max_err(a: Tensor, b: Tensor) -> float:
    return (a - b).abs().max().item()


def _correlate(x: Tensor, w: Tensor) -> Tensor:
    """Reference circular cross-correlation of one map ``(H, W)`` with an odd filter, by rolls."""
    k = w.shape[-1] // 2
    out = torch.zeros_like(x)
    for i in range(-k, k + 1):
        for j in range(-k, k + 1):
            out = out + torch.roll(x, shifts=(-i, -j), dims=(0, 1)) * w[i + k, j + k]
    return out


# ------------------------------------------------------------------------------------------------
# the action
# ------------------------------------------------------------------------------------------------


def test_rotate_p4_convention_and_order_four():
    y = _group(seed=1)
    ry = rotate_p4(y)
    for r in range(4):
        assert torch.equal(ry[:, :, r], torch.rot90(y[:, :, (r - 1) % 4], 1, dims=(-2, -1)))
    assert torch.equal(rotate_p4(rotate_p4(ry, 2), 1), y)
    assert torch.equal(rotate_p4(y, -1), rotate_p4(y, 3))
    x = _planar()
    assert torch.equal(rotate_p4(x), torch.rot90(x, 1, dims=(-2, -1)))


# ------------------------------------------------------------------------------------------------
# the layers compute their defining formulas
# ------------------------------------------------------------------------------------------------


def test_layers_match_their_formulas():
    x2, x3 = _planar(b=1, c=2, h=5, w=6), _group(b=1, c=2, h=5, w=6)
    lift = _randomise(LiftingConv(2, 3), 1)
    gconv = _randomise(GroupConv(2, 3), 2)
    pconv = _randomise(PointwiseGroupConv(2, 3), 3)
    yl, yg, yp = lift(x2), gconv(x3), pconv(x3)
    for d in range(3):
        for rp in range(4):
            rot = lambda w: torch.rot90(w, rp, dims=(-2, -1))  # noqa: E731
            ref_l = lift.bias[d] + sum(
                _correlate(x2[0, c], rot(lift.weight[d, c])) for c in range(2)
            )
            ref_p = pconv.bias[d] + sum(
                _correlate(x3[0, c, rp], rot(pconv.weight[d, c])) for c in range(2)
            )
            ref_g = gconv.bias[d] + sum(
                _correlate(x3[0, c, r], rot(gconv.weight[d, c, (r - rp) % 4]))
                for c in range(2)
                for r in range(4)
            )
            assert _max_err(yl[0, d, rp], ref_l) < TOL
            assert _max_err(yp[0, d, rp], ref_p) < TOL
            assert _max_err(yg[0, d, rp], ref_g) < TOL


# ------------------------------------------------------------------------------------------------
# equivariance
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("layer_cls", [LiftingConv, GroupConv, PointwiseGroupConv])
def test_single_layer_is_rotation_equivariant(layer_cls, kernel_size):
    layer = _randomise(layer_cls(3, 4, kernel_size=kernel_size), 7)
    x = _planar() if layer_cls is LiftingConv else _group()
    y = layer(x)
    assert y.shape == (2, 4, 4, 7, 7)
    for k in (1, 2, 3):
        assert _max_err(layer(rotate_p4(x, k)), rotate_p4(y, k)) < TOL


def _stack() -> nn.Sequential:
    return _randomise(
        nn.Sequential(
            LiftingConv(3, 4),
            nn.ReLU(),
            GroupConv(4, 5),
            nn.ReLU(),
            PointwiseGroupConv(5, 4, kernel_size=5),
            nn.ReLU(),
            GroupConv(4, 2, kernel_size=1),
        ),
        11,
    )


def test_stack_is_equivariant_and_pooled_stack_invariant():
    net = _stack()
    x = _planar(h=8, w=8, seed=3)
    y = net(x)
    for k in (1, 2, 3):
        rx = torch.rot90(x, k, dims=(-2, -1))
        ry = net(rx)
        assert _max_err(ry, rotate_p4(y, k)) < TOL
        for mode in ("max", "mean"):
            # pooling over rotations: equivariant planar maps ...
            assert (
                _max_err(group_pool(ry, mode), torch.rot90(group_pool(y, mode), k, (-2, -1))) < TOL
            )
            # ... and after global spatial pooling, invariant outputs.
            inv = group_pool(y, mode).mean(dim=(-2, -1))
            assert _max_err(group_pool(ry, mode).mean(dim=(-2, -1)), inv) < TOL
    assert y.abs().max() > 1e-3  # not trivially zero


def test_group_fc_is_not_equivariant():
    """Control: an unconstrained FC map on the group breaks the symmetry, so the checks can fail."""
    x = _group(h=5, w=5)
    for layer in (_randomise(GroupFC(3, 2, 5), 4), _randomise(GroupFFC(3, 2, 5), 5)):
        assert _max_err(layer(rotate_p4(x)), rotate_p4(layer(x))) > 1e-3


# ------------------------------------------------------------------------------------------------
# FC and F-FC on the group
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
def test_group_ffc_equals_fc_with_dense_weight(bias):
    ffc = _randomise(GroupFFC(3, 2, (4, 5), out_size=(3, 2), bias=bias), 6)
    fc = GroupFC(3, 2, (4, 5), out_size=(3, 2), bias=bias).to(DTYPE)
    with torch.no_grad():
        fc.weight.copy_(ffc.dense_weight())
        if bias:
            fc.bias.copy_(ffc.bias.reshape(-1))
    x = _group(h=4, w=5, seed=8)
    y = ffc(x)
    assert y.shape == (2, 2, 4, 3, 2)
    assert _max_err(y, fc(x)) < TOL
    # the dense weight is theta1(c', c, g') theta2(c', c, g) in GroupFC's row-major layout
    w = fc.weight.reshape(2, 4, 3, 2, 3, 4, 4, 5)
    assert (
        _max_err(w[1, 2, 0, 1, 2, 3, 1, 4], ffc.theta1[1, 2, 2, 0, 1] * ffc.theta2[1, 2, 3, 1, 4])
        < TOL
    )


def test_group_fc_layout():
    fc = _randomise(GroupFC(2, 3, 3), 9)
    x = _group(b=1, c=2, h=3, w=3)
    w = fc.weight.reshape(3, 4, 3, 3, 2, 4, 3, 3)
    assert _max_err(fc(x)[0], torch.einsum("dpijcrxy,crxy->dpij", w, x[0])) < TOL


# ------------------------------------------------------------------------------------------------
# tags and errors
# ------------------------------------------------------------------------------------------------


def test_every_parameter_is_tagged():
    model = nn.Sequential(
        LiftingConv(1, 2),
        GroupConv(2, 2),
        PointwiseGroupConv(2, 2, bias=False),
        GroupFC(2, 2, 3, bias=True),
        GroupFFC(2, 2, 3, bias=True),
    )
    paths = parameter_paths(model)
    assert set(paths) == {n for n, _ in model.named_parameters()}
    assert {n: p for n, (_, p) in paths.items()} == {
        "0.weight": "gconv",
        "0.bias": "gconv",
        "1.weight": "gconv",
        "1.bias": "gconv",
        "2.weight": "gconv",
        "3.weight": "fc",
        "3.bias": "fc",
        "4.theta1": "fc",
        "4.theta2": "fc",
        "4.bias": "fc",
    }


def test_shape_errors():
    with pytest.raises(ValueError, match="3 input channels.*got 2"):
        LiftingConv(3, 4)(_planar(c=2))
    with pytest.raises(ValueError, match=r"planar feature map.*\(B, C, H, W\)"):
        LiftingConv(3, 4)(_group())
    with pytest.raises(ValueError, match=r"group feature map.*\(B, C, 4, H, W\)"):
        GroupConv(3, 4)(_planar())
    with pytest.raises(ValueError, match=r"group feature map.*got shape \(2, 3, 3, 7, 7\)"):
        PointwiseGroupConv(3, 4)(torch.zeros(2, 3, 3, 7, 7))
    with pytest.raises(ValueError, match="4 input channels.*got 3"):
        PointwiseGroupConv(4, 4)(_group())
    with pytest.raises(ValueError, match="4 input channels.*got 3"):
        GroupConv(4, 4)(_group())
    with pytest.raises(ValueError, match=r"spatial size \(5, 5\), got \(7, 7\)"):
        GroupFC(3, 2, 5)(_group())
    with pytest.raises(ValueError, match=r"spatial size \(7, 6\), got \(7, 7\)"):
        GroupFFC(3, 2, (7, 6))(_group())
    with pytest.raises(ValueError, match="2 input channels"):
        GroupFFC(2, 2, 7)(_group())
    with pytest.raises(ValueError, match="group feature map"):
        group_pool(_planar())
    with pytest.raises(ValueError, match="`mode`"):
        group_pool(_group(), "sum")
    with pytest.raises(TypeError, match="`x` must be a Tensor"):
        GroupConv(3, 4)([1.0])


def test_constructor_errors():
    with pytest.raises(ValueError, match="`kernel_size` must be odd.*got 4"):
        GroupConv(2, 2, kernel_size=4)
    with pytest.raises(ValueError, match="`in_channels` must be a positive int, got 0"):
        LiftingConv(0, 2)
    with pytest.raises(TypeError, match="`out_channels` must be an int, got float"):
        PointwiseGroupConv(2, 2.0)
    with pytest.raises(TypeError, match="`size` must be an int or a pair"):
        GroupFC(2, 2, (3, 3, 3))
    with pytest.raises(ValueError, match=r"`out_size\[1\]` must be a positive int"):
        GroupFFC(2, 2, 3, out_size=(3, 0))
