"""The Laplace posterior predictive, samples, subsets and saving, against dense float64
references: the exact GGN (symdisc.curvature.reference.dense_ggn) or the explicit Kronecker
products of the KFAC factors, inverted explicitly, and Jacobians of the whole batch by
torch.autograd.functional.jacobian."""

import math

import pytest
import torch
from torch import nn

from ella.invariance import InvariantModel, PointRotation, invariant_laplace
from ella.laplace import Laplace, covered_parameters
from symdisc.curvature import flatten, functional, unflatten
from symdisc.curvature.reference import dense_ggn

DTYPE = torch.float64
SIGMA, TEMP = 0.7, 1.9


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(DTYPE)


def cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    ).to(DTYPE)


SHAPES = {mlp: (3,), cnn: (1, 4, 4)}


def data(likelihood, n, shape, seed=1):
    g = _gen(seed)
    x = torch.randn(n, *shape, generator=g, dtype=DTYPE)
    if likelihood == "classification":
        return x, torch.randint(0, 3, (n,), generator=g)
    return x, torch.randn(n, 3, generator=g, dtype=DTYPE)


def some_deltas(groups, seed=5):
    g = _gen(seed)
    return {k: 0.3 + torch.rand((), generator=g, dtype=DTYPE).item() for k in groups}


def per_param_delta(la, deltas):
    return torch.cat(
        [torch.full((la.numels[n],), deltas[la._group_of[n]], dtype=DTYPE) for n in la.names]
    )


def output_hessians(outputs, likelihood):
    if likelihood == "classification":
        p = outputs.softmax(-1)
        return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    n, c = outputs.shape
    return torch.eye(c, dtype=DTYPE).expand(n, c, c) / SIGMA**2


def dense_precision(la, model, x, deltas):
    """``H / T + diag(delta)`` from the exact dense GGN on the covered weights, or the explicit
    Kronecker blocks (kron) / the GGN's diagonal (diag)."""
    fn, params = functional(model, la.names)
    P = la.n_params
    if la.structure == "kron":
        H = torch.zeros(P, P, dtype=DTYPE)
        starts, s = {}, 0
        for n in la.names:
            starts[n] = s
            s += la.numels[n]
        for f in la.curvature.values():
            idx = torch.cat([torch.arange(starts[p], starts[p] + la.numels[p]) for p in f.params])
            H[idx[:, None], idx[None, :]] = torch.kron(f.G, f.A)[_to_dense_order(f)][
                :, _to_dense_order(f)
            ]
    else:
        H = dense_ggn(fn, params, x, output_hessians(fn(params, x), la.likelihood))
        if la.structure == "diag":
            H = torch.diag(H.diagonal())
    return H / TEMP + torch.diag(per_param_delta(la, deltas))


def _to_dense_order(f):
    d_g, d_a = f.G.shape[0], f.A.shape[0]
    grid = torch.arange(d_g * d_a).reshape(d_g, d_a)
    if not f.bias:
        return grid.reshape(-1)
    return torch.cat([grid[:, :-1].reshape(-1), grid[:, -1]])


def batch_jacobian(la, model, x):
    """(N, C, P) by one jacobian of the whole batch's outputs (cross-terms are zero)."""
    fn, params = functional(model, la.names)
    flat = flatten(params)
    jac = torch.autograd.functional.jacobian(lambda t: fn(unflatten(t, params), x), flat)
    n = x.shape[0]
    return jac[torch.arange(n), :, torch.arange(n)] if jac.ndim == 4 else jac


def reference(la, model, x_fit, x, deltas):
    sigma = torch.linalg.inv(dense_precision(la, model, x_fit, deltas))
    jac = torch.autograd.functional.jacobian(
        lambda t: functional(model, la.names)[0](unflatten(t, functional(model, la.names)[1]), x),
        flatten(functional(model, la.names)[1]),
    )  # (N, C, P)
    return model(x).detach(), torch.einsum("ncp,pq,ndq->ncd", jac, sigma, jac), sigma


def fitted(build, likelihood, structure, n=7, **options):
    model = build()
    x, y = data(likelihood, n, SHAPES[build])
    la = Laplace(model, likelihood, structure, sigma=SIGMA, temperature=TEMP, **options).fit(
        [(x[:4], y[:4]), (x[4:], y[4:])]
    )
    return model, la, x


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
@pytest.mark.parametrize("likelihood", ["classification", "regression"])
@pytest.mark.parametrize("build", [mlp, cnn])
def test_glm_predictive_equals_dense_reference(build, likelihood, structure):
    model, la, x_fit = fitted(build, likelihood, structure)
    x = data(likelihood, 5, SHAPES[build], seed=9)[0]
    deltas = some_deltas(la.groups)
    f, cov, _ = reference(la, model, x_fit, x, deltas)
    got = la.functional_variance(x, deltas)
    assert got.shape == (5, 3, 3)
    assert (got - cov).abs().max() < 1e-12 * max(1.0, cov.abs().max())
    var = cov.diagonal(dim1=-2, dim2=-1)
    if likelihood == "regression":
        mean, variance = la.predictive(x, deltas)
        assert (mean - f).abs().max() < 1e-13
        assert (variance - (var + SIGMA**2)).abs().max() < 1e-12
    else:
        probs = la.predictive(x, deltas)
        expected = torch.softmax(f / torch.sqrt(1 + math.pi / 8 * var), -1)
        assert (probs - expected).abs().max() < 1e-13
        # the Monte-Carlo link: mean softmax of draws from N(f, cov), by a plain Cholesky
        mc = la.predictive(x, deltas, link="mc", n_samples=20000, generator=_gen(3))
        draws = f + torch.einsum(
            "ncd,snd->snc",
            torch.linalg.cholesky(cov + 1e-12 * torch.eye(3)),
            torch.randn(4000, 5, 3, generator=_gen(4), dtype=DTYPE),
        )
        slow = torch.softmax(draws, -1).mean(0)
        # both are MC means of values in [0, 1]: standard error below 1/(2 sqrt(4000))
        assert (mc - slow).abs().max() < 5 * 0.5 / math.sqrt(4000)
        assert torch.allclose(mc.sum(-1), torch.ones(5, dtype=DTYPE))


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_sample_covariance_converges_to_the_posterior_covariance(structure):
    model, la, x_fit = fitted(mlp, "regression", structure)
    deltas = some_deltas(la.groups)
    sigma = torch.linalg.inv(dense_precision(la, model, x_fit, deltas))
    theta = flatten(functional(model, la.names)[1])
    errors = []
    for n in (500, 20000):
        s = la.sample(n, deltas, generator=_gen(n))
        assert s.shape == (n, la.n_params)
        emp = torch.cov(s.T)
        # standard error of a covariance entry: sqrt((S_ii S_jj + S_ij^2) / n)
        d = sigma.diagonal()
        se = torch.sqrt((d[:, None] * d[None, :] + sigma**2) / n)
        assert ((emp - sigma).abs() / se).max() < 6.0
        assert ((s.mean(0) - theta).abs() / (d / n).sqrt()).max() < 6.0
        errors.append((emp - sigma).abs().max())
    assert errors[1] < errors[0] / 3


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_network_mc_converges_to_glm_on_a_linear_model(structure):
    """For a linear model the linearisation is exact: the MC predictive's mean and variance
    converge to the GLM ones."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2)).to(DTYPE)
    x, y = data("regression", 30, (3,))
    y = y[:, :2]
    la = Laplace(model, "regression", structure, sigma=SIGMA, temperature=TEMP).fit([(x, y)])
    xt = torch.randn(6, 3, generator=_gen(2), dtype=DTYPE)
    mean, var = la.predictive(xt, 0.5)
    n = 20000
    mc_mean, mc_var = la.predictive(xt, 0.5, method="mc", n_samples=n, generator=_gen(7))
    f_var = var - SIGMA**2
    assert ((mc_mean - mean).abs() / (f_var / n).sqrt()).max() < 5.0
    # the sample variance of a Gaussian has standard error var sqrt(2 / (n - 1))
    assert ((mc_var - var).abs() / (f_var * math.sqrt(2 / (n - 1)))).max() < 5.0
    # classification on the same linear model: MC over the network = MC over the GLM
    yc = torch.randint(0, 2, (30,), generator=_gen(3))
    lc = Laplace(model, "classification", structure).fit([(x, yc)])
    net = lc.predictive(xt, 0.5, method="mc", n_samples=n, generator=_gen(8))
    glm = lc.predictive(xt, 0.5, link="mc", n_samples=n, generator=_gen(9))
    assert (net - glm).abs().max() < 5 * 0.5 * math.sqrt(2 / n)


def test_predictive_is_differentiable_in_the_prior_precision():
    _, la, _ = fitted(mlp, "classification", "kron")
    x = data("classification", 4, (3,), seed=9)[0]
    log_delta = torch.zeros((), dtype=DTYPE, requires_grad=True)
    probs = la.predictive(x, log_delta.exp())
    probs[:, 0].sum().backward()
    assert log_delta.grad is not None and torch.isfinite(log_delta.grad)


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
@pytest.mark.parametrize("subset", ["last_layer", ["0"]])
@pytest.mark.parametrize("build", [mlp, cnn])
def test_subset_predictive_equals_dense_reference_on_the_covered_weights(build, subset, structure):
    model, la, x_fit = fitted(build, "classification", structure, subset=subset)
    last = "3" if build is cnn else "2"
    module = last if subset == "last_layer" else "0"
    assert la.names == [f"{module}.weight", f"{module}.bias"]
    assert list(la.groups) == [module]
    x = data("classification", 5, SHAPES[build], seed=9)[0]
    deltas = some_deltas(la.groups)
    _, cov, _ = reference(la, model, x_fit, x, deltas)
    assert (la.functional_variance(x, deltas) - cov).abs().max() < 1e-12
    s = la.sample(3, deltas, generator=_gen(0))
    assert s.shape == (3, la.n_params)


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
@pytest.mark.parametrize("likelihood", ["classification", "regression"])
def test_last_layer_equals_a_laplace_of_the_last_layer_on_frozen_features(likelihood, structure):
    model, la, x_fit = fitted(cnn, likelihood, structure, subset="last_layer")
    y = data(likelihood, 7, SHAPES[cnn])[1]
    features = model[:3](x_fit).detach()
    head = model[3]
    alone = Laplace(head, likelihood, structure, sigma=SIGMA, temperature=TEMP).fit([(features, y)])
    deltas = {"3": 0.8}
    alone_deltas = {next(iter(alone.groups)): 0.8}
    lml = la.log_marginal_likelihood(deltas)
    assert abs(lml - alone.log_marginal_likelihood(alone_deltas)) < 1e-10 * abs(lml)
    x = data(likelihood, 5, SHAPES[cnn], seed=9)[0]
    got = la.functional_variance(x, deltas)
    expected = alone.functional_variance(model[:3](x).detach(), alone_deltas)
    assert (got - expected).abs().max() < 1e-12
    # and the brute-force dense covariance of the head's GGN on the features
    fn, params = functional(head)
    jac = torch.autograd.functional.jacobian(
        lambda t: fn(unflatten(t, params), model[:3](x).detach()), flatten(params)
    )
    feats_out = fn(params, features)
    H = dense_ggn(fn, params, features, output_hessians(feats_out, likelihood))
    if structure == "diag":
        H = torch.diag(H.diagonal())
    if structure != "kron":
        sigma = torch.linalg.inv(H / TEMP + 0.8 * torch.eye(H.shape[0], dtype=DTYPE))
        dense = torch.einsum("ncp,pq,ndq->ncd", jac, sigma, jac)
        assert (got - dense).abs().max() < 1e-12


def test_subset_errors_name_subset_and_the_valid_modules():
    model = mlp()
    with pytest.raises(ValueError, match=r"`subset`.*\['', '0', '2'\]"):
        Laplace(model, "classification", "full", subset=["3"])
    # a prefix of a module name is not that module
    model = nn.Sequential()
    model.add_module("head", nn.Linear(3, 2).to(DTYPE))
    with pytest.raises(ValueError, match=r"`subset`.*'hea'"):
        Laplace(model, "classification", "kron", subset=["hea"])
    with pytest.raises(ValueError, match="`subset`"):
        Laplace(model, "classification", "full", subset="last")
    with pytest.raises(TypeError, match="`subset`"):
        Laplace(model, "classification", "full", subset=[0])
    with pytest.raises(ValueError, match="hold no posterior parameter"):
        Laplace(mlp(), "classification", "full", subset=["1"])  # the Tanh
    assert covered_parameters(model, ["head"])[0] == ["head.weight", "head.bias"]
    assert covered_parameters(model, "all") == (["head.weight", "head.bias"], None)


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
@pytest.mark.parametrize("subset", ["all", "last_layer"])
def test_state_dict_round_trip_through_a_file(structure, subset, tmp_path):
    model, la, _ = fitted(cnn, "classification", structure, subset=subset, per_tensor=True)
    x = data("classification", 4, SHAPES[cnn], seed=9)[0]
    deltas = some_deltas(la.groups)
    torch.save(la.state_dict(), tmp_path / "la.pt")
    fresh = cnn()  # same seed: the same weights
    fresh.load_state_dict(model.state_dict())
    back = Laplace(
        fresh,
        "classification",
        structure,
        sigma=SIGMA,
        temperature=TEMP,
        subset=subset,
        per_tensor=True,
    )
    assert back.load_state_dict(torch.load(tmp_path / "la.pt")) is back
    assert torch.equal(back.predictive(x, deltas), la.predictive(x, deltas))
    assert torch.equal(back.functional_variance(x, deltas), la.functional_variance(x, deltas))
    assert back.log_marginal_likelihood(deltas) == la.log_marginal_likelihood(deltas)
    g1, g2 = _gen(1), _gen(1)
    assert torch.equal(back.sample(2, deltas, g1), la.sample(2, deltas, g2))


def test_load_state_dict_into_another_model_names_what_differs():
    model, la, _ = fitted(mlp, "classification", "kron")
    state = la.state_dict()
    torch.manual_seed(0)
    wider = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).to(DTYPE)
    with pytest.raises(
        ValueError, match=r"different shapes.*0\.weight: saved \(4, 3\), model \(5, 3\)"
    ):
        Laplace(wider, "classification", "kron").load_state_dict(state)
    renamed = nn.Sequential()
    renamed.add_module("a", nn.Linear(3, 4).to(DTYPE))
    renamed.add_module("b", nn.Linear(4, 3).to(DTYPE))
    with pytest.raises(ValueError, match=r"missing from the model \['0.weight'"):
        Laplace(renamed, "classification", "kron").load_state_dict(state)
    with pytest.raises(ValueError, match=r"other options: temperature: saved 1.9, here 1.0"):
        Laplace(model, "classification", "kron").load_state_dict(state)
    with pytest.raises(ValueError, match=r"other parameter values.*'0.weight'"):
        Laplace(mlp(seed=3), "classification", "kron", temperature=TEMP).load_state_dict(state)
    with pytest.raises(ValueError, match=r"other options: structure: saved 'kron', here 'full'"):
        Laplace(model, "classification", "full", temperature=TEMP).load_state_dict(state)
    with pytest.raises(ValueError, match=r"covered parameters"):
        Laplace(
            model, "classification", "kron", temperature=TEMP, subset="last_layer"
        ).load_state_dict(state)
    with pytest.raises(TypeError, match="`state`"):
        Laplace(model, "classification", "kron").load_state_dict({"theta": 1})


def test_predicting_before_fit_and_inputs_of_another_shape_are_named_errors():
    model = mlp()
    la = Laplace(model, "classification", "full")
    x = torch.zeros(2, 3, dtype=DTYPE)
    for call in (
        lambda: la.predictive(x, 1.0),
        lambda: la.functional_variance(x, 1.0),
        lambda: la.sample(2, 1.0),
        la.state_dict,
    ):
        with pytest.raises(RuntimeError, match="fit"):
            call()
    la.fit([data("classification", 4, (3,))])
    with pytest.raises(ValueError, match=r"`x` must have shape \(N, 3\).*\(2, 4\)"):
        la.predictive(torch.zeros(2, 4, dtype=DTYPE), 1.0)
    with pytest.raises(ValueError, match="`x`"):
        la.functional_variance(torch.zeros(0, 3, dtype=DTYPE), 1.0)
    with pytest.raises(TypeError, match="`x`"):
        la.predictive([[0.0, 0.0, 0.0]], 1.0)
    with pytest.raises(ValueError, match="`method`"):
        la.predictive(x, 1.0, method="laplace")
    with pytest.raises(ValueError, match="`link`"):
        la.predictive(x, 1.0, link="bernoulli")
    with pytest.raises(ValueError, match="`n_samples`"):
        la.predictive(x, 1.0, n_samples=0)


@pytest.mark.parametrize("structure", ["full", "kron"])
def test_invariant_model_predictive_uses_the_draw_averaged_jacobians(structure):
    """Paper 001: the Laplace of an InvariantModel is on its DrawAverage; on augmented inputs
    (B, S, ...) its functional variance is J_bar Sigma J_bar^T with J_bar the mean over the S
    draws of the network's Jacobians."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3)).to(DTYPE)
    model = InvariantModel(net, PointRotation([1.0], dtype=DTYPE, learnable=False), 4)
    x, y = data("classification", 6, (2,))
    eps = model.augmentation.sample_eps(6, 4, _gen(2))
    la = invariant_laplace(model, [(x, eps, y)], "classification", structure, temperature=TEMP)
    xt = model.augmentation(data("classification", 3, (2,), seed=9)[0], 4, _gen(3))  # (3, 4, 2)
    deltas = some_deltas(la.groups)
    sigma = torch.linalg.inv(
        dense_precision(la, la.model, model.augmentation.apply(x, eps), deltas)
    )
    fn, params = functional(net)
    jac = torch.autograd.functional.jacobian(
        lambda t: fn(unflatten(t, params), xt.flatten(0, 1)), flatten(params)
    )  # (B S, C, P): one row per draw
    j_bar = jac.unflatten(0, (3, 4)).mean(1)
    expected = torch.einsum("ncp,pq,ndq->ncd", j_bar, sigma, j_bar)
    assert (la.functional_variance(xt, deltas) - expected).abs().max() < 1e-12
    probs = la.predictive(xt, deltas)
    f = model.averaged()(xt)
    var = expected.diagonal(dim1=-2, dim2=-1)
    assert (probs - torch.softmax(f / torch.sqrt(1 + math.pi / 8 * var), -1)).abs().max() < 1e-13


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_predictive_on_cuda_equals_cpu(structure):
    model, la, x_fit = fitted(cnn, "classification", structure)
    y = data("classification", 7, SHAPES[cnn])[1]
    gpu = Laplace(model.cuda(), "classification", structure, sigma=SIGMA, temperature=TEMP)
    gpu.fit([(x_fit, y)])
    x = data("classification", 5, SHAPES[cnn], seed=9)[0]
    deltas = some_deltas(la.groups)
    model.cpu()
    cpu_fv, cpu_probs = la.functional_variance(x, deltas), la.predictive(x, deltas)
    model.cuda()
    assert (gpu.functional_variance(x, deltas).cpu() - cpu_fv).abs().max() < 1e-10
    assert (gpu.predictive(x, deltas).cpu() - cpu_probs).abs().max() < 1e-10
    mc = gpu.predictive(x, deltas, method="mc", n_samples=8, generator=_gen(0))
    assert mc.device.type == "cuda"
    s_gpu = gpu.sample(3, deltas, _gen(1)).cpu()
    model.cpu()
    assert (s_gpu - la.sample(3, deltas, _gen(1))).abs().max() < 1e-10


def test_full_refactors_after_a_refit_and_for_new_precisions():
    model, la, x_fit = fitted(mlp, "regression", "full")
    x = data("regression", 3, (3,), seed=9)[0]
    first = la.functional_variance(x, 0.5)
    assert torch.equal(la.functional_variance(x, 0.5), first)
    assert not torch.allclose(la.functional_variance(x, 2.0), first)
    y = data("regression", 7, (3,))[1]
    la.fit([(x_fit[:3], y[:3])])  # less data: a wider posterior
    _, cov, _ = reference(la, model, x_fit[:3], x, {g: 0.5 for g in la.groups})
    assert (la.functional_variance(x, 0.5) - cov).abs().max() < 1e-12
