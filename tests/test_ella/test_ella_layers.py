"""Relaxed-equivariance layers, polyphase pooling and the table-6 network (paper 000, section 3,
App. F.1-F.4): shapes, tags, exact factorisations, strict equivariance of the CONV limit and the
parameter counts of table 2.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ella.layers import (
    CONV,
    FC,
    FFC,
    SCONV,
    SFC,
    PathSum,
    RelaxedLayer,
    parameter_paths,
    polyphase_pool,
)
from ella.models import LAYERS, count_parameters, neyshabur
from ella.testing import assert_equivariant

DTYPE = torch.float64
ATOL = 1e-10
KINDS = {"fc": FC, "conv": CONV, "ffc": FFC, "sfc": SFC, "sconv": SCONV}
ROWS = ["fc", "conv", "fc+conv", "ffc", "ffc+conv", "sfc", "sconv", "sfc+sconv"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _roll(dx: int, dy: int):
    return lambda t: torch.roll(t, shifts=(dx, dy), dims=(-2, -1))


def _conv_limit(model: nn.Module) -> nn.Module:
    """Zero every parameter of a non-equivariant ("fc") path: the CONV limit sigma_fc = 0."""
    with torch.no_grad():
        for name, (_, path) in parameter_paths(model).items():
            if path == "fc":
                model.get_parameter(name).zero_()
    return model


# ---------------------------------------------------------------------------------- layers


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("out_size", [8, 4])
def test_layer_shapes_and_tags(kind, out_size):
    torch.manual_seed(0)
    layer = KINDS[kind](3, 5, 8, out_size)
    y = layer(torch.randn(2, 3, 8, 8))
    assert y.shape == (2, 5, out_size, out_size)
    path = "conv" if "conv" in kind else "fc"
    assert set(layer.paths) == {n for n, _ in layer.named_parameters()}
    assert set(layer.paths.values()) == {path}


def test_learnable_positions_are_tagged_and_prior_target_recorded():
    sfc = SFC(2, 3, 4, 2, learn_positions=True, prior_on="lengthscales")
    sconv = SCONV(2, 3, 4, 4, learn_positions=True, prior_on="weights")
    assert {"z1", "z2"} <= set(sfc.paths) and sfc.paths["z1"] == "fc"
    assert sconv.paths["z"] == "conv"
    assert (sfc.prior_target, sconv.prior_target) == ("lengthscales", "weights")
    assert SFC(2, 3, 4, 4).prior_target == "anchors" and FC(2, 3, 4, 4).prior_target == "weights"
    # where the prior sits (tests/test_ella/test_priors.py: groups, blocks, marginal likelihood)
    assert sfc.prior_parameters() == ("z1", "omega1", "z2", "omega2")
    assert sconv.prior_parameters() == ("u", "bias")
    assert SFC(2, 3, 4, 4).prior_parameters() == ("u1", "u2", "bias")
    # fixed positions are buffers, not parameters
    assert "z" not in dict(SCONV(2, 3, 4, 4).named_parameters())
    with pytest.raises(ValueError, match="prior_on"):
        SCONV(2, 3, 4, 4, prior_on="u")


def test_default_anchor_counts_follow_appendix_f4():
    assert SCONV(2, 3, 8, 8).u.shape == (3, 2, 5)  # ceil(9 / 2)
    assert SCONV(2, 3, 8, 8, kernel_size=5).n_anchors == 13  # ceil(25 / 2)
    sfc = SFC(2, 3, 4, 2)  # H'W' = 4, HW = 16
    assert sfc.u1.shape == (3, 2, 2) and sfc.u2.shape == (3, 2, 8)
    assert SFC(2, 3, 2, 1).n_anchors == (1, 2)  # ceil(1 / 2), ceil(4 / 2)


def test_ffc_equals_dense_fc():
    torch.manual_seed(1)
    for out_size in (6, 3):
        ffc = FFC(3, 4, 6, out_size).to(DTYPE)
        fc = FC(3, 4, 6, out_size).to(DTYPE)
        with torch.no_grad():
            fc.weight.copy_(ffc.dense_weight())
            fc.bias.copy_(ffc.bias.repeat_interleave(out_size * out_size))
        x = torch.randn(5, 3, 6, 6, dtype=DTYPE)
        assert torch.allclose(ffc(x), fc(x), atol=ATOL, rtol=0)


def test_sfc_is_ffc_with_induced_factors():
    torch.manual_seed(2)
    sfc = SFC(3, 4, 6, 3).to(DTYPE)
    ffc = FFC(3, 4, 6, 3).to(DTYPE)
    theta1, theta2 = sfc.factors()
    with torch.no_grad():
        ffc.theta1.copy_(theta1)
        ffc.theta2.copy_(theta2)
        ffc.bias.copy_(sfc.bias)
    x = torch.randn(2, 3, 6, 6, dtype=DTYPE)
    assert torch.allclose(sfc(x), ffc(x), atol=ATOL, rtol=0)


def test_sconv_on_grid_reproduces_a_dense_filter():
    """M = S^2 anchors sit exactly on the filter grid (the default grid for M = S^2).

    (a) Tiny lengthscale (omega = 20): phi = exp(-400 d^2) has off-grid-point weights below
    exp(-400) ~ 1e-174, so the induced filter *is* u, to float64 precision.
    (b) Any lengthscale (omega = 1): the 9 x 9 Gaussian Gram matrix Phi(j, k) =
    exp(-|p_k - z_j|^2) is positive definite, so u = w Phi^-1 interpolates w exactly.
    In both cases S-CONV equals CONV with the dense filter w.
    """
    torch.manual_seed(3)
    conv = CONV(2, 3, 6, 3).to(DTYPE)
    sconv = SCONV(2, 3, 6, 3, n_anchors=9).to(DTYPE)
    assert torch.equal(sconv.z, sconv.points)
    w = conv.weight.detach().reshape(3, 2, 9)
    x = torch.randn(4, 2, 6, 6, dtype=DTYPE)
    with torch.no_grad():
        sconv.bias.copy_(conv.bias)
        sconv.omega.fill_(20.0)
        sconv.u.copy_(w)
        assert torch.allclose(sconv.filter(), conv.weight, atol=1e-14, rtol=0)
        assert torch.allclose(sconv(x), conv(x), atol=ATOL, rtol=0)
        sconv.omega.fill_(1.0)
        phi = torch.exp(-(torch.cdist(sconv.z, sconv.points) ** 2))
        sconv.u.copy_(torch.linalg.solve(phi, w, left=False))
        assert torch.allclose(sconv.filter(), conv.weight, atol=1e-12, rtol=0)
        assert torch.allclose(sconv(x), conv(x), atol=ATOL, rtol=0)


def test_sparse_weights_are_induced_in_forward():
    torch.manual_seed(4)
    x = torch.randn(2, 2, 4, 4, dtype=DTYPE)
    for layer, name in ((SCONV(2, 3, 4, 4), "u"), (SFC(2, 3, 4, 2), "u2"), (SFC(2, 3, 4, 2), "u1")):
        layer = layer.to(DTYPE)
        before = layer(x)
        with torch.no_grad():
            getattr(layer, name).add_(0.1)
        assert not torch.allclose(layer(x), before)
    # gradients reach anchors and lengthscales
    sconv = SCONV(2, 3, 4, 2).to(DTYPE)
    sconv(x).square().sum().backward()
    assert sconv.u.grad.abs().sum() > 0 and sconv.omega.grad.abs().sum() > 0


def test_conv_layers_are_equivariant():
    torch.manual_seed(5)
    x = torch.randn(3, 2, 8, 8, dtype=DTYPE)
    for kind in (CONV, SCONV):
        same = kind(2, 3, 8, 8).to(DTYPE)
        half = kind(2, 3, 8, 4).to(DTYPE)
        assert_equivariant(same, _roll(3, -2), _roll(-3, 2), inputs=x, atol=ATOL)
        assert_equivariant(half, _roll(4, -2), inputs=x, output_transform=_roll(2, -1), atol=ATOL)


def test_pathsum_adds_paths_and_keeps_tags():
    torch.manual_seed(6)
    fc, conv = FC(2, 3, 4, 2).to(DTYPE), CONV(2, 3, 4, 2).to(DTYPE)
    both = PathSum(fc, conv)
    x = torch.randn(2, 2, 4, 4, dtype=DTYPE)
    assert torch.allclose(both(x), fc(x) + conv(x), atol=ATOL, rtol=0)
    assert isinstance(both, RelaxedLayer)
    assert parameter_paths(both) == {
        "layers.0.weight": ("layers.0", "fc"),
        "layers.0.bias": ("layers.0", "fc"),
        "layers.1.weight": ("layers.1", "conv"),
        "layers.1.bias": ("layers.1", "conv"),
    }
    with pytest.raises(ValueError, match="same shapes"):
        PathSum(FC(2, 3, 4, 2), CONV(2, 3, 4, 4))
    with pytest.raises(TypeError, match="layers\\[1\\]"):
        PathSum(FC(2, 3, 4, 2), nn.ReLU())


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_wrong_input_shape_is_named(kind):
    layer = KINDS[kind](3, 5, 8, 4)
    with pytest.raises(ValueError, match=r"\(B, 3, 8, 8\), got shape \(2, 4, 8, 8\)"):
        layer(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 3, 8, 8\), got shape \(2, 3, 6, 6\)"):
        layer(torch.randn(2, 3, 6, 6))
    with pytest.raises(ValueError, match="got shape"):
        layer(torch.randn(3, 8, 8))


def test_constructor_errors():
    with pytest.raises(ValueError, match="out_size"):
        CONV(2, 3, 8, 3)
    with pytest.raises(ValueError, match="out_size"):
        FC(2, 3, 7, 3)  # odd in_size cannot halve
    with pytest.raises(TypeError, match="in_channels"):
        FFC(2.0, 3, 8, 8)
    with pytest.raises(ValueError, match="kernel_size"):
        CONV(2, 3, 8, 8, kernel_size=4)
    with pytest.raises(ValueError, match="n_anchors"):
        SCONV(2, 3, 8, 8, n_anchors=10)
    with pytest.raises(ValueError, match="layer"):
        neyshabur("mlp")
    with pytest.raises(ValueError, match="image_size"):
        neyshabur("conv", alpha=1, image_size=48)


# ---------------------------------------------------------------------------------- pooling


def test_polyphase_pool_odd_sizes():
    with pytest.raises(ValueError, match="polyphase pooling needs even H and W, got H=5, W=4"):
        polyphase_pool(torch.randn(1, 2, 5, 4))
    with pytest.raises(ValueError, match="shape"):
        polyphase_pool(torch.randn(2, 4, 4))


def test_polyphase_pool_picks_per_sample():
    x = torch.zeros(3, 2, 4, 4, dtype=DTYPE)
    x[0, 1, 0, 2] = 5.0  # phase (0, 0)
    x[1, 0, 3, 1] = -7.0  # phase (1, 1): l-infinity uses |.|
    x[2, 1, 2, 3] = 2.0  # phase (0, 1)
    x = x + 0.01 * torch.rand(3, 2, 4, 4, generator=_gen(0), dtype=DTYPE)
    out, index = polyphase_pool(x, return_index=True)
    assert index.tolist() == [0, 3, 1]
    for b in range(3):
        alone = polyphase_pool(x[b : b + 1])
        assert torch.equal(out[b : b + 1], alone)
        k = index[b].item()
        assert torch.equal(out[b], x[b, :, k // 2 :: 2, k % 2 :: 2])
    # ties go to the first maximal component
    assert polyphase_pool(torch.ones(1, 1, 2, 2), return_index=True)[1].item() == 0


def test_polyphase_pool_is_equivariant_to_any_shift():
    """pool(roll(x, s)) is pool(x) rolled by floor(s / 2) or ceil(s / 2) (unique maxima)."""
    x = torch.randn(4, 3, 8, 8, generator=_gen(1), dtype=DTYPE)
    y = polyphase_pool(x)
    for dx, dy in [(1, 0), (0, 3), (5, 7), (2, -4)]:
        z = polyphase_pool(torch.roll(x, (dx, dy), dims=(-2, -1)))
        candidates = [
            torch.roll(y, (sx, sy), dims=(-2, -1))
            for sx in {dx // 2, -(-dx // 2)}
            for sy in {dy // 2, -(-dy // 2)}
        ]
        for b in range(4):
            assert any(torch.equal(z[b], c[b]) for c in candidates)


# ---------------------------------------------------------------------------------- network


@pytest.mark.parametrize("layer", ["conv", "fc+conv", "ffc+conv", "sfc+sconv", "sconv"])
def test_conv_limit_is_equivariant_then_invariant(layer):
    """With every "fc" parameter zero only CONV paths remain: feature maps after k halvings are
    equivariant to circular shifts by multiples of 2^k, and the output (after the last halving
    to 1 x 1) is invariant to any integer shift, through polyphase pooling."""
    torch.manual_seed(7)
    model = _conv_limit(neyshabur(layer, alpha=1, in_channels=2, n_classes=3)).to(DTYPE)
    x = torch.randn(2, 2, 32, 32, generator=_gen(2), dtype=DTYPE)
    for depth, factor in ((2, 1), (4, 2), (8, 4), (12, 8)):  # after layers 1, 2, 4, 6
        features = model[:depth]
        dx, dy = 3 * factor, -5 * factor
        assert_equivariant(
            features,
            _roll(dx, dy),
            inputs=x,
            output_transform=_roll(dx // factor, dy // factor),
            atol=ATOL,
        )
    for shift in [(1, 0), (0, 7), (13, -6), (31, 31)]:
        err = assert_equivariant(model, _roll(*shift), inputs=x, output_transform=lambda y: y)
        assert err <= ATOL


def test_relaxed_network_is_not_invariant():
    """The check has teeth: with the FC path switched on, shifts change the output."""
    torch.manual_seed(8)
    model = neyshabur("ffc+conv", alpha=1, in_channels=2, n_classes=3).to(DTYPE)
    x = torch.randn(2, 2, 32, 32, generator=_gen(3), dtype=DTYPE)
    with pytest.raises(AssertionError, match="equivariance error"):
        assert_equivariant(model, _roll(2, 0), inputs=x, output_transform=lambda y: y, atol=ATOL)


@pytest.mark.parametrize("layer", ROWS)
def test_network_forward_and_tags(layer):
    torch.manual_seed(9)
    model = neyshabur(layer, alpha=1, in_channels=3, n_classes=4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    tagged = set(parameter_paths(model))
    names = {n for n, _ in model.named_parameters()}
    # every parameter of layers 1-8 is tagged; the plain 1 x 1 layers 9 and 10 are not
    assert names - tagged == {"conv9.weight", "conv9.bias", "conv10.weight", "conv10.bias"}
    assert tagged <= names
    paths = {path for _, path in parameter_paths(model).values()}
    assert paths == ({"fc", "conv"} if "+" in layer else {"conv" if "conv" in layer else "fc"})


def test_bigger_images_scale_the_resolutions():
    model = neyshabur("sconv", alpha=1, in_channels=1, n_classes=2, image_size=64)
    assert model[:16](torch.randn(1, 1, 64, 64)).shape == (1, 16, 2, 2)
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 2)
    assert "pool" not in dict(neyshabur("sconv", alpha=1).named_children())


def test_layer_factory_is_extensible():
    LAYERS["test-conv5"] = lambda s: CONV(
        s.in_channels, s.out_channels, s.in_size, s.out_size, kernel_size=5
    )
    try:
        model = neyshabur("test-conv5", alpha=1, in_channels=1, n_classes=2)
        assert model.layer1.weight.shape == (1, 1, 5, 5)
    finally:
        del LAYERS["test-conv5"]


# ---------------------------------------------------------------------------------- counts

# Table 2 of paper 000 (alpha = 10, 3 x 32 x 32, 10 classes), in millions, and the exact counts
# with every parameter counted (see ella.models); CONV equals table 7's 338,770.
TABLE2 = {
    "fc": (133.6, 133_635_690),
    "conv": (0.3, 338_770),
    "fc+conv": (133.9, 133_865_010),
    "ffc": (1.5, 1_540_940),
    "ffc+conv": (1.8, 1_770_260),
    "sfc": (0.8, 834_017),
    "sconv": (0.2, 237_090),
    "sfc+sconv": (1.0, 961_657),
}


@pytest.mark.parametrize("layer", ROWS)
def test_table2_parameter_counts(layer):
    millions, exact = TABLE2[layer]
    count = count_parameters(layer, 10, 3, 10, 32)
    assert count == exact
    assert round(count / 1e6, 1) == millions


def test_counts_come_from_shapes_and_match_a_real_model():
    with torch.device("meta"):
        model = neyshabur("fc", alpha=10)
    assert all(p.is_meta for p in model.parameters())
    for layer in ROWS:
        real = sum(p.numel() for p in neyshabur(layer, alpha=1, in_channels=2).parameters())
        assert count_parameters(layer, 1, 2, 10, 32) == real
    # the weights of the 8 CONV layers and the two 1 x 1 layers (table 6)
    conv_weights = 9 * 10 * (3 + 20 + 40 + 80 + 160 + 320 + 640 + 1280) + 108_800
    assert conv_weights == 337_670
    assert math.isclose(count_parameters("conv") - conv_weights, 450 + 650)
