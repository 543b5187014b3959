"""KFAC rules of the relaxed layers (ella.kfac): exact GGN blocks for one sample and one output
position, explicit per-sample factors for N samples (polyphase-selected positions included),
and the kron Laplace on relaxed models."""

import math

import pytest
import torch
from torch import nn

import ella  # noqa: F401  (registers the rules)
from ella.laplace import Laplace
from ella.layers import CONV, FC, FFC, SCONV, SFC
from ella.layers.relaxed import rbf_basis
from symdisc.curvature import functional, ggn, kfac
from symdisc.curvature._losses import loss_value

DTYPE = torch.float64


def _model(layer, c_flat, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(layer, nn.Tanh(), nn.Flatten(), nn.Linear(c_flat, 3)).to(DTYPE)


def _data(n, shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=DTYPE), torch.randint(0, 3, (n,), generator=g)


def _block(model, x, y, loss, reduction, layer_name, names):
    f, params = functional(model)
    G = ggn(f, params, x, y, loss=loss, reduction=reduction)
    offsets, start = {}, 0
    for n, p in params.items():
        offsets[n] = torch.arange(start, start + p.numel())
        start += p.numel()
    idx = torch.cat([offsets[f"{layer_name}.{n}"] for n in names])
    return G[idx][:, idx]


def _layers_one_position():
    """Layers with ONE output position (weight sharing trivial): FC any; CONV/SCONV 2x2 -> 1x1."""
    torch.manual_seed(0)
    return {
        "FC": (FC(2, 2, 2, 2), 2 * 4, ("weight", "bias")),
        "CONV": (CONV(2, 3, 2, 1, kernel_size=3), 3, ("weight", "bias")),
        "SCONV": (SCONV(2, 3, 2, 1, kernel_size=3), 3, ("u", "bias")),
    }


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("kind", ["FC", "CONV", "SCONV"])
def test_one_sample_one_position_kfac_equals_exact_ggn_block(kind, loss):
    layer, c_flat, names = _layers_one_position()[kind]
    model = _model(layer, c_flat)
    x, y = _data(1, (2, 2, 2))
    if loss == "mse":
        y = torch.randn(1, 3, dtype=DTYPE)
    factors = kfac(model, [(x, y)], loss=loss, reduction="sum")
    assert set(factors) == {"0", "3"}
    assert factors["0"].params == tuple(f"0.{n}" for n in names)
    exact = _block(model, x, y, loss, "sum", "0", names)
    torch.testing.assert_close(factors["0"].to_dense(), exact, rtol=1e-10, atol=1e-12)


def _manual_patches(x, s):
    """(H W, C S S) circular patches of one image (C, H, W) by explicit indexing, row-major."""
    c, h, w = x.shape
    p = s // 2
    rows = torch.arange(-p, h + p) % h
    cols = torch.arange(-p, w + p) % w
    padded = x[:, rows][:, :, cols]
    return torch.stack(
        [padded[:, i : i + s, j : j + s].reshape(-1) for i in range(h) for j in range(w)]
    )


def _manual_selection(pre):
    """Row-major flat positions of the polyphase component with the largest max-abs entry."""
    _, h, w = pre.shape
    best, best_k = -1.0, None
    for k in range(4):
        comp = pre[:, k // 2 :: 2, k % 2 :: 2]
        v = float(comp.abs().max())
        if v > best:
            best, best_k = v, k
    i0, j0 = best_k // 2, best_k % 2
    return [i * w + j for i in range(i0, h, 2) for j in range(j0, w, 2)], best_k


def _reference(model, x, y, loss, reduction):
    """A and G of layer 0 one sample at a time: manual patches at the selected positions (projected
    on the basis for SCONV) and G = sum_n sum_t [J_n^T H_n J_n]_(t, t) from autograd Jacobians."""
    layer, tail = model[0], model[1:]
    out = model(x).detach()
    H = torch.autograd.functional.hessian(
        lambda o: loss_value(o.reshape(out.shape), y, loss, reduction), out.reshape(-1)
    ).reshape(*out.shape, *out.shape)
    a_rows, G, picks = [], 0, []
    for n in range(x.shape[0]):
        xn = x[n]
        if isinstance(layer, FC):
            a = xn.reshape(1, -1)
        else:
            weight = layer.weight if isinstance(layer, CONV) else layer.filter()
            s = layer.kernel_size
            patches = _manual_patches(xn, s)  # (H W, C S S)
            if layer.halves:
                pre = (patches @ weight.reshape(weight.shape[0], -1).T + layer.bias).T
                pos, k = _manual_selection(pre.reshape(-1, layer.in_size, layer.in_size).detach())
                patches, _ = patches[pos], picks.append(k)
            a = patches.detach()
            if isinstance(layer, SCONV):
                phi = rbf_basis(layer.points, layer.z, layer.omega).detach()  # (M, S S)
                a = torch.einsum("rcs,ms->rcm", a.reshape(a.shape[0], layer.in_channels, -1), phi)
                a = a.reshape(a.shape[0], -1)
        a_rows.append(torch.cat([a, torch.ones(a.shape[0], 1, dtype=DTYPE)], 1))
        sn = layer(x[n : n + 1]).detach()
        J = torch.autograd.functional.jacobian(lambda s_: tail(s_)[0], sn)[:, 0]  # (K, C', h, w)
        if isinstance(layer, FC):
            J = J.reshape(J.shape[0], -1, 1)
        else:
            J = J.reshape(J.shape[0], sn.shape[1], -1)
        G = G + torch.einsum("kot,kl,lpt->op", J, H[n, :, n, :], J)
    a_all = torch.cat(a_rows)
    return a_all.T @ a_all / a_all.shape[0], G, picks


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(
    "build",
    [
        lambda: (FC(2, 3, 4, 2), 3 * 4),
        lambda: (CONV(2, 3, 4, 4), 3 * 16),
        lambda: (CONV(2, 3, 4, 2), 3 * 4),
        lambda: (SCONV(2, 3, 4, 4), 3 * 16),
        lambda: (SCONV(2, 3, 4, 2, n_anchors=4), 3 * 4),
    ],
    ids=["FC", "CONV", "CONV-halving", "SCONV", "SCONV-halving"],
)
def test_factors_equal_per_sample_computation(build, reduction):
    torch.manual_seed(2)
    layer, c_flat = build()
    model = _model(layer, c_flat, seed=2)
    x, y = _data(6, (2, 4, 4), seed=3)
    factors = kfac(model, [(x, y)], loss="cross_entropy", reduction=reduction)
    A, G, picks = _reference(model, x, y, "cross_entropy", reduction)
    torch.testing.assert_close(factors["0"].A, A, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(factors["0"].G, G, rtol=1e-10, atol=1e-12)
    if picks:  # the data exercise more than one polyphase component
        assert len(set(picks)) > 1, picks


def test_sequential_model_gets_factors_for_every_relaxed_layer():
    torch.manual_seed(4)
    model = nn.Sequential(
        FC(2, 3, 4, 4),
        nn.Tanh(),
        CONV(3, 4, 4, 2),
        nn.Tanh(),
        SCONV(4, 2, 2, 2),
        nn.Flatten(),
        nn.Linear(2 * 4, 3),
    ).to(DTYPE)
    x, y = _data(5, (2, 4, 4), seed=5)
    factors = kfac(model, [(x, y)], loss="cross_entropy", reduction="sum")
    assert set(factors) == {"0", "2", "4", "6"}
    expect = {
        "0": (("0.weight", "0.bias"), 32 + 1, 48),
        "2": (("2.weight", "2.bias"), 3 * 9 + 1, 4),
        "4": (("4.u", "4.bias"), 4 * 5 + 1, 2),
    }
    for key, (params, d_a, d_g) in expect.items():
        f = factors[key]
        assert f.params == params and f.bias
        assert f.A.shape == (d_a, d_a) and f.G.shape == (d_g, d_g)
        assert torch.isfinite(f.to_dense()).all()
    # batching does not matter
    split = kfac(model, [(x[:2], y[:2]), (x[2:], y[2:])], loss="cross_entropy", reduction="sum")
    for key in factors:
        torch.testing.assert_close(split[key].A, factors[key].A, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(split[key].G, factors[key].G, rtol=1e-12, atol=1e-14)


def test_kron_laplace_fits_fc_conv_model():
    torch.manual_seed(6)
    model = nn.Sequential(
        FC(1, 2, 4, 4), nn.Tanh(), CONV(2, 3, 4, 2), nn.Tanh(), nn.Flatten(), nn.Linear(12, 3)
    ).to(DTYPE)
    x, y = _data(8, (1, 4, 4), seed=7)
    la = Laplace(model, "classification", "kron").fit([(x, y)])
    value = la.log_marginal_likelihood(1.0)
    assert torch.isfinite(value)
    assert set(la.curvature) == {"0", "2", "5"}


def test_kron_laplace_sconv_needs_frozen_lengthscales():
    torch.manual_seed(8)
    model = nn.Sequential(SCONV(1, 2, 4, 2), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)).to(DTYPE)
    x, y = _data(4, (1, 4, 4), seed=9)
    with pytest.raises(ValueError, match="omega"):
        Laplace(model, "classification", "kron").fit([(x, y)])
    model[0].omega.requires_grad_(False)
    la = Laplace(model, "classification", "kron").fit([(x, y)])
    assert torch.isfinite(la.log_marginal_likelihood(2.0))


def test_kron_laplace_equals_full_block_diagonal_for_one_sample():
    torch.manual_seed(10)
    model = nn.Sequential(
        FC(1, 2, 2, 2), nn.Tanh(), FC(2, 1, 2, 1), nn.Flatten(), nn.Linear(1, 3)
    ).to(DTYPE)
    x, y = _data(1, (1, 2, 2), seed=11)
    kron = Laplace(model, "classification", "kron").fit([(x, y)])
    full = Laplace(model, "classification", "full").fit([(x, y)])
    # a float64 tensor: a Python float goes through a float32 tensor in Laplace.precisions
    delta = torch.tensor(0.7, dtype=DTYPE)
    H = full.curvature
    sizes = [p.numel() for p in model.parameters()]
    starts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    logdet = 0.0
    for layer in range(3):  # (weight, bias) of each layer
        lo, hi = starts[2 * layer], starts[2 * layer + 2]
        block = H[lo:hi, lo:hi]
        logdet = logdet + torch.logdet(block + delta * torch.eye(hi - lo, dtype=DTYPE))
    torch.testing.assert_close(
        kron.log_det_posterior_precision(delta), logdet, rtol=1e-9, atol=1e-9
    )
    expected = kron.log_likelihood + kron.log_prior(delta) - 0.5 * logdet
    torch.testing.assert_close(kron.log_marginal_likelihood(delta), expected, rtol=1e-9, atol=1e-9)
    assert math.isfinite(float(full.log_marginal_likelihood(delta)))


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("kind", ["FFC", "SFC"])
def test_ffc_sfc_one_sample_one_channel_blocks_equal_exact_ggn(kind, loss):
    """With C = C' = 1 and one sample no weight is shared over channels: every block is exact."""
    torch.manual_seed(12)
    layer = FFC(1, 1, 4, 2) if kind == "FFC" else SFC(1, 1, 4, 2)
    model = _model(layer, 4, seed=12)
    x, y = _data(1, (1, 4, 4), seed=13)
    if loss == "mse":
        y = torch.randn(1, 3, dtype=DTYPE)
    factors = kfac(model, [(x, y)], loss=loss, reduction="sum")
    first, second = ("theta1", "theta2") if kind == "FFC" else ("u1", "u2")
    assert set(factors) == {"0:0", "0:1", "0:2", "3"}
    for key, name in zip(("0:0", "0:1", "0:2"), (first, second, "bias")):
        assert factors[key].params == (f"0.{name}",)
        exact = _block(model, x, y, loss, "sum", "0", (name,))
        torch.testing.assert_close(factors[key].to_dense(), exact, rtol=1e-10, atol=1e-12)


def test_ffc_bias_block_exact_and_kron_laplace_fits_ffc_sfc():
    torch.manual_seed(14)
    model = nn.Sequential(
        FFC(2, 3, 4, 2), nn.Tanh(), SFC(3, 2, 2, 2), nn.Flatten(), nn.Linear(8, 3)
    ).to(DTYPE)
    x, y = _data(1, (2, 4, 4), seed=15)
    factors = kfac(model, [(x, y)], loss="cross_entropy", reduction="sum")
    exact = _block(model, x, y, "cross_entropy", "sum", "0", ("bias",))
    torch.testing.assert_close(factors["0:2"].to_dense(), exact, rtol=1e-10, atol=1e-12)
    assert factors["0:0"].A.shape == (4, 4) and factors["0:0"].G.shape == (6, 6)  # swapped roles
    assert factors["2:1"].A.shape == (3 * 2, 3 * 2)  # u2: C M2 with M2 = 2
    model[2].omega1.requires_grad_(False)
    model[2].omega2.requires_grad_(False)
    x, y = _data(6, (2, 4, 4), seed=16)
    la = Laplace(model, "classification", "kron").fit([(x, y)])
    assert torch.isfinite(la.log_marginal_likelihood(1.0))


def test_ffc_factors_equal_per_sample_computation():
    """C, C' > 1, N samples: expand-KFAC over c (theta2) and c' (theta1, A and G swapped) against
    explicit inputs and autograd Jacobians of the outputs in z and y, one sample at a time."""
    torch.manual_seed(17)
    layer = FFC(2, 3, 4, 2)
    model = _model(layer, 12, seed=17)
    x, y = _data(5, (2, 4, 4), seed=18)
    factors = kfac(model, [(x, y)], loss="cross_entropy", reduction="mean")
    out = model(x).detach()
    H = torch.autograd.functional.hessian(
        lambda o: loss_value(o.reshape(out.shape), y, "cross_entropy", "mean"), out.reshape(-1)
    ).reshape(*out.shape, *out.shape)
    t1, t2 = (t.detach() for t in layer.factors())
    tail = model[1:]

    def from_z(z):  # (1, C', C) -> outputs (1, K)
        yy = torch.einsum("boc,ocpq->bopq", z, t1) + layer.bias.detach().view(1, 3, 1, 1)
        return tail(yy)[0]

    A1 = A2 = G1 = G2 = 0
    for n in range(5):
        xn = x[n].reshape(2, -1)
        z = torch.einsum("cq,ocq->oc", xn, t2.reshape(3, 2, -1))
        for c in range(2):
            a = torch.zeros(2, 16, dtype=DTYPE)
            a[c] = xn[c]
            A2 = A2 + torch.outer(a.reshape(-1), a.reshape(-1)) / (5 * 2)
        for o in range(3):
            a = torch.zeros(3, 2, dtype=DTYPE)
            a[o] = z[o]
            A1 = A1 + torch.outer(a.reshape(-1), a.reshape(-1)) / (5 * 3)
        Jz = torch.autograd.functional.jacobian(from_z, z[None])[:, 0]  # (K, C', C)
        G2 = G2 + torch.einsum("koc,kl,lpc->op", Jz, H[n, :, n, :], Jz)
        sn = layer(x[n : n + 1]).detach()
        Jy = torch.autograd.functional.jacobian(lambda s_: tail(s_)[0], sn)[:, 0].flatten(2)
        G1 = G1 + torch.einsum("kop,kl,loq->pq", Jy, H[n, :, n, :], Jy)
    torch.testing.assert_close(factors["0:1"].A, A2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(factors["0:1"].G, G2, rtol=1e-10, atol=1e-12)
    # theta1: A holds the output factor and G the input factor; their kron is what counts
    torch.testing.assert_close(
        torch.kron(factors["0:0"].G, factors["0:0"].A),
        torch.kron(A1, G1.contiguous()),
        rtol=1e-10,
        atol=1e-12,
    )
