"""Relaxed C4 lifting and group convolutions (paper 003) and the field networks built from them,
in float64: strict layers exactly equivariant, relaxed ones at initialisation only, the measured
error per layer, references for both formulations of the relaxed convolution, and no cache that
survives a perturbation of the weights."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ella.dynamics.networks import (
    FieldCNN,
    FieldGCNN,
    cnn_width_for,
    regular_to_vector,
    vector_to_regular,
)
from ella.dynamics.plume import rotate_fields
from ella.layers import (
    GroupConv,
    LiftingConv,
    RelaxedGroupConv,
    RelaxedLiftingConv,
    equivariance_error,
    layer_equivariance_errors,
    relaxation_penalty,
    rotate_p4,
)
from symdisc.curvature import functional

DTYPE = torch.float64
TOL = 1e-12


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _planar(c: int = 2, seed: int = 0) -> Tensor:
    return torch.randn(2, c, 7, 7, generator=_gen(seed), dtype=DTYPE)


def _group(c: int = 2, seed: int = 0) -> Tensor:
    return torch.randn(2, c, 4, 7, 7, generator=_gen(seed), dtype=DTYPE)


def _layer(kind: str, tied: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cls = RelaxedLiftingConv if kind == "lifting" else RelaxedGroupConv
    return cls(2, 3, 3, banks=3, tied=tied).to(DTYPE)


def _input(kind: str) -> Tensor:
    return _planar() if kind == "lifting" else _group()


def _spread_weights(layer: nn.Module, seed: int = 1) -> None:
    """Random, unequal combination weights: random ``relaxed_weights`` and, for a relaxed layer,
    a random ``relaxation``."""
    with torch.no_grad():
        for p in (layer.relaxed_weights, layer.relaxation):
            if p is not None:
                p.copy_(torch.randn(p.shape, generator=_gen(seed), dtype=DTYPE))
                seed += 100


KINDS = ["lifting", "group"]


@pytest.mark.parametrize("kind", KINDS)
def test_strict_layers_are_exactly_c4_equivariant(kind):
    layer = _layer(kind, tied=True)
    _spread_weights(layer)  # tied: one weight per bank, whatever its value
    x = _input(kind)
    with torch.no_grad():
        y = layer(x)
        for k in (1, 2, 3):
            err = (layer(rotate_p4(x, k)) - rotate_p4(y, k)).abs().max().item()
            assert err < TOL, (k, err)
    assert layer.relaxed_weights.shape == (3, 1) and layer.relaxation is None
    assert "relaxation" not in dict(layer.named_parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_relaxed_layers_equivariant_at_initialisation_only(kind):
    layer = _layer(kind, tied=False)
    x = _input(kind)
    assert torch.equal(layer.relaxed_weights, torch.ones(3, 1, dtype=DTYPE))
    assert torch.equal(layer.relaxation, torch.zeros(3, 4, dtype=DTYPE))
    assert equivariance_error(layer, x) < TOL
    _spread_weights(layer)
    assert equivariance_error(layer, x) > 1e-2
    torch.testing.assert_close(
        layer.combination_weights(), layer.relaxed_weights + layer.relaxation, rtol=0, atol=0
    )


@pytest.mark.parametrize("kind", KINDS)
def test_equivariance_depends_on_the_relaxation_only(kind):
    """Any relaxed_weights with a relaxation constant over the rotations: exactly equivariant;
    a relaxation that varies over them: not."""
    layer = _layer(kind, tied=False)
    x = _input(kind)
    with torch.no_grad():
        layer.relaxed_weights.copy_(torch.randn(3, 1, generator=_gen(7), dtype=DTYPE))
        assert equivariance_error(layer, x) < TOL
        layer.relaxation.copy_(torch.randn(3, 1, generator=_gen(8), dtype=DTYPE).expand(3, 4))
        assert equivariance_error(layer, x) < TOL
        layer.relaxation[0, 2] += 0.3
    assert equivariance_error(layer, x) > 1e-3


def test_relaxation_has_its_own_prior_group_per_layer():
    from ella.laplace import prior_groups

    groups = prior_groups(FieldGCNN(2, 2, 2))
    assert groups["hidden.0:relaxation"] == ["hidden.0.relaxation"]
    assert groups["hidden.0:gconv"] == ["hidden.0.weight", "hidden.0.relaxed_weights",
                                         "hidden.0.bias"]  # fmt: skip
    assert sum(k.endswith(":relaxation") for k in groups) == 4
    tied = prior_groups(FieldGCNN(2, 2, 2, tied=True))
    assert not any(k.endswith(":relaxation") for k in tied) and len(tied) == 4


@pytest.mark.parametrize("kind", KINDS)
def test_equal_weights_give_the_strict_layer_with_summed_filters(kind):
    """w_l(r) = w_l: the layer is LiftingConv / GroupConv with filter sum_l w_l psi_l."""
    layer = _layer(kind, tied=False)
    w = torch.tensor([0.5, -1.5, 2.0], dtype=DTYPE)
    with torch.no_grad():
        layer.relaxed_weights.copy_(w[:, None] - 0.25)
        layer.relaxation.fill_(0.25)
    ref = (LiftingConv if kind == "lifting" else GroupConv)(2, 3, 3).to(DTYPE)
    with torch.no_grad():
        ref.weight.copy_(torch.einsum("l,l...->...", w, layer.weight))
        ref.bias.copy_(layer.bias)
        x = _input(kind)
        torch.testing.assert_close(layer(x), ref(x), rtol=0, atol=TOL)


def test_relaxed_group_conv_is_a_sum_of_group_convs_of_reweighted_inputs():
    """Paper 003's second formulation: sum_l [(w_l f) * Psi_l], w_l over the input rotation."""
    layer = _layer("group", tied=False)
    _spread_weights(layer)
    x = _group()
    ref = torch.zeros(2, 3, 4, 7, 7, dtype=DTYPE)
    with torch.no_grad():
        for bank in range(3):
            conv = GroupConv(2, 3, 3, bias=False).to(DTYPE)
            conv.weight.copy_(layer.weight[bank])
            w = layer.relaxed_weights[bank] + layer.relaxation[bank]
            ref += conv(x * w.view(1, 1, 4, 1, 1))
        ref += layer.bias.view(1, -1, 1, 1, 1)
        torch.testing.assert_close(layer(x), ref, rtol=0, atol=TOL)


def test_relaxed_lifting_weighs_the_rotated_templates_per_output_rotation():
    layer = _layer("lifting", tied=False)
    _spread_weights(layer)
    x = _planar()
    with torch.no_grad():
        out = layer(x)
        for bank_r in range(4):
            ref = LiftingConv(2, 3, 3).to(DTYPE)
            w = layer.relaxed_weights[:, 0] + layer.relaxation[:, bank_r]
            filt = torch.einsum("l,l...->...", w, layer.weight)
            ref.weight.copy_(filt)
            ref.bias.copy_(layer.bias)
            torch.testing.assert_close(out[:, :, bank_r], ref(x)[:, :, bank_r], rtol=0, atol=TOL)


def test_measured_equivariance_error_per_layer():
    torch.manual_seed(0)
    model = FieldGCNN(2, 2, 2).to(DTYPE)
    x = torch.randn(2, 3, 8, 8, generator=_gen(3), dtype=DTYPE)
    errors = layer_equivariance_errors(model, x)
    assert set(errors) == {"lift_density", "lift_velocity", "hidden.0", "out"}
    assert max(errors.values()) < TOL
    _spread_weights(model.hidden[0])
    errors = layer_equivariance_errors(model, x)
    assert errors["hidden.0"] > 1e-2
    assert max(v for k, v in errors.items() if k != "hidden.0") < TOL
    assert equivariance_error(model, x, rotate_fields, rotate_fields) > 1e-3


def test_vector_fields_as_regular_maps():
    u = torch.randn(2, 2, 6, 6, generator=_gen(4), dtype=DTYPE)
    for k in (1, 2, 3):
        rotated = rotate_fields(torch.cat([u[:, :1], u], 1), k)[:, 1:]  # the velocity part
        torch.testing.assert_close(vector_to_regular(rotated), rotate_p4(vector_to_regular(u), k))
        y = torch.randn(2, 1, 4, 6, 6, generator=_gen(k), dtype=DTYPE)
        back = rotate_fields(torch.cat([u[:, :1], regular_to_vector(y)], 1), k)[:, 1:]
        torch.testing.assert_close(regular_to_vector(rotate_p4(y, k)), back)
    torch.testing.assert_close(regular_to_vector(vector_to_regular(u)), 2 * u)


@pytest.mark.parametrize("tied", [True, False])
def test_field_gcnn_on_states(tied):
    """Tied: exactly equivariant on (density, velocity) states for any weights; relaxed: at
    initialisation, and no longer once its combination weights differ."""
    torch.manual_seed(0)
    model = FieldGCNN(2, 2, 2, tied=tied).to(DTYPE)
    x = torch.randn(3, 3, 8, 8, generator=_gen(5), dtype=DTYPE)
    assert equivariance_error(model, x, rotate_fields, rotate_fields) < TOL
    for m in model.modules():
        if isinstance(m, (RelaxedLiftingConv, RelaxedGroupConv)):
            _spread_weights(m)
    err = equivariance_error(model, x, rotate_fields, rotate_fields)
    assert err < TOL if tied else err > 1e-3


def test_relaxation_penalty():
    torch.manual_seed(0)
    relaxed, strict = FieldGCNN(2, 1, 2).to(DTYPE), FieldGCNN(2, 1, 2, tied=True).to(DTYPE)
    assert relaxation_penalty(relaxed).item() == 0.0
    _spread_weights(relaxed.out)
    pen = relaxation_penalty(relaxed)
    w = relaxed.out.combination_weights().detach()
    assert pen.item() == pytest.approx(float((w.roll(-1, 1) - w).abs().sum()))
    pen.backward()
    assert relaxed.out.relaxation.grad.abs().sum() > 0
    assert relaxed.out.relaxed_weights.grad is None  # a function of the relaxation only
    assert relaxation_penalty(strict).item() == 0.0
    assert relaxation_penalty(FieldCNN(2)).item() == 0.0


@pytest.mark.parametrize("name", ["cnn", "gcnn", "relaxed_gcnn"])
def test_no_cache_survives_a_weight_perturbation(name):
    """Every parameter tensor, perturbed in place or through functional_call, changes the output
    (in eval mode, after a first forward that could have filled a cache)."""
    torch.manual_seed(0)
    model = FieldCNN(3) if name == "cnn" else FieldGCNN(2, 2, 2, tied=name == "gcnn")
    model = model.to(DTYPE).eval()
    x = torch.randn(2, 3, 8, 8, generator=_gen(6), dtype=DTYPE)
    f, params = functional(model)
    with torch.no_grad():
        base = model(x)
        for key in params:
            moved = dict(params)
            moved[key] = params[key] + 1e-3 * torch.randn_like(params[key])
            assert (f(moved, x) - base).abs().max() > 1e-9, key
            torch.testing.assert_close(model(x), base, rtol=0, atol=0)  # module untouched
        for pname, p in model.named_parameters():
            old = p.clone()
            p.add_(1e-3 * torch.randn_like(p))
            assert (model(x) - base).abs().max() > 1e-9, pname
            p.copy_(old)
        torch.testing.assert_close(model(x), base, rtol=0, atol=0)


def test_matched_cnn_width_and_bad_input():
    target = sum(p.numel() for p in FieldGCNN(2, 2, 2).parameters())
    got = sum(p.numel() for p in FieldCNN(cnn_width_for(target)).parameters())
    assert abs(got - target) / target < 0.15
    with pytest.raises(ValueError, match="kernel_size"):
        RelaxedGroupConv(1, 1, 4)
    with pytest.raises(ValueError, match="group feature map"):
        RelaxedGroupConv(1, 1)(torch.zeros(1, 1, 5, 5))
    with pytest.raises(ValueError, match="states"):
        FieldGCNN()(torch.zeros(1, 2, 5, 5))
    with pytest.raises(TypeError, match="tied"):
        RelaxedLiftingConv(1, 1, tied="yes")
    with pytest.raises(ValueError, match="activation"):
        FieldCNN(2, activation="tanh")
