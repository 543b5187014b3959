"""Fixup ResNets (paper 001, appendix B.2, table 2): initialisation, KFAC of every parameter
against the exact GGN for one data point (float64), the kron Laplace approximation, augmented
KFAC (eq. 19), and the SGD momentum of MarglikConfig (appendix B.3)."""

import math

import pytest
import torch
import torch.nn.functional as F

from ella.invariance import AffineAugmentation, InvariantModel, invariant_laplace
from ella.laplace import Laplace
from ella.layers import ScalarBias, ScalarScale
from ella.marglik import MarglikConfig, MarglikLoop
from ella.models import FixupBasicBlock, FixupResNet, fixup_resnet
from symdisc.curvature import ggn, kfac

D = torch.float64
TOL = 1e-10


def _net(size_seed: int = 0, in_planes: int = 2, width: int = 3) -> FixupResNet:
    """A tiny depth-8 Fixup ResNet (2 input channels, 3 classes) in float64 with every parameter
    moved off its Fixup initialisation (at init most GGN blocks vanish)."""
    net = fixup_resnet(8, in_planes, width, n_classes=3, in_channels=2, seed=size_seed).double()
    gen = torch.Generator().manual_seed(size_seed + 100)
    with torch.no_grad():  # logits of order 1: the softmax is far from saturated
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=D))
    return net


def _model_fn(module):
    return lambda params, x: torch.func.functional_call(module, params, (x,))


def _exact_blocks(module, x, y) -> tuple[torch.Tensor, dict[str, slice]]:
    """The exact GGN (P, P) of the summed cross-entropy and each parameter's slice in it."""
    params = {n: p.detach() for n, p in module.named_parameters()}
    G = ggn(_model_fn(module), params, x, y, loss="cross_entropy", reduction="sum")
    where, start = {}, 0
    for n, p in params.items():
        where[n] = slice(start, start + p.numel())
        start += p.numel()
    return G, where


def _block(G: torch.Tensor, where: dict[str, slice], names: tuple[str, ...]) -> torch.Tensor:
    idx = torch.cat([torch.arange(where[n].start, where[n].stop) for n in names])
    return G[idx][:, idx]


def _close(approx: torch.Tensor, exact: torch.Tensor) -> None:
    """Agreement to 1e-10 relative to the block's largest entry, which must be far from 0."""
    scale = exact.abs().max().item()
    assert scale > 1e-9, "a trivially zero block"
    assert (approx - exact).abs().max().item() <= TOL * scale


# -- architecture and Fixup initialisation ------------------------------------------------------


def test_depth_14_16_layout_and_parameter_count():
    net = fixup_resnet(14, 16)
    assert net.n_blocks == 6 and all(len(s) == 2 for s in (net.layer1, net.layer2, net.layer3))
    widths = [b.out_channels for s in (net.layer1, net.layer2, net.layer3) for b in s]
    assert widths == [16, 16, 32, 32, 64, 64]
    assert [b.stride for s in (net.layer1, net.layer2, net.layer3) for b in s] == [1, 1, 2, 1, 2, 1]
    convs = sum(m.weight.numel() for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert convs == 3 * 16 * 9 + 2 * 2 * 16 * 16 * 9 + 16 * 32 * 9 + 3 * 32 * 32 * 9 + (
        32 * 64 * 9 + 3 * 64 * 64 * 9
    )
    n_scalars = sum(isinstance(m, (ScalarBias, ScalarScale)) for m in net.modules())
    assert n_scalars == 2 + 6 * 5
    assert next(net.parameters()).dtype == torch.float32
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert net.double()(torch.randn(1, 3, 32, 32, dtype=D)).dtype == D


def test_fixup_init_branches_and_logits_are_zero():
    net = fixup_resnet(14, 8, seed=1)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(net(x), torch.zeros(3, 10))
    h = F.relu(net.bias1(net.conv1(x)))
    for block in [*net.layer1, *net.layer2, *net.layer3]:
        branch, short = block.parts(h)
        assert torch.equal(branch, torch.zeros_like(branch))
        out = block(h)
        assert torch.equal(out, F.relu(short))  # identity (+ shortcut) at init
        if not block.projects:
            assert torch.equal(out, F.relu(h))
        h = out
    # first branch convolutions: He std scaled by L^(-1/2) (L = 6 blocks, m = 2)
    w = net.layer3[1].conv1.weight
    expected = math.sqrt(2.0 / (w.shape[0] * 9)) / math.sqrt(6)
    assert abs(w.std().item() / expected - 1) < 0.05
    assert torch.equal(net.layer3[1].conv2.weight, torch.zeros_like(w))


def test_projecting_shortcut_subsamples_and_pads_channels():
    block = FixupBasicBlock(2, 4, stride=2).double()
    x = torch.randn(1, 2, 4, 4, dtype=D)
    with torch.no_grad():
        block.bias1a.bias.fill_(0.25)
    _, short = block.parts(x)
    assert short.shape == (1, 4, 2, 2)
    assert torch.equal(short[:, :2], x[..., ::2, ::2] + 0.25)
    assert torch.equal(short[:, 2:], torch.zeros(1, 2, 2, 2, dtype=D))


def test_argument_checks():
    with pytest.raises(ValueError, match="depth"):
        fixup_resnet(12, 8)
    with pytest.raises(ValueError, match="width"):
        fixup_resnet(8, 8, width=4)
    with pytest.raises(TypeError, match="in_planes"):
        fixup_resnet(8, 8.0)
    with pytest.raises(ValueError, match="stride"):
        FixupBasicBlock(2, 2, stride=3)


def test_seed_fixes_init_and_leaves_global_state():
    state = torch.get_rng_state()
    a, b = fixup_resnet(8, 4, seed=3), fixup_resnet(8, 4, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# -- KFAC against the exact GGN (one data point, float64) -----------------------------------------


def test_kfac_covers_every_parameter():
    net = _net()
    x, y = torch.randn(1, 2, 4, 4, dtype=D), torch.tensor([1])
    factors = kfac(net, [(x, y)], loss="cross_entropy", reduction="sum")
    covered = [p for f in factors.values() for p in f.params]
    assert sorted(covered) == sorted(n for n, _ in net.named_parameters())


def test_kfac_exact_for_one_point_on_1x1_maps():
    """On a 1 x 1 input every map stays 1 x 1 (3 x 3 convs with padding 1, stride-2 subsampling
    of a 1 x 1 map): each convolution has one position, so KFAC of every block -- convolutions,
    linear layer and scalars -- is the exact GGN block for one sample."""
    net = _net(3, 3, 3)  # a point on which no block's ReLUs are all dead
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(1, 2, 1, 1, dtype=D, generator=gen), torch.tensor([2])
    G, where = _exact_blocks(net, x, y)
    factors = kfac(net, [(x, y)], loss="cross_entropy", reduction="sum")
    assert len(factors) == len(where) - 1  # fc weight and bias share one block
    for f in factors.values():
        _close(f.to_dense(), _block(G, where, f.params))


def _expand_reference(net, x, name):
    """Expand-KFAC of convolution ``name`` built per position: A = mean over the L output
    positions of patch patch^T, G = sum over positions and output-Hessian columns of g g^T, with
    the patches from an explicit loop over zero-padded windows."""
    conv = dict(net.named_modules())[name]
    store = {}
    handle = conv.register_forward_hook(lambda m, a, out: store.update(x=a[0], y=out))
    logits = net(x)
    handle.remove()
    p = torch.softmax(logits[0], 0)
    H = torch.diag(p) - torch.outer(p, p)
    evals, evecs = torch.linalg.eigh(H)
    root = evecs * evals.clamp_min(0).sqrt()  # H = root root^T
    grads = [
        torch.autograd.grad(logits[0], store["y"], root[:, k], retain_graph=True)[0][0]
        for k in range(root.shape[1])
    ]
    inp = F.pad(store["x"][0].detach(), (1, 1, 1, 1))
    s = conv.stride[0]
    h_out, w_out = store["y"].shape[-2:]
    rows_a, rows_g = [], []
    for i in range(h_out):
        for j in range(w_out):
            rows_a.append(inp[:, i * s : i * s + 3, j * s : j * s + 3].reshape(-1))
            rows_g.extend(gr[:, i, j] for gr in grads)
    a, g = torch.stack(rows_a), torch.stack(rows_g)
    return a.T @ a / a.shape[0], g.T @ g


def test_kfac_one_point_on_8x8_maps():
    """On an 8 x 8 input the scalar and linear blocks are exact for one sample; the convolutions
    share their weights over positions, where KFAC (expand) is an approximation: it equals the
    per-position expand reference, and differs from the exact block."""
    net = _net(2)
    x, y = torch.randn(1, 2, 8, 8, dtype=D), torch.tensor([0])
    G, where = _exact_blocks(net, x, y)
    factors = kfac(net, [(x, y)], loss="cross_entropy", reduction="sum")
    n_exact = n_conv = 0
    for key, f in factors.items():
        exact = _block(G, where, f.params)
        module = dict(net.named_modules())[key]
        if isinstance(module, torch.nn.Conv2d):
            A, Gf = _expand_reference(net, x, key)
            _close(f.A, A)
            _close(f.G, Gf)
            # weight sharing over positions: not the exact block
            assert (f.to_dense() - exact).abs().max() > 1e-3 * exact.abs().max()
            n_conv += 1
        else:
            assert isinstance(module, (ScalarBias, ScalarScale, torch.nn.Linear))
            _close(f.to_dense(), exact)
            n_exact += 1
    assert n_conv == 1 + 6 and n_exact == 2 + 3 * 5 + 1


def test_scalar_blocks_exact_for_several_points():
    """A scalar's 1 x 1 block is the exact GGN block for any number of samples."""
    net = _net(3)
    x, y = torch.randn(3, 2, 4, 4, dtype=D), torch.tensor([0, 2, 1])
    G, where = _exact_blocks(net, x, y)
    factors = kfac(net, [(x, y)], loss="cross_entropy", reduction="sum")
    scalars = [f for f in factors.values() if f.A.numel() == 1 and f.G.numel() == 1]
    assert len(scalars) == 2 + 3 * 5
    for f in scalars:
        _close(f.to_dense(), _block(G, where, f.params))


# -- Laplace and augmented KFAC ------------------------------------------------------------------


def test_kron_laplace_gives_finite_marglik():
    net = _net(4)
    x, y = torch.randn(6, 2, 8, 8, dtype=D), torch.randint(0, 3, (6,))
    la = Laplace(net, "classification", "kron").fit([(x[:3], y[:3]), (x[3:], y[3:])])
    value = la.log_marginal_likelihood(1.0)
    assert torch.isfinite(value)
    assert len(la.groups) == len(list(net.modules())) - sum(
        1 for m in net.modules() if not any(True for _ in m.parameters(recurse=False))
    )


def test_augmented_kfac_scalar_blocks_equal_exact_augmented_ggn():
    """invariant_laplace(..., "kron") on InvariantModel(fixup, AffineAugmentation, S): the blocks
    of the scalars and of the linear layer equal the exact GGN of f_hat (the draw-averaged model,
    eq. 17) for one data point; the model's curvature covers every parameter."""
    net = _net(5)
    aug = AffineAugmentation([0.1, 0.0, 0.5, 0.0, 0.0, 0.1], dtype=D)
    model = InvariantModel(net, aug, 4)
    x, y = torch.randn(1, 2, 8, 8, dtype=D), torch.tensor([1])
    eps = aug.sample_eps(1, 4, torch.Generator().manual_seed(0))
    la = invariant_laplace(model, [(x, eps, y)], "classification", "kron")
    assert torch.isfinite(la.log_marginal_likelihood(1.0))
    averaged = model.averaged()
    with torch.no_grad():
        inputs = aug.apply(x, eps)
    G, where = _exact_blocks(averaged, inputs, y)
    checked = 0
    for f in la.curvature.values():
        exact = _block(G, where, f.params)
        module = dict(averaged.named_modules())[f.params[0].rsplit(".", 1)[0]]
        if isinstance(module, (ScalarBias, ScalarScale, torch.nn.Linear)):
            _close(f.to_dense(), exact)
            checked += 1
    assert checked == 2 + 3 * 5 + 1


# -- SGD momentum (appendix B.3) ------------------------------------------------------------------


def test_marglik_config_momentum():
    net = _net(6)
    loop = MarglikLoop(net, MarglikConfig(optimizer="sgd", momentum=0.9, nesterov=True), n=10)
    group = loop.optimizer.param_groups[0]
    assert isinstance(loop.optimizer, torch.optim.SGD)
    assert group["momentum"] == 0.9 and group["nesterov"] is True
    plain = MarglikLoop(net, MarglikConfig(optimizer="sgd"), n=10).optimizer.param_groups[0]
    assert plain["momentum"] == 0.0 and plain["nesterov"] is False
    with pytest.raises(ValueError, match="momentum"):
        MarglikConfig(optimizer="sgd", momentum=1.0)
    with pytest.raises(ValueError, match="momentum"):
        MarglikConfig(optimizer="sgd", momentum=-0.1)
    with pytest.raises(TypeError, match="momentum"):
        MarglikConfig(optimizer="sgd", momentum="0.9")
    with pytest.raises(ValueError, match="momentum"):
        MarglikConfig(optimizer="adam", momentum=0.9)
    with pytest.raises(ValueError, match="nesterov"):
        MarglikConfig(optimizer="sgd", nesterov=True)
    with pytest.raises(TypeError, match="nesterov"):
        MarglikConfig(optimizer="sgd", momentum=0.5, nesterov=1)
