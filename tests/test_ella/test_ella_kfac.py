"""KFAC rules of the relaxed layers (ella.kfac): exact GGN blocks for one sample and one output
position, explicit per-sample factors for N samples (polyphase-selected positions included),
and the kron Laplace on relaxed models; the same for the layers on p4 feature maps (lifting,
group and pointwise group convolutions, the folded CONV path, GroupFC, GroupFFC), whose a rows
are also checked against exact Jacobians."""

import math

import pytest
import torch
from torch import nn

import ella  # noqa: F401  (registers the rules)
from ella.laplace import Laplace
from ella.layers import CONV, FC, FFC, SCONV, SFC, GroupPool
from ella.layers.group import GroupConv, GroupFC, GroupFFC, LiftingConv, PointwiseGroupConv
from ella.layers.group_paths import (
    FoldedConv,
    GroupPath,
    GroupPathSum,
    Lift,
    conv_path,
    ffc_path,
    gconv_path,
    pointwise_gconv_path,
)
from ella.layers.pooling import polyphase_pool
from ella.layers.relaxed import rbf_basis
from ella.models import GROUP_LAYERS, LAYERS, LayerSpec, neyshabur
from symdisc.curvature import functional, ggn, kfac, kfac_rule_for, loss_value

DTYPE = torch.float64


def _model(layer, c_flat, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(layer, nn.Tanh(), nn.Flatten(), nn.Linear(c_flat, 3)).to(DTYPE)


def _two_layer_model(first, second, c_flat):
    """``first``, tanh, ``second``, then a linear layer from ``c_flat`` features to 3 classes."""
    return nn.Sequential(first, nn.Tanh(), second, nn.Flatten(), nn.Linear(c_flat, 3)).to(DTYPE)


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


def _manual_selection(pre, subsampling="polyphase"):
    """Row-major flat positions of the polyphase component with the largest max-abs entry
    (component 0 for stride subsampling)."""
    _, h, w = pre.shape
    if subsampling == "stride":
        return [i * w + j for i in range(0, h, 2) for j in range(0, w, 2)], 0
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
                pre = pre.reshape(-1, layer.in_size, layer.in_size).detach()
                pos, k = _manual_selection(pre, layer.subsampling)
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
        lambda: (CONV(2, 3, 4, 2, subsampling="stride"), 3 * 4),
        lambda: (SCONV(2, 3, 4, 4), 3 * 16),
        lambda: (SCONV(2, 3, 4, 2, n_anchors=4), 3 * 4),
        lambda: (SCONV(2, 3, 4, 2, n_anchors=4, subsampling="stride"), 3 * 4),
    ],
    ids=["FC", "CONV", "CONV-halving", "CONV-stride", "SCONV", "SCONV-halving", "SCONV-stride"],
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
    if picks and getattr(model[0], "subsampling", None) == "polyphase":
        assert len(set(picks)) > 1, picks  # the data exercise more than one component


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


def test_kron_laplace_sconv_keeps_lengthscales_as_point_estimates():
    """Prior on the anchors (default): the posterior is over u and the bias; the trainable omega
    is a point estimate in no block and no group (tests/test_ella/test_priors.py: the rest)."""
    torch.manual_seed(8)
    model = nn.Sequential(SCONV(1, 2, 4, 2), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)).to(DTYPE)
    x, y = _data(4, (1, 4, 4), seed=9)
    assert model[0].omega.requires_grad
    la = Laplace(model, "classification", "kron").fit([(x, y)])
    assert la.groups["0:conv"] == ["0.u", "0.bias"] and "0.omega" not in la.names
    assert torch.isfinite(la.log_marginal_likelihood(2.0))


def test_kron_laplace_equals_full_block_diagonal_for_one_sample():
    torch.manual_seed(10)
    model = _two_layer_model(FC(1, 2, 2, 2), FC(2, 1, 2, 1), 1)
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
    model = _two_layer_model(FFC(2, 3, 4, 2), SFC(3, 2, 2, 2), 8)
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


# --------------------------------------------------------------------------------------------
# layers on p4 feature maps (ella.layers.group, ella.layers.group_paths)
# --------------------------------------------------------------------------------------------


def _p4_cases():
    """(module, input shape, rows -> output layout) for every group layer with a weight + bias:
    ``layout(t)`` turns a (R, C'') tensor in the rule's row order into the module's output."""
    torch.manual_seed(20)

    def p4(b, h, w):  # rows (B, 4, H, W), columns C'
        return lambda t: t.reshape(b, 4, h, w, -1).permute(0, 4, 1, 2, 3)

    def folded(b, h, w):  # rows (B, H, W), columns (C', 4)
        return lambda t: t.reshape(b, h, w, -1, 4).permute(0, 3, 4, 1, 2)

    return {
        "LiftingConv": (LiftingConv(2, 3, 3), (2, 2, 5, 5), p4(2, 5, 5)),
        "LiftingConv-5x5": (LiftingConv(2, 3, 5), (2, 2, 4, 6), p4(2, 4, 6)),
        "GroupConv": (GroupConv(2, 3, 3), (2, 2, 4, 5, 5), p4(2, 5, 5)),
        "GroupConv-4x6": (GroupConv(2, 3, 3), (2, 2, 4, 4, 6), p4(2, 4, 6)),
        "PointwiseGroupConv": (PointwiseGroupConv(2, 3, 3), (2, 2, 4, 5, 5), p4(2, 5, 5)),
        "FoldedConv": (FoldedConv(2, 3), (2, 2, 4, 4, 4), folded(2, 4, 4)),
        "GroupFC": (
            GroupFC(2, 3, 3, out_size=2, bias=True),
            (2, 2, 4, 3, 3),
            lambda t: t.reshape(2, 3, 4, 2, 2),
        ),
    }


def _weight_bias_matrix(module):
    w = module.weight.detach()
    return torch.cat([w.reshape(module.bias.shape[0], -1), module.bias.detach()[:, None]], 1)


@pytest.mark.parametrize("kind", list(_p4_cases()))
def test_group_rule_rows_reconstruct_exact_jacobian(kind):
    """The layer is linear in [weight | bias]: its exact Jacobian (``torch.func.jacfwd``) equals the
    one implied by the rule's a rows (``out = a [W | b]^T`` laid out as the output), and the g
    rows match the a rows row by row (``sum_i g_i a_i^T`` is the VJP of the cotangent)."""
    module, shape, layout = _p4_cases()[kind]
    module = module.to(DTYPE)
    x = torch.randn(*shape, dtype=DTYPE)
    params = {n: p.detach() for n, p in module.named_parameters()}
    out = module(x)
    v = torch.randn_like(out)
    (term,) = kfac_rule_for(module)(module, x, [v])
    assert term.params == ("weight", "bias") and term.bias
    wb = _weight_bias_matrix(module)

    def implied(m):
        return layout(term.a @ m.T)

    torch.testing.assert_close(implied(wb), out.detach(), rtol=1e-12, atol=1e-12)
    # forward mode: the Jacobian is tall (more outputs than parameters)
    jac = torch.func.jacfwd(lambda p: torch.func.functional_call(module, p, (x,)))(params)
    n_out, c_rows = out.numel(), wb.shape[0]
    exact = torch.cat(
        [
            jac["weight"].reshape(n_out, c_rows, -1),
            jac["bias"].reshape(n_out, c_rows, 1),
        ],
        2,
    ).reshape(n_out, -1)
    from_rows = torch.func.jacfwd(implied)(wb).reshape(n_out, -1)
    torch.testing.assert_close(from_rows, exact, rtol=1e-12, atol=1e-12)
    _, vjp = torch.func.vjp(lambda p: torch.func.functional_call(module, p, (x,)), params)
    (grads,) = vjp(v)
    gw = torch.cat([grads["weight"].reshape(c_rows, -1), grads["bias"][:, None]], 1)
    torch.testing.assert_close(term.g.T @ term.a, gw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["GroupConv", "PointwiseGroupConv", "FoldedConv"])
def test_group_rule_keeps_only_the_polyphase_component_the_network_reads(kind):
    """Output gradients that vanish on three polyphase components of every sample (what the
    polyphase pooling of a GroupPath / GroupPathSum leaves) select the remaining component's
    rows: A sees only those patches, and the rows still reproduce the VJP. A sample without any
    gradient (all units dead) takes the component polyphase pooling picks from the module's own
    output."""
    module, shape, _ = _p4_cases()[kind]
    module = module.to(DTYPE)
    shape = (3, *shape[1:-2], 4, 4)
    x = torch.randn(*shape, dtype=DTYPE)
    out = module(x)
    own = polyphase_pool(out[2:].detach().flatten(1, -3), return_index=True)[1]
    picks = [1, 3, int(own)]
    mask = torch.zeros_like(out)
    for b, k in enumerate(picks[:2]):
        mask[b, ..., k // 2 :: 2, k % 2 :: 2] = 1.0
    v = torch.randn_like(out) * mask
    (term,) = kfac_rule_for(module)(module, x, [v, 2 * v])
    n_pos = out[0].numel() // module.bias.shape[0] // 4  # (rotation, position) pairs per sample
    assert term.a.shape[0] == 3 * n_pos and term.g.shape[0] == 2 * 3 * n_pos
    full = kfac_rule_for(module)(module, x, [torch.randn_like(out)])[0].a
    rows = full.reshape(3, -1, *out.shape[-2:], full.shape[-1])  # (B, [4 or 1], H, W, D)
    expect = torch.cat(
        [
            rows[b, :, k // 2 :: 2, k % 2 :: 2, :].reshape(-1, full.shape[-1])
            for b, k in enumerate(picks)
        ]
    )
    torch.testing.assert_close(term.a, expect, rtol=0, atol=0)
    params = {n: p.detach() for n, p in module.named_parameters()}
    _, vjp = torch.func.vjp(lambda p: torch.func.functional_call(module, p, (x,)), params)
    (grads,) = vjp(v)
    c_rows = module.bias.shape[0]
    gw = torch.cat([grads["weight"].reshape(c_rows, -1), grads["bias"][:, None]], 1)
    torch.testing.assert_close(term.g[: term.a.shape[0]].T @ term.a, gw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [LiftingConv, GroupConv, PointwiseGroupConv])
def test_p4_conv_rule_without_bias(cls):
    torch.manual_seed(32)
    with_bias, without = cls(2, 3, 3).to(DTYPE), cls(2, 3, 3, bias=False).to(DTYPE)
    x = torch.randn(2, 2, *([4] if cls is not LiftingConv else []), 3, 3, dtype=DTYPE)
    v = torch.randn_like(with_bias(x))
    (t1,) = kfac_rule_for(with_bias)(with_bias, x, [v])
    (t0,) = kfac_rule_for(without)(without, x, [v])
    assert t0.params == ("weight",) and not t0.bias
    torch.testing.assert_close(t0.a, t1.a[:, :-1], rtol=0, atol=0)
    torch.testing.assert_close(t0.g, t1.g, rtol=0, atol=0)


class _ReadOneGroupElement(nn.Module):
    """(B, C', 4, H, W) -> (B, C' * len(rotations)): the group elements (r, position 0) only."""

    def __init__(self, rotations=(0,)):
        super().__init__()
        self.rotations = list(rotations)

    def forward(self, y):
        return y[:, :, self.rotations, 0, 0].flatten(1)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("kind", ["LiftingConv", "GroupConv", "PointwiseGroupConv"])
def test_p4_conv_one_sample_one_group_element_kfac_equals_exact_ggn_block(kind, loss):
    """Where expand-KFAC is exact for a p4 convolution, it equals the GGN block from explicit
    Jacobians (:func:`symdisc.curvature.ggn`).

    What is exact: ONE sample on a 1 x 1 grid whose input is constant over the rotations (a lifted
    map; any planar map for the lifting convolution) and a loss that reads ONE group element
    (r = 0). Then all 4 shared (rotation, position) pairs have the same transformed patch a, so
    A = mean a a^T = a a^T, and only r = 0 has a gradient, so the exact block
    sum_k (g_k (x) a)(g_k (x) a)^T = (sum_k g_k g_k^T) (x) a a^T = G (x) A. Reading two group
    elements breaks it (the cross terms g_0 g_1^T are missing in G): checked too."""
    torch.manual_seed(21)
    layer = {"LiftingConv": LiftingConv, "GroupConv": GroupConv}.get(kind, PointwiseGroupConv)(
        2, 3, 3
    )
    first = nn.Identity() if kind == "LiftingConv" else Lift()
    x, y = _data(1, (2, 1, 1), seed=22)
    if loss == "mse":
        y = torch.randn(1, 3, dtype=DTYPE)
    names = ("weight", "bias")
    for rotations, exact_expected in (((0,), True), ((0, 1), False)):
        model = nn.Sequential(
            first,
            layer,
            _ReadOneGroupElement(rotations),
            nn.Tanh(),
            nn.Linear(3 * len(rotations), 3),
        ).to(DTYPE)
        factors = kfac(model, [(x, y)], loss=loss, reduction="sum", modules=["1"])
        assert factors["1"].params == ("1.weight", "1.bias")
        exact = _block(model, x, y, loss, "sum", "1", names)
        close = torch.allclose(factors["1"].to_dense(), exact, rtol=1e-10, atol=1e-12)
        assert close == exact_expected, (rotations, (factors["1"].to_dense() - exact).abs().max())


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_group_fc_and_ffc_one_sample_blocks_equal_exact_ggn(loss):
    """GroupFC (no weight sharing) and GroupFFC with C = C' = 1 (no sharing over channels): every
    block is exact for one sample, the GroupFFC bias (one per output entry) included."""
    torch.manual_seed(23)
    x, y = _data(1, (1, 4, 2, 2), seed=24)
    if loss == "mse":
        y = torch.randn(1, 3, dtype=DTYPE)
    for layer, blocks in (
        (GroupFC(1, 2, 2, out_size=1, bias=True), {"1": ("weight", "bias")}),
        (
            GroupFFC(1, 1, 2, out_size=1, bias=True),
            {"1:0": ("theta1",), "1:1": ("theta2",), "1:2": ("bias",)},
        ),
    ):
        c_flat = layer.out_channels * 4
        model = nn.Sequential(nn.Identity(), layer, nn.Tanh(), nn.Flatten(), nn.Linear(c_flat, 3))
        model = model.to(DTYPE)
        factors = kfac(model, [(x, y)], loss=loss, reduction="sum", modules=["1"])
        assert set(factors) == set(blocks)
        for key, names in blocks.items():
            assert factors[key].params == tuple(f"1.{n}" for n in names)
            exact = _block(model, x, y, loss, "sum", "1", names)
            torch.testing.assert_close(factors[key].to_dense(), exact, rtol=1e-10, atol=1e-12)


def _rotated_manual_patches(xn, kind, s):
    """(4, H W, D) transformed patches of one sample, built by rotating each *patch* (not the
    input): out(r, p) = <w, R^{-r} patch_p> with, for GroupConv, the rotation axis of the patch
    shifted by r first (``(R^r w)(c, s) = rot90(w(c, s), r)`` paired with ``x(c, s + r)``)."""
    if kind == "LiftingConv":
        c, h, w = xn.shape
        patches = _manual_patches(xn, s).reshape(h * w, c, s, s)
        per_r = [patches for _ in range(4)]
    elif kind == "GroupConv":
        c, _, h, w = xn.shape
        patches = _manual_patches(xn.reshape(c * 4, h, w), s).reshape(h * w, c, 4, s, s)
        per_r = [patches[:, :, [(q + r) % 4 for q in range(4)]] for r in range(4)]
    else:  # PointwiseGroupConv
        c, _, h, w = xn.shape
        patches = _manual_patches(xn.reshape(c * 4, h, w), s).reshape(h * w, c, 4, s, s)
        per_r = [patches[:, :, r] for r in range(4)]
    rows = [torch.rot90(p, -r, dims=(-2, -1)).reshape(h * w, -1) for r, p in enumerate(per_r)]
    return torch.stack(rows)


def _probe_jacobian(model, module, xn):
    """Jacobian (K, *module output) of the model output in the module's own output, by adding a
    zero probe to that output in a forward hook."""
    probe_shape = []

    def shape_hook(_, __, out):
        probe_shape.append(out.shape)

    h = module.register_forward_hook(shape_hook)
    model(xn)
    h.remove()

    def f(probe):
        handle = module.register_forward_hook(lambda _, __, out: out + probe)
        try:
            return model(xn)[0]
        finally:
            handle.remove()

    return torch.autograd.functional.jacobian(f, torch.zeros(probe_shape[0], dtype=DTYPE))[:, 0]


def _group_cases():
    """{case: (model, input shape, {name of a layer with a rule: its kind})}."""
    torch.manual_seed(25)

    def net(first, layer, c_flat):
        return nn.Sequential(first, layer, nn.Tanh(), nn.Flatten(), nn.Linear(c_flat, 3)).to(DTYPE)

    summed = GroupPathSum(ffc_path(2, 3, 4, 2), conv_path(2, 3, 4, 2), gconv_path(2, 3, 4, 2))
    return {
        "LiftingConv": (
            net(nn.Identity(), LiftingConv(2, 3, 3), 3 * 4 * 9),
            (2, 3, 3),
            {"1": "LiftingConv"},
        ),
        "GroupConv": (
            net(nn.Identity(), GroupConv(2, 3, 3), 3 * 4 * 9),
            (2, 4, 3, 3),
            {"1": "GroupConv"},
        ),
        "gconv_path-halving": (
            net(nn.Identity(), gconv_path(2, 3, 4, 2), 3 * 4 * 4),
            (2, 4, 4, 4),
            {"1.module": "GroupConv"},
        ),
        "pointwise_gconv_path-halving": (
            net(nn.Identity(), pointwise_gconv_path(2, 3, 4, 2), 3 * 4 * 4),
            (2, 4, 4, 4),
            {"1.module": "PointwiseGroupConv"},
        ),
        "ffc+conv+gconv-halving": (
            net(nn.Identity(), summed, 3 * 4 * 4),
            (2, 4, 4, 4),
            {"1.branches.1.module": "FoldedConv", "1.branches.2.module": "GroupConv"},
        ),
    }


@pytest.mark.parametrize("case", list(_group_cases()))
def test_group_factors_equal_explicitly_rotated_patches(case):
    """N samples: A = mean over the read (rotation, position) pairs of [a; 1][a; 1]^T with a the
    patch rotated by hand (:func:`_rotated_manual_patches`), at the polyphase component that
    polyphase pooling picks from the pre-pool output (of the sum of the pooled paths for a
    GroupPathSum), and G = sum_n sum_t [J_n^T H_n J_n]_(t, t) with J the autograd Jacobian of
    the model output in the layer output (over all pairs t: the discarded ones have J = 0)."""
    model, shape, layers = _group_cases()[case]
    x, y = _data(6, shape, seed=26)
    factors = kfac(model, [(x, y)], loss="cross_entropy", reduction="mean")
    out = model(x).detach()
    H = torch.autograd.functional.hessian(
        lambda o: loss_value(o.reshape(out.shape), y, "cross_entropy", "mean"), out.reshape(-1)
    ).reshape(*out.shape, *out.shape)
    named = dict(model.named_modules())
    path = model[1]
    picks = []
    for name, kind in layers.items():
        module = named[name]
        a_rows, G = [], 0
        for n in range(x.shape[0]):
            xn = x[n]
            if kind == "FoldedConv":
                a = _manual_patches(xn.reshape(-1, *xn.shape[-2:]), 3)[None]  # (1, H W, D)
            else:
                a = _rotated_manual_patches(xn, kind, module.kernel_size)  # (4, H W, D)
            if isinstance(path, (GroupPath, GroupPathSum)):
                with torch.no_grad():
                    branches = [path] if isinstance(path, GroupPath) else list(path.branches)
                    pre = sum(p.module(x[n : n + 1]) for p in branches if p.subsample)
                pos, k = _manual_selection(pre[0].reshape(-1, *pre.shape[-2:]))
                a = a[:, pos]
                picks.append(k)
            a = a.reshape(-1, a.shape[-1])
            a_rows.append(torch.cat([a, torch.ones(a.shape[0], 1, dtype=DTYPE)], 1))
            J = _probe_jacobian(model, module, x[n : n + 1])  # (K, C', [4,] H, W)
            # (K, C', pairs t) for a p4 conv, (K, C' 4, positions t) for the folded CONV
            J = J.flatten(1, 2).flatten(2) if kind == "FoldedConv" else J.flatten(2)
            G = G + torch.einsum("kot,kl,lpt->op", J, H[n, :, n, :], J)
        a_all = torch.cat(a_rows)
        torch.testing.assert_close(
            factors[name].A, a_all.T @ a_all / a_all.shape[0], rtol=1e-10, atol=1e-12
        )
        torch.testing.assert_close(factors[name].G, G, rtol=1e-10, atol=1e-12)
    if picks and getattr(model[0], "subsampling", None) == "polyphase":
        assert len(set(picks)) > 1, picks  # the data exercise more than one component


def _dense_log_det(la, delta):
    """sum over blocks of log det(kron(G, A) + delta I) from the explicit Kronecker products."""
    total = 0.0
    for f in la.curvature.values():
        dense = torch.kron(f.G, f.A)
        sign, logdet = torch.linalg.slogdet(dense + delta * torch.eye(dense.shape[0], dtype=DTYPE))
        assert sign > 0
        total = total + logdet
    return total


def _small_group_net(variant):
    """Lift, two layers of ``LAYERS[variant]`` (4x4 -> 4x4 -> 2x2, halving), rotation pool, head:
    the group variants of :func:`ella.models.neyshabur` at a size whose blocks are small."""
    torch.manual_seed(27)
    return nn.Sequential(
        Lift(),
        LAYERS[variant](LayerSpec(1, 2, 4, 4)),
        nn.ReLU(),
        LAYERS[variant](LayerSpec(2, 2, 4, 2)),
        nn.ReLU(),
        GroupPool(),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2, 3),
    ).to(DTYPE)


@pytest.mark.parametrize("variant", sorted(GROUP_LAYERS))
def test_kron_laplace_fits_group_networks_with_dense_log_det(variant):
    """Every group variant of ``neyshabur`` has a rule for each layer with parameters (building
    the kron Laplace raises otherwise), and the kron Laplace fits; its log-det equals the dense
    log-det of the explicit Kronecker products, and the blocks cover every parameter once.

    The fit runs on ``neyshabur`` itself (alpha = 1, 32 x 32) for "pointwise_gconv"; for the
    other variants its smallest instance has (289 x 289) (x) (16 x 16) to (4096 x 4096) factors
    (seconds to minutes with the dense check), so they fit on the same layer builders in a 4 x 4
    network (:func:`_small_group_net`); ``test_kfac_covers_every_neyshabur_group_network`` (slow)
    runs KFAC on all four full-size networks.
    """
    full = neyshabur(variant, alpha=1, in_channels=1, n_classes=3).to(DTYPE)
    Laplace(full, "classification", "kron")  # raises for a layer with parameters and no rule
    if variant == "pointwise_gconv":
        model, shape = full, (1, 32, 32)
    else:
        model, shape = _small_group_net(variant), (1, 4, 4)
    x, y = _data(2, shape, seed=29)
    la = Laplace(model, "classification", "kron").fit([(x, y)])
    covered = [p for f in la.curvature.values() for p in f.params]
    assert sorted(covered) == sorted(n for n, _ in model.named_parameters())
    delta = torch.tensor(0.5, dtype=DTYPE)
    torch.testing.assert_close(
        la.log_det_posterior_precision(delta), _dense_log_det(la, delta), rtol=1e-9, atol=1e-8
    )
    assert torch.isfinite(la.log_marginal_likelihood(delta))


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(GROUP_LAYERS))
def test_kfac_covers_every_neyshabur_group_network(variant):
    """KFAC on the smallest ``neyshabur`` network of each group variant (alpha = 1, 32 x 32):
    one block per rule term, every parameter in exactly one block, finite symmetric factors with
    a non-negative diagonal (Gram matrices; an eigendecomposition of the (4096 x 4096) F-FC factors
    would take minutes)."""
    torch.manual_seed(30)
    model = neyshabur(variant, alpha=1, in_channels=1, n_classes=3).to(DTYPE)
    x, y = _data(2, (1, 32, 32), seed=31)
    factors = kfac(model, [(x, y)], loss="cross_entropy", reduction="sum")
    covered = [p for f in factors.values() for p in f.params]
    assert sorted(covered) == sorted(n for n, _ in model.named_parameters())
    for f in factors.values():
        for m in (f.A, f.G):
            assert torch.isfinite(m).all() and bool((m.diagonal() >= 0).all())
            torch.testing.assert_close(m, m.T, rtol=1e-12, atol=1e-12)
