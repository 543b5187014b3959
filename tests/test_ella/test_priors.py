"""Priors where paper 000 puts them (section 3.2, appendix C.2): ``prior_on`` of S-FC / S-CONV
decides the prior groups and the Laplace posterior (anchors u, lengthscales omega with learnable
positions z, or the induced weights theta), every KFAC block of the sparse layers equals the
exact GGN block ``J^T H J`` (torch.func Jacobians of the network output, H the loss's output
Hessian) where KFAC is exact, the kron marginal likelihood equals a dense reference there, and a
model with the prior on the lengthscales trains with ``train_marglik(structure="kron")``."""

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import ella  # noqa: F401  (registers the rules)
from ella.laplace import Laplace, map_parameters, posterior_parameters, prior_groups
from ella.layers import SCONV, SFC
from ella.layers.relaxed import orthonormal_basis, rbf_basis, rbf_basis_derivatives
from ella.marglik import MarglikConfig, train_marglik
from symdisc.curvature import kfac, loss_value

DTYPE = torch.float64
TARGETS = ["anchors", "lengthscales", "weights"]


def _data(n, shape, seed=1, classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=DTYPE)
    return x, torch.randint(0, classes, (n,), generator=g)


def _perturb(layer, seed):
    """Move omega (and z) off their regular-grid values so that no derivative vanishes by
    symmetry."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith(("omega", "z")):
                p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


def _model(layer, c_flat, seed=0, head=True):
    torch.manual_seed(seed)
    parts = [layer, nn.Tanh(), nn.Flatten()] + ([nn.Linear(c_flat, 3)] if head else [])
    return _perturb(nn.Sequential(*parts).to(DTYPE), seed)


def _exact_ggn(model, x, y, names, loss="cross_entropy"):
    """``sum_n J_n^T H_n J_n`` over the parameters ``names`` (flattened in that order), with
    J from ``torch.func.jacrev`` of the network output and H the summed loss's output Hessian."""
    named = dict(model.named_parameters())
    point = {n: named[n].detach() for n in names}

    def out(p):
        return functional_call(model, p, (x,))

    f = out(point).detach()
    jac = jacrev(out)(point)  # {name: (N, C, *shape)}
    J = torch.cat([jac[n].reshape(*f.shape, -1) for n in names], dim=-1)  # (N, C, P)
    H = torch.autograd.functional.hessian(
        lambda o: loss_value(o.reshape(f.shape), y, loss, "sum"), f.reshape(-1)
    ).reshape(*f.shape, *f.shape)
    return torch.einsum("ncp,ncmd,mdq->pq", J, H, J)


def _check_blocks(model, x, y, expected, loss="cross_entropy"):
    """Every block of layer "0" against the exact GGN block of its parameters."""
    factors = kfac(model, [(x, y)], loss=loss, reduction="sum")
    blocks = {k: f for k, f in factors.items() if k == "0" or k.startswith("0:")}
    assert sorted(f.params for f in blocks.values()) == sorted(expected)
    for f in blocks.values():
        exact = _exact_ggn(model, x, y, list(f.params), loss)
        assert exact.abs().max() > 1e-8  # a non-trivial block
        torch.testing.assert_close(f.to_dense(), exact, rtol=1e-9, atol=1e-12)


# -- the layers' prior parameters and the prior groups ------------------------------------


@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("target", TARGETS)
def test_prior_groups_and_posterior_follow_prior_on(target, learn):
    model = nn.Sequential(
        SFC(2, 3, 4, 2, prior_on=target, learn_positions=learn),
        SCONV(3, 2, 2, 2, prior_on=target, learn_positions=learn),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    z1, z2, z = (["0.z1"], ["0.z2"], ["1.z"]) if learn else ([], [], [])
    if target == "lengthscales":
        fc = [*z1, "0.omega1", *z2, "0.omega2"]
        conv = [*z, "1.omega"]
        outside = ["0.u1", "0.u2", "0.bias", "1.u", "1.bias"]
    else:
        fc, conv = ["0.u1", "0.u2", "0.bias"], ["1.u", "1.bias"]
        outside = [*z1, "0.omega1", *z2, "0.omega2", *z, "1.omega"]
    groups = prior_groups(model)
    assert groups == {"0:fc": fc, "1:conv": conv, "3": ["3.weight", "3.bias"]}
    assert map_parameters(model) == outside
    assert posterior_parameters(model) == fc + conv + ["3.weight", "3.bias"]
    # a frozen parameter is in neither
    model[1].omega.requires_grad_(False)
    assert "1.omega" not in posterior_parameters(model) + map_parameters(model)
    # per_tensor groups split the same posterior
    per = prior_groups(model, per_tensor=True)
    assert [n for names in per.values() for n in names] == posterior_parameters(model)


def test_posterior_needs_a_parameter():
    model = nn.Sequential(SCONV(1, 1, 2, 2, prior_on="lengthscales"))
    model[0].omega.requires_grad_(False)
    with pytest.raises(ValueError, match="prior"):
        prior_groups(model)
    with pytest.raises(TypeError, match="model"):
        posterior_parameters("model")


# -- the bases --------------------------------------------------------------------------------


def test_rbf_basis_derivatives_equal_autograd():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(7, 2, generator=g, dtype=DTYPE)
    anchors = torch.randn(3, 2, generator=g, dtype=DTYPE)
    omega = torch.randn(3, generator=g, dtype=DTYPE)
    d_omega, d_anchors = rbf_basis_derivatives(points, anchors, omega)
    jw = torch.autograd.functional.jacobian(lambda w: rbf_basis(points, anchors, w), omega)
    jz = torch.autograd.functional.jacobian(lambda a: rbf_basis(points, a, omega), anchors)
    m = torch.arange(3)
    torch.testing.assert_close(d_omega, jw[m, :, m])  # row j depends on omega_j only
    torch.testing.assert_close(d_anchors, jz[m, :, m].transpose(1, 2))
    off = jw.clone()
    off[m, :, m] = 0
    assert off.abs().max() == 0


def test_prior_on_weights_is_the_isotropic_prior_on_the_induced_weights():
    """u in the orthonormal basis: ||theta||^2 = ||u||^2, and the same functions as with phi."""
    torch.manual_seed(3)
    sconv = _perturb(SCONV(2, 3, 4, 4, prior_on="weights").to(DTYPE), 3)
    torch.testing.assert_close(sconv.filter().pow(2).sum(), sconv.u.pow(2).sum())
    psi = sconv.basis()
    torch.testing.assert_close(psi @ psi.T, torch.eye(psi.shape[0], dtype=DTYPE))
    sfc = _perturb(SFC(2, 3, 4, 2, prior_on="weights").to(DTYPE), 4)
    theta1, theta2 = sfc.factors()
    torch.testing.assert_close(theta1.pow(2).sum(), sfc.u1.pow(2).sum())
    torch.testing.assert_close(theta2.pow(2).sum(), sfc.u2.pow(2).sum())
    # the anchors layer with u = L^{-T} u_psi computes the same map
    plain = SCONV(2, 3, 4, 4, prior_on="anchors").to(DTYPE)
    plain.load_state_dict(sconv.state_dict())
    phi = plain.basis()
    chol = torch.linalg.cholesky(phi @ phi.T)
    with torch.no_grad():
        plain.u.copy_(
            torch.linalg.solve_triangular(chol.T, sconv.u.unsqueeze(-1), upper=True)[..., 0]
        )
    x = _data(2, (2, 4, 4))[0]
    torch.testing.assert_close(plain(x), sconv(x))
    torch.testing.assert_close(orthonormal_basis(phi), psi)


# -- KFAC blocks against the exact GGN blocks ----------------------------------------------


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("target", ["anchors", "weights"])
def test_sconv_u_block_exact_for_one_sample_and_position(target, loss):
    model = _model(SCONV(2, 3, 2, 1, prior_on=target, learn_positions=True), 3, seed=5)
    x, y = _data(1, (2, 2, 2), seed=6)
    if loss == "mse":
        y = torch.randn(1, 3, dtype=DTYPE)
    _check_blocks(model, x, y, [("0.u", "0.bias")], loss)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("target", ["anchors", "weights"])
def test_sfc_u_blocks_exact_for_one_sample_and_channel(target, loss):
    model = _model(SFC(1, 1, 4, 2, prior_on=target, learn_positions=True), 4, seed=7)
    x, y = _data(1, (1, 4, 4), seed=8)
    if loss == "mse":
        y = torch.randn(1, 3, dtype=DTYPE)
    _check_blocks(model, x, y, [("0.u1",), ("0.u2",), ("0.bias",)], loss)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize(
    "size", [(4, 4), (4, 2)], ids=["same", "halving"]
)  # halving: polyphase-selected positions
def test_sconv_lengthscale_blocks_exact(size, learn, n):
    """The omega and z blocks are the exact GGN blocks for any number of samples."""
    layer = SCONV(2, 3, *size, prior_on="lengthscales", learn_positions=learn)
    model = _model(layer, 3 * size[1] ** 2, seed=9)
    x, y = _data(n, (2, size[0], size[0]), seed=10)
    expected = [("0.omega",)] + ([("0.z",)] if learn else [])
    _check_blocks(model, x, y, expected)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("learn", [False, True])
def test_sfc_lengthscale_blocks_exact(learn, loss):
    model = _model(SFC(2, 3, 4, 2, prior_on="lengthscales", learn_positions=learn), 12, seed=11)
    x, y = _data(3, (2, 4, 4), seed=12)
    if loss == "mse":
        y = torch.randn(3, 3, dtype=DTYPE)
    expected = [("0.omega1",), ("0.omega2",)]
    if learn:
        expected += [("0.z1",), ("0.z2",)]
    _check_blocks(model, x, y, expected, loss)


# -- the kron marginal likelihood against a dense reference ---------------------------------


def _dense_log_marglik(model, x, y, delta):
    """``log p(D | theta*) - delta/2 ||theta*||^2 + P/2 log delta - 1/2 log det(H + delta I)``
    over the posterior parameters, H from :func:`_exact_ggn` (one prior group)."""
    names = posterior_parameters(model)
    named = dict(model.named_parameters())
    H = _exact_ggn(model, x, y, names)
    p = H.shape[0]
    sq = sum(named[n].detach().pow(2).sum() for n in names)
    log_lik = -loss_value(model(x).detach(), y, "cross_entropy", "sum")
    logdet = torch.logdet(H + delta * torch.eye(p, dtype=DTYPE))
    return log_lik - 0.5 * delta * sq + 0.5 * p * math.log(delta) - 0.5 * logdet


@pytest.mark.parametrize(
    "case",
    ["sconv-anchors", "sconv-weights", "sconv-lengthscales", "sfc-lengthscales"],
)
def test_kron_log_marglik_equals_dense_reference_where_kfac_is_exact(case):
    """One posterior block, no head: anchors / weights on one sample and one output position;
    lengthscales on several samples (its block is exact for any data)."""
    kind, target = case.split("-")
    if kind == "sconv" and target != "lengthscales":
        layer, shape, n = SCONV(2, 3, 2, 1, prior_on=target), (2, 2, 2), 1
    elif kind == "sconv":
        layer, shape, n = SCONV(2, 3, 4, 2, prior_on=target), (2, 4, 4), 4
    else:
        layer, shape, n = SFC(2, 2, 4, 2, prior_on=target), (2, 4, 4), 4
    model = _model(layer, 0, seed=13, head=False)
    if kind == "sfc":
        model[0].omega2.requires_grad_(False)  # one block: omega1
    classes = model(torch.zeros(1, *shape, dtype=DTYPE)).shape[1]
    x, y = _data(n, shape, seed=14, classes=classes)
    la = Laplace(model, "classification", "kron").fit([(x, y)])
    assert len(la.curvature) == 1 and len(la.groups) == 1
    delta = torch.tensor(0.7, dtype=DTYPE)
    expected = _dense_log_marglik(model, x, y, 0.7)
    torch.testing.assert_close(la.log_marginal_likelihood(delta), expected, rtol=1e-9, atol=1e-9)


def test_kron_accepts_learnable_lengthscales_and_positions():
    torch.manual_seed(15)
    model = nn.Sequential(
        SFC(1, 2, 4, 4, prior_on="lengthscales", learn_positions=True),
        nn.Tanh(),
        SCONV(2, 2, 4, 2, prior_on="lengthscales", learn_positions=True),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).to(DTYPE)
    x, y = _data(5, (1, 4, 4), seed=16)
    la = Laplace(model, "classification", "kron").fit([(x, y)])
    assert la.names == posterior_parameters(model)
    assert set(la.groups) == {"0:fc", "2:conv", "4"}
    assert la.group_sizes["0:fc"] == 2 * (8 + 8 * 2)  # omega1, omega2 (8 each), z1, z2
    assert math.isfinite(float(la.log_marginal_likelihood({"0:fc": 2.0, "2:conv": 1.0, "4": 1.0})))


def test_train_marglik_with_prior_on_lengthscales():
    torch.set_num_threads(1)
    torch.manual_seed(17)
    model = nn.Sequential(
        SCONV(1, 2, 4, 2, prior_on="lengthscales", learn_positions=True),
        nn.Tanh(),
        SFC(2, 2, 2, 2, prior_on="lengthscales"),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    x = torch.randn(24, 1, 4, 4)
    y = torch.randint(0, 3, (24,))
    u_before = model[0].u.detach().clone()
    config = MarglikConfig(
        epochs=3, batch_size=8, burn_in=1, marglik_every=1, n_hyper_steps=2, lr=0.01
    )
    result = train_marglik(model, (x, y), config)
    assert set(result.precisions) == {"0:conv", "2:fc", "4"}
    assert result.best_neg_log_marglik is not None and math.isfinite(result.best_neg_log_marglik)
    assert sum("neg_log_marglik" in r for r in result.history) == 2
    assert not torch.equal(model[0].u.detach(), u_before)  # the point estimates train too


def test_share_prior_puts_every_parameter_of_a_module_in_one_group():
    from ella.laplace import Laplace, prior_groups, share_prior
    from ella.layers import FC

    net = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3))
    assert len(prior_groups(net)) == 2  # one per nn.Linear by default
    model = nn.Sequential(share_prior(net), nn.Linear(3, 2))
    groups = prior_groups(model)
    assert groups == {
        "0:shared": ["0.0.weight", "0.0.bias", "0.2.weight", "0.2.bias"],
        "1": ["1.weight", "1.bias"],
    }
    la = Laplace(share_prior(nn.Linear(2, 2), "all"), "classification", "kron")
    assert la.groups == {"all": ["weight", "bias"]}
    with pytest.raises(ValueError, match="tag their own"):
        share_prior(nn.Sequential(FC(1, 1, 2, 2), nn.Tanh()))
