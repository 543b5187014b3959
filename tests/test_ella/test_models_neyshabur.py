"""The table-6 network on images smaller than 32 x 32 (MNIST's 28 x 28, paper 000 table 3):
zero-padded to 32 inside the model, same parameters as at 32, and trainable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ella.models import count_parameters, neyshabur


@pytest.mark.parametrize("layer", ["conv", "ffc+conv", "ffc+conv+gconv"])
def test_28_pixels_are_padded_to_32_with_the_same_parameters(layer):
    model = neyshabur(layer, alpha=1, in_channels=1, n_classes=10, image_size=28)
    assert list(dict(model.named_children()))[0] == "pad"
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert model(x).shape == (3, 10)
    assert model.pad(x).shape == (3, 1, 32, 32)
    assert count_parameters(layer, 1, 1, 10, 28) == count_parameters(layer, 1, 1, 10, 32)
    assert "pad" not in dict(neyshabur(layer, alpha=1, in_channels=1).named_children())


def test_padding_is_zeros_around_the_centred_image():
    model = neyshabur("conv", alpha=1, in_channels=1, n_classes=2, image_size=27)
    x = torch.ones(1, 1, 27, 27)
    padded = model.pad(x)[0, 0]
    assert padded.shape == (32, 32)
    assert torch.equal(padded[2:29, 2:29], torch.ones(27, 27))  # 2 before, 3 after
    assert padded.sum() == 27 * 27


def test_28_pixel_network_equals_the_32_pixel_one_on_padded_images():
    torch.manual_seed(3)
    small = neyshabur("ffc+conv", alpha=1, in_channels=1, n_classes=4, image_size=28).double()
    big = neyshabur("ffc+conv", alpha=1, in_channels=1, n_classes=4).double()
    big.load_state_dict(small.state_dict())
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(small(x), big(F.pad(x, (2, 2, 2, 2))), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 28), (3, 32)])
def test_a_few_adam_steps_lower_the_loss(shape):
    channels, size = shape
    torch.manual_seed(0)
    model = neyshabur("ffc+conv", alpha=2, in_channels=channels, n_classes=10, image_size=size)
    x = torch.randn(16, channels, size, size)
    y = torch.arange(16) % 10
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(p.grad is not None for p in model.parameters())
    assert losses[-1] < losses[0] - 0.2  # memorising 16 random images


def test_image_size_rule():
    with pytest.raises(ValueError, match="image_size"):
        neyshabur("conv", alpha=1, image_size=48)  # above 32 and not a multiple of 32
    with pytest.raises(ValueError, match="image_size"):
        neyshabur("conv", alpha=1, image_size=0)
    assert neyshabur("conv", alpha=1, image_size=64)(torch.randn(1, 3, 64, 64)).shape == (1, 10)


# --------------------------------------------------------------------------------------------
# init="he": variance-preserving scale for the ReLU network (neyshabur's docstring)
# --------------------------------------------------------------------------------------------


def _layer_gains(model, x):
    """Per relaxed layer 1-8 and conv9: E|layer(h)|^2 / E|h|^2 on the features h it gets."""
    gains, h = [], x
    with torch.no_grad():
        for name, child in model.named_children():
            out = child(h)
            if name.startswith("layer") or name == "conv9":
                gains.append(float(out.square().mean() / h.square().mean()))
            h = out
    return gains


@pytest.mark.parametrize("layer", ["conv", "ffc+conv", "sfc+sconv", "ffc+conv+gconv"])
def test_default_init_is_unchanged_and_he_leaves_the_global_rng_alone(layer):
    torch.manual_seed(5)
    plain = neyshabur(layer, alpha=1, in_channels=1, n_classes=10, image_size=28)
    after_plain = torch.rand(3)
    torch.manual_seed(5)
    default = neyshabur(layer, 1, 1, 10, 28, init="default")
    torch.manual_seed(5)
    he = neyshabur(layer, 1, 1, 10, 28, init="he")
    after_he = torch.rand(3)
    for (name, p), q in zip(plain.state_dict().items(), default.state_dict().values()):
        assert torch.equal(p, q), name  # bit for bit
    assert torch.equal(after_plain, after_he)  # the probe has its own generator
    # biases, lengthscales, anchor positions and the logit layer keep their values
    for (name, p), q in zip(plain.state_dict().items(), he.state_dict().values()):
        last = name.rsplit(".", 1)[-1]
        if last == "bias" or last.startswith(("omega", "z")) or name.startswith("conv10"):
            assert torch.equal(p, q), name
    assert not all(torch.equal(p, q) for p, q in zip(plain.parameters(), he.parameters()))


def test_he_gives_conv_weights_variance_two_over_fan_in():
    torch.manual_seed(0)
    model = neyshabur("conv", alpha=8, in_channels=3, n_classes=10, init="he")
    fan_in = 3 * 3 * 3  # CONV's own fan-in C S^2 of layer 1 (zero-mean Gaussian input)
    assert abs(float(model.layer1.weight.detach().square().mean()) * fan_in - 2.0) < 0.2
    torch.manual_seed(0)
    default = neyshabur("conv", alpha=8, in_channels=3, n_classes=10)
    # the default U(+-1/sqrt(fan_in)) has second moment 1 / (3 fan_in)
    assert abs(float(default.layer1.weight.detach().square().mean()) * fan_in - 1 / 3) < 0.05


@pytest.mark.parametrize("layer", ["conv", "ffc+conv", "sfc+sconv", "ffc+conv+gconv"])
def test_he_gives_every_layer_gain_two_on_fresh_images(layer):
    torch.manual_seed(1)
    he = neyshabur(layer, alpha=2, in_channels=1, n_classes=10, image_size=32, init="he")
    torch.manual_seed(1)
    default = neyshabur(layer, alpha=2, in_channels=1, n_classes=10, image_size=32)
    x = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(7))  # not the probe
    gains = _layer_gains(he, x)
    assert len(gains) == 9
    assert all(1.0 < g < 4.0 for g in gains), gains  # He: 2, up to biases and sampling
    if layer in ("conv", "ffc+conv"):  # the default shrinks the features ~6-18 x per layer
        with torch.no_grad():
            assert float(he[:16](x).square().mean()) > 0.05  # after relu8; input: 1
            assert float(default[:16](x).square().mean()) < 0.02


def test_he_splits_the_gain_evenly_over_the_paths():
    torch.manual_seed(2)
    model = neyshabur("ffc+conv", alpha=2, in_channels=1, n_classes=10, image_size=32, init="he")
    h = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))  # the probe
    with torch.no_grad():
        for path in model.layer1.layers:
            out = path(h) - path.bias.view(-1, 1, 1)
            assert abs(float(out.square().mean() / h.square().mean()) - 1.0) < 1e-4


def test_init_is_checked():
    with pytest.raises(ValueError, match="init"):
        neyshabur("conv", alpha=1, init="xavier")
