"""Networks of p4 group layers (paper 000, App. B and F.3): exact rotation and translation
invariance of the strict paths, parameter counts of table 7, and the relaxed sum."""

import pytest
import torch

from ella.layers import parameter_paths, rotate_p4
from ella.models import GROUP_LAYERS, count_parameters, neyshabur
from ella.testing import assert_equivariant

F64 = torch.float64


def zero_paths(model, paths):
    """Set every parameter tagged with one of ``paths`` to zero (found through the tags)."""
    tagged = parameter_paths(model)
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, (_, path) in tagged.items():
            if path in paths:
                named[name].zero_()
    return model


def images(seed=0, n=2):
    return torch.randn(n, 3, 32, 32, dtype=F64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layer", ["gconv", "pointwise_gconv"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_gconv_networks_are_invariant_to_quarter_turns(layer, k):
    torch.manual_seed(0)
    model = neyshabur(layer, alpha=1).to(F64)
    error = assert_equivariant(
        model,
        lambda x: torch.rot90(x, k, (-2, -1)),
        inputs=images(),
        output_transform=lambda y: y,
        atol=1e-10,
    )
    assert error <= 1e-10


@pytest.mark.parametrize("layer", ["gconv", "pointwise_gconv"])
def test_gconv_feature_maps_are_equivariant_on_the_group(layer):
    torch.manual_seed(1)
    model = neyshabur(layer, alpha=1).to(F64)
    features = model[:5]  # lift, layer1, relu1, layer2 (halving), relu2: (B, 2, 4, 16, 16)
    x = images(1)
    torch.testing.assert_close(
        features(torch.rot90(x, 1, (-2, -1))), rotate_p4(features(x)), rtol=0, atol=1e-10
    )


def test_gconv_network_is_invariant_to_circular_translations():
    torch.manual_seed(2)
    model = neyshabur("gconv", alpha=1).to(F64)
    x = images(2)
    for shift in [(1, 0), (3, 5), (-7, 2)]:
        torch.testing.assert_close(
            model(torch.roll(x, shift, (-2, -1))), model(x), rtol=0, atol=1e-10
        )


def test_relaxed_sum_is_strict_only_when_the_relaxed_paths_are_zero():
    torch.manual_seed(3)
    x, turn = images(3), lambda t: torch.rot90(t, 1, (-2, -1))
    full = neyshabur("ffc+conv+gconv", alpha=1).to(F64)
    assert (full(turn(x)) - full(x)).abs().max() > 1e-4  # FC and CONV paths break the symmetry
    only_gconv = zero_paths(neyshabur("ffc+conv+gconv", alpha=1).to(F64), {"fc", "conv"})
    torch.testing.assert_close(only_gconv(turn(x)), only_gconv(x), rtol=0, atol=1e-10)
    conv_and_gconv = zero_paths(neyshabur("ffc+conv+gconv", alpha=1).to(F64), {"fc"})
    shifted = torch.roll(x, (5, -3), (-2, -1))
    torch.testing.assert_close(conv_and_gconv(shifted), conv_and_gconv(x), rtol=0, atol=1e-10)
    assert (conv_and_gconv(turn(x)) - conv_and_gconv(x)).abs().max() > 1e-4  # CONV: no rotations


def test_every_group_layer_parameter_is_tagged():
    for layer in sorted(GROUP_LAYERS):
        model = neyshabur(layer, alpha=1)
        tagged = parameter_paths(model)
        untagged = {n for n, _ in model.named_parameters()} - set(tagged)
        assert untagged == {"conv9.weight", "conv9.bias", "conv10.weight", "conv10.bias"}, layer


def test_parameter_counts_match_table_7_of_the_paper():
    # table 7 (alpha = 10): "Full, channel matched" 1,025,380 and "Pointwise" 338,770
    assert count_parameters("gconv", alpha=10) == 1_025_380
    assert count_parameters("pointwise_gconv", alpha=10) == 338_770
