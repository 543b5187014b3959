"""ella.laplace against brute-force formulas from independently built dense GGNs (float64)."""

import math

import pytest
import torch
from torch import nn

import ella.laplace.ggn as ggn_module
import ella.laplace.kron as kron_module
from conftest import DTYPE
from ella.laplace import (
    ROOT_GROUP,
    DiagLaplace,
    FullLaplace,
    KronLaplace,
    Laplace,
    layer_paths,
    optimize_prior_precision,
    prior_groups,
)
from ella.layers import CONV, FC, PathSum
from symdisc.curvature import kfac
from symdisc.runtime import NonFiniteLossError

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


def relaxed(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        PathSum(FC(1, 2, 4, 4), CONV(1, 2, 4, 4)), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3)
    ).to(DTYPE)


def batch(likelihood, n, shape, seed=1):
    g = _gen(seed)
    x = torch.randn(n, *shape, generator=g, dtype=DTYPE)
    if likelihood == "classification":
        return x, torch.randint(0, 3, (n,), generator=g)
    return x, torch.randn(n, 3, generator=g, dtype=DTYPE)


def shape_of(model):
    return (1, 4, 4) if isinstance(model[0], (nn.Conv2d, PathSum)) else (3,)


# -- brute force ---------------------------------------------------------------------------


def theta(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def nll(outputs, y, likelihood, sigma):
    """Negative log-likelihood, normalisers included, written without ella or symdisc."""
    if likelihood == "classification":
        return -torch.log_softmax(outputs, -1).gather(1, y[:, None]).sum()
    return -torch.distributions.Normal(outputs, sigma).log_prob(y).sum()


def brute(model, data, likelihood, sigma):
    """(log-likelihood, dense GGN (P, P), flat theta*) from autograd.functional jacobian/hessian."""
    params = theta(model)
    shapes = {n: p.shape for n, p in params.items()}
    flat = torch.cat([p.reshape(-1) for p in params.values()])

    def f(vec, x):
        out, start = {}, 0
        for n, s in shapes.items():
            k = math.prod(s)
            out[n] = vec[start : start + k].reshape(s)
            start += k
        return torch.func.functional_call(model, out, (x,))

    ll, G = 0.0, 0.0
    for x, y in data:
        outputs = f(flat, x).detach()
        ll = ll - nll(outputs, y, likelihood, sigma)
        J = torch.autograd.functional.jacobian(lambda v: f(v, x).reshape(-1), flat)  # (NC, P)
        H = torch.autograd.functional.hessian(
            lambda o: nll(o.reshape(outputs.shape), y, likelihood, sigma), outputs.reshape(-1)
        )
        G = G + J.T @ H @ J
    return ll, G, flat


def delta_vector(model, groups, deltas):
    where = {p: g for g, ns in groups.items() for p in ns}
    return torch.cat([deltas[where[n]].expand(p.numel()) for n, p in model.named_parameters()])


def brute_marglik(ll, logdet, flat, dvec, T):
    """log p(D|theta*)/T + log N(theta*; 0, diag(1/delta)) + P/2 log(2 pi) - 1/2 log det."""
    prior = torch.distributions.Normal(torch.zeros_like(flat), dvec.rsqrt()).log_prob(flat).sum()
    return ll / T + prior + 0.5 * flat.numel() * math.log(2 * math.pi) - 0.5 * logdet


def some_deltas(groups, seed=5):
    g = _gen(seed)
    return {k: 0.3 + torch.rand((), generator=g, dtype=DTYPE) * 2 for k in groups}


def assert_precision_gradient_matches_finite_differences(la):
    """The gradient of ``la``'s log marginal likelihood in every group's precision against a
    central difference in that precision alone."""
    deltas = {k: v.clone().requires_grad_(True) for k, v in some_deltas(la.groups).items()}
    grads = torch.autograd.grad(la.log_marginal_likelihood(deltas), list(deltas.values()))
    for (k, d), grad in zip(deltas.items(), grads):
        h = 1e-5 * d.item()
        up = {j: (v.detach() + h if j == k else v.detach()) for j, v in deltas.items()}
        down = {j: (v.detach() - h if j == k else v.detach()) for j, v in deltas.items()}
        fd = (la.log_marginal_likelihood(up) - la.log_marginal_likelihood(down)) / (2 * h)
        torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-9)


# -- values --------------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", ["classification", "regression"])
@pytest.mark.parametrize("build", [mlp, cnn])
def test_full_and_diag_equal_brute_force(build, likelihood):
    model = build()
    data = [batch(likelihood, 3, shape_of(model), 1), batch(likelihood, 2, shape_of(model), 2)]
    ll, G, flat = brute(model, data, likelihood, SIGMA)
    for structure in ("full", "diag"):
        la = Laplace(model, likelihood, structure, sigma=SIGMA, temperature=TEMP).fit(data)
        deltas = some_deltas(la.groups)
        dvec = delta_vector(model, la.groups, deltas)
        if structure == "full":
            torch.testing.assert_close(la.curvature, G, rtol=1e-9, atol=1e-11)
            logdet = torch.logdet(G / TEMP + torch.diag(dvec))
        else:
            torch.testing.assert_close(la.curvature, G.diagonal(), rtol=1e-9, atol=1e-11)
            logdet = torch.log(G.diagonal() / TEMP + dvec).sum()
        torch.testing.assert_close(la.log_likelihood, ll, rtol=1e-12, atol=1e-12)
        assert la.n_params == flat.numel()
        expected = brute_marglik(ll, logdet, flat, dvec, TEMP)
        got = la.log_marginal_likelihood(deltas)
        assert got.ndim == 0
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def _dense_kron(la, deltas):
    blocks, dvec = [], []
    for key, f in la.curvature.items():
        blocks.append(torch.kron(f.G, f.A))
        dvec.append(deltas[la.block_groups[key]].expand(blocks[-1].shape[0]))
    return torch.block_diag(*blocks), torch.cat(dvec)


@pytest.mark.parametrize("likelihood", ["classification", "regression"])
@pytest.mark.parametrize("build", [mlp, cnn])
def test_kron_log_det_equals_dense_kron(build, likelihood):
    model = build()
    data = [batch(likelihood, 4, shape_of(model), 3)]
    la = Laplace(model, likelihood, "kron", sigma=SIGMA, temperature=TEMP).fit(data)
    deltas = some_deltas(la.groups)
    K, dvec = _dense_kron(la, deltas)
    expected = torch.logdet(K / TEMP + torch.diag(dvec))
    torch.testing.assert_close(
        la.log_det_posterior_precision(deltas), expected, rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize("likelihood", ["classification", "regression"])
def test_kron_equals_block_diagonal_full_for_one_sample(likelihood):
    model = mlp(2)
    data = [batch(likelihood, 1, (3,), 4)]
    ll, G, flat = brute(model, data, likelihood, SIGMA)
    la = Laplace(model, likelihood, "kron", sigma=SIGMA, temperature=TEMP).fit(data)
    deltas = some_deltas(la.groups)
    # block-diagonal of the exact GGN, one block per layer (weight and bias together)
    mask = torch.zeros_like(G, dtype=torch.bool)
    start = 0
    for key, f in la.curvature.items():
        size = f.A.shape[0] * f.G.shape[0]
        # KFAC is exact block-wise for one sample, scaling of G included (sigma != 1)
        torch.testing.assert_close(
            f.to_dense(), G[start : start + size, start : start + size], rtol=1e-9, atol=1e-11
        )
        mask[start : start + size, start : start + size] = True
        start += size
    dvec = delta_vector(model, la.groups, deltas)
    logdet = torch.logdet(torch.where(mask, G, 0.0) / TEMP + torch.diag(dvec))
    expected = brute_marglik(ll, logdet, flat, dvec, TEMP)
    torch.testing.assert_close(la.log_marginal_likelihood(deltas), expected, rtol=1e-9, atol=1e-9)


# -- kron with one precision per tensor (weight and bias blocks separate) --------------------


def _per_tensor_brute_kron(model, data, likelihood, deltas):
    """(log-likelihood, log det, flat theta*, delta (P,)) of per-tensor kron, built by hand.

    The KFAC factors come from the default folded blocks of ``symdisc.curvature.kfac`` (bias in
    A); every weight block is ``torch.kron(G, A[:-1, :-1])`` and every bias block
    ``A[-1, -1] * G`` (the 1 (x) G block), assembled block-diagonally in parameter order, plus
    the diagonal of per-tensor precisions, log det by ``slogdet``.
    """
    loss = "cross_entropy" if likelihood == "classification" else "mse"
    scale = 1.0 if likelihood == "classification" else 1.0 / (2 * SIGMA**2)
    blocks = {}
    for f in kfac(model, data, loss=loss, reduction="sum").values():
        weight, bias = f.params
        blocks[weight] = torch.kron(scale * f.G, f.A[:-1, :-1])
        blocks[bias] = f.A[-1, -1] * scale * f.G
    names = [n for n, _ in model.named_parameters()]
    K = torch.block_diag(*(blocks[n] for n in names))
    dvec = delta_vector(model, {n: [n] for n in names}, deltas)
    sign, logdet = torch.linalg.slogdet(K / TEMP + torch.diag(dvec))
    assert sign > 0
    ll, _, flat = brute(model, data, likelihood, SIGMA)
    return ll, logdet, flat, dvec


@pytest.mark.parametrize("likelihood", ["classification", "regression"])
@pytest.mark.parametrize("build", [mlp, cnn])
def test_per_tensor_kron_equals_brute_force_dense_kron(build, likelihood):
    model = build()
    data = [batch(likelihood, 5, shape_of(model), 3)]
    la = Laplace(model, likelihood, "kron", per_tensor=True, sigma=SIGMA, temperature=TEMP)
    la.fit(data)
    names = [n for n, _ in model.named_parameters()]
    assert la.groups == {n: [n] for n in names}
    assert sorted(p for f in la.curvature.values() for p in f.params) == sorted(names)
    assert all(len(f.params) == 1 and not f.bias for f in la.curvature.values())
    deltas = some_deltas(la.groups)
    ll, logdet, flat, dvec = _per_tensor_brute_kron(model, data, likelihood, deltas)
    torch.testing.assert_close(
        la.log_det_posterior_precision(deltas), logdet, rtol=1e-10, atol=1e-10
    )
    expected = brute_marglik(ll, logdet, flat, dvec, TEMP)
    torch.testing.assert_close(la.log_marginal_likelihood(deltas), expected, rtol=1e-9, atol=1e-9)


def test_per_tensor_kron_is_exact_per_tensor_block_for_one_sample():
    model = mlp(2)
    data = [batch("classification", 1, (3,), 4)]
    ll, G, flat = brute(model, data, "classification", 1.0)
    la = Laplace(model, "classification", "kron", per_tensor=True, temperature=TEMP).fit(data)
    deltas = some_deltas(la.groups)
    # one sample: KFAC is exact, so each tensor's block is the exact GGN's diagonal block
    mask = torch.zeros_like(G, dtype=torch.bool)
    start = 0
    for _, p in model.named_parameters():
        mask[start : start + p.numel(), start : start + p.numel()] = True
        start += p.numel()
    dvec = delta_vector(model, la.groups, deltas)
    logdet = torch.logdet(torch.where(mask, G, 0.0) / TEMP + torch.diag(dvec))
    expected = brute_marglik(ll, logdet, flat, dvec, TEMP)
    torch.testing.assert_close(la.log_marginal_likelihood(deltas), expected, rtol=1e-9, atol=1e-9)


def test_per_tensor_kron_gradient_in_precisions_matches_finite_differences():
    model = cnn(1)
    data = [batch("classification", 6, (1, 4, 4), 6)]
    la = Laplace(model, "classification", "kron", per_tensor=True).fit(data)
    assert_precision_gradient_matches_finite_differences(la)


@pytest.mark.parametrize("likelihood", ["classification", "regression"])
def test_fused_kron_likelihood_equals_separate_forward(likelihood):
    model = mlp(5)
    data = [batch(likelihood, 4, (3,), 1), batch(likelihood, 3, (3,), 2)]
    fused = Laplace(model, likelihood, "kron", sigma=SIGMA).fit(data)
    plain = Laplace(model, likelihood, "kron", sigma=SIGMA, kron_factors=kfac).fit(data)
    ll, _, _ = brute(model, data, likelihood, SIGMA)
    torch.testing.assert_close(fused.log_likelihood, ll, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(plain.log_likelihood, ll, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        fused.log_marginal_likelihood(0.7), plain.log_marginal_likelihood(0.7), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("per_tensor", [False, True])
def test_float32_kron_fit_matches_float64(per_tensor):
    model64 = mlp(4)
    model32 = mlp(4).float()
    x, y = batch("classification", 64, (3,), 9)
    deltas = {k: v.item() for k, v in some_deltas(prior_groups(model64, per_tensor)).items()}
    values = []
    for model, xs in ((model64, x), (model32, x.float())):
        la = Laplace(model, "classification", "kron", per_tensor=per_tensor).fit([(xs, y)])
        assert all(a.dtype == xs.dtype for a in la.eigendecompositions[next(iter(la.curvature))])
        values.append(la.log_marginal_likelihood(deltas))
    assert values[1].dtype == torch.float32
    torch.testing.assert_close(values[1].double(), values[0], rtol=1e-4, atol=0)


def test_shared_precision_equals_dict_of_equal_precisions():
    model = cnn()
    data = [batch("classification", 3, (1, 4, 4))]
    la = Laplace(model, "classification", "kron").fit(data)
    shared = la.log_marginal_likelihood(0.8)
    torch.testing.assert_close(la.log_marginal_likelihood(torch.tensor(0.8)), shared)
    torch.testing.assert_close(la.log_marginal_likelihood({g: 0.8 for g in la.groups}), shared)


# -- gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_gradient_in_prior_precisions_matches_finite_differences(structure):
    model = mlp(1)
    data = [batch("regression", 5, (3,), 6)]
    la = Laplace(model, "regression", structure, sigma=SIGMA, temperature=TEMP).fit(data)
    assert_precision_gradient_matches_finite_differences(la)


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_marglik_is_differentiable_in_the_inputs(structure):
    model = mlp(3)
    y = torch.randint(0, 3, (7,), generator=_gen(8))
    x0 = torch.randn(7, 3, generator=_gen(9), dtype=DTYPE)

    def lml(x):
        la = Laplace(model, "classification", structure, temperature=TEMP).fit([(x, y)])
        return la.log_marginal_likelihood(0.5)

    assert torch.autograd.gradcheck(lml, (x0.requires_grad_(True),), eps=1e-6, atol=1e-6)


# -- no refitting --------------------------------------------------------------------------


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_evaluation_does_not_refit(structure, monkeypatch):
    calls = {"jac": 0, "kfac": 0}
    jac, kfac_with_loss = ggn_module.ggn_rows, kron_module.kfac_with_loss

    def counting_jac(*args, **kwargs):
        calls["jac"] += 1
        return jac(*args, **kwargs)

    def counting_kfac(*args, **kwargs):  # the default kron fit: factors and likelihood at once
        calls["kfac"] += 1
        return kfac_with_loss(*args, **kwargs)

    monkeypatch.setattr(ggn_module, "ggn_rows", counting_jac)
    monkeypatch.setattr(kron_module, "kfac_with_loss", counting_kfac)
    model = mlp()
    data = [batch("classification", 3, (3,), 1), batch("classification", 2, (3,), 2)]
    la = Laplace(model, "classification", structure).fit(data)
    after_fit = dict(calls)
    assert after_fit == ({"jac": 0, "kfac": 1} if structure == "kron" else {"jac": 2, "kfac": 0})
    values = [la.log_marginal_likelihood(d) for d in (0.1, 1.0, {g: 3.0 for g in la.groups})]
    assert calls == after_fit
    assert len({v.item() for v in values}) == 3


# -- groups --------------------------------------------------------------------------------


def test_groups_per_layer_and_path_and_per_plain_module():
    model = relaxed()
    groups = prior_groups(model)
    assert groups == {
        "0.layers.0:fc": ["0.layers.0.weight", "0.layers.0.bias"],
        "0.layers.1:conv": ["0.layers.1.weight", "0.layers.1.bias"],
        "3": ["3.weight", "3.bias"],
    }
    per_tensor = prior_groups(model, per_tensor=True)
    names = [n for n, _ in model.named_parameters()]
    assert per_tensor == {n: [n] for n in names}
    assert prior_groups(nn.Linear(2, 2)) == {ROOT_GROUP: ["weight", "bias"]}


@pytest.mark.parametrize("per_tensor", [False, True])
def test_full_on_relaxed_layers_equals_brute_force(per_tensor):
    model = relaxed()
    data = [batch("classification", 2, (1, 4, 4), 7)]
    ll, G, flat = brute(model, data, "classification", 1.0)
    la = Laplace(model, "classification", "full", per_tensor=per_tensor, temperature=TEMP)
    la.fit(data)
    assert la.groups == prior_groups(model, per_tensor)
    deltas = some_deltas(la.groups)
    dvec = delta_vector(model, la.groups, deltas)
    expected = brute_marglik(ll, torch.logdet(G / TEMP + torch.diag(dvec)), flat, dvec, TEMP)
    torch.testing.assert_close(la.log_marginal_likelihood(deltas), expected, rtol=1e-9, atol=1e-9)
    diag = Laplace(model, "classification", "diag", per_tensor=per_tensor).fit(data)
    torch.testing.assert_close(diag.curvature, G.diagonal(), rtol=1e-9, atol=1e-11)


def test_layer_paths_name_the_path_sum_as_the_relaxed_layer():
    model = relaxed()
    assert layer_paths(model) == {
        "0.layers.0.weight": ("0", "0.layers.0", "fc"),
        "0.layers.0.bias": ("0", "0.layers.0", "fc"),
        "0.layers.1.weight": ("0", "0.layers.1", "conv"),
        "0.layers.1.bias": ("0", "0.layers.1", "conv"),
    }
    lone = FC(1, 2, 4, 4).to(DTYPE)  # a model that is itself the relaxed layer
    assert layer_paths(lone) == {"weight": ("", "", "fc"), "bias": ("", "", "fc")}


# -- one class per structure ---------------------------------------------------------------


@pytest.mark.parametrize(
    "structure, cls", [("full", FullLaplace), ("kron", KronLaplace), ("diag", DiagLaplace)]
)
def test_factory_builds_the_structures_class(structure, cls):
    model = mlp()
    data = [batch("regression", 4, (3,), 2)]
    la = Laplace(model, "regression", structure, sigma=SIGMA, temperature=TEMP)
    assert type(la) is cls and isinstance(la, Laplace) and la.structure == structure
    direct = cls(model, "regression", sigma=SIGMA, temperature=TEMP)
    deltas = some_deltas(la.groups)
    torch.testing.assert_close(
        la.fit(data).log_marginal_likelihood(deltas),
        direct.fit(data).log_marginal_likelihood(deltas),
        rtol=0,
        atol=0,
    )
    eigs = la.group_eigenvalues()
    assert list(eigs) == list(la.groups)
    assert sum(e.numel() for e in eigs.values()) == (
        la.n_params
        if structure != "kron"
        else sum(f.A.shape[0] * f.G.shape[0] for f in la.curvature.values())
    )
    assert all(bool((e >= 0).all()) for e in eigs.values())


def test_kron_factors_is_an_option_of_kron_only():
    model = mlp()
    full = Laplace(model, "classification", "full", kron_factors=kfac)  # ignored by "full"
    assert isinstance(full, FullLaplace)
    with pytest.raises(TypeError, match="kron_factors"):
        FullLaplace(model, "classification", kron_factors=kfac)
    with pytest.raises(TypeError, match="`kron_factors` must be callable"):
        Laplace(model, "classification", "kron", kron_factors=3)


# -- post-hoc prior precisions -------------------------------------------------------------


def test_optimize_prior_precision_adam_is_adam_on_log_precisions():
    model = mlp(1)
    la = Laplace(model, "classification", "kron").fit([batch("classification", 20, (3,), 4)])
    tuned = optimize_prior_precision(la, "adam", steps=15, lr=0.1)
    log_delta = {g: torch.zeros((), dtype=DTYPE, requires_grad=True) for g in la.groups}
    opt = torch.optim.Adam(list(log_delta.values()), lr=0.1)
    for _ in range(15):
        value = -la.log_marginal_likelihood({g: v.exp() for g, v in log_delta.items()})
        opt.zero_grad()
        value.backward()
        opt.step()
    with torch.no_grad():
        want = {g: float(v.exp()) for g, v in log_delta.items()}
        lml = float(la.log_marginal_likelihood({g: v.exp() for g, v in log_delta.items()}))
    assert tuned.prior_precision == want and tuned.log_marginal_likelihood == lml
    assert lml > float(la.log_marginal_likelihood(1.0))


def test_optimize_prior_precision_grid_finds_the_shared_optimum():
    model = mlp(2)
    la = Laplace(model, "classification", "full").fit([batch("classification", 12, (3,), 5)])
    tuned = optimize_prior_precision(la, "grid")
    (delta,) = set(tuned.prior_precision.values())
    assert list(tuned.prior_precision) == list(la.groups)
    assert tuned.log_marginal_likelihood == float(la.log_marginal_likelihood(delta))
    # the best of the fine grid: its neighbours (and every coarse point) are not better
    best = math.log10(delta)
    for other in (best - 0.005, best + 0.005, -4.0, 0.0, 4.0):
        assert float(la.log_marginal_likelihood(10.0**other)) <= tuned.log_marginal_likelihood
    coarse = optimize_prior_precision(la, "grid", bounds=(-1.0, 1.0), step=1.0, refine_step=1.0)
    assert set(coarse.prior_precision.values()) <= {0.01, 0.1, 1.0, 10.0, 100.0}


@pytest.mark.parametrize("likelihood", ["classification", "regression"])
def test_optimize_prior_precision_val_nll_minimises_the_held_out_nll(likelihood):
    model, data = mlp(3), [batch(likelihood, 12, (3,), 6)]
    la = Laplace(model, likelihood, "full", sigma=0.5).fit(data)
    x, y = batch(likelihood, 9, (3,), 7)
    tuned = optimize_prior_precision(la, "val_nll", val_data=(x, y))
    (delta,) = set(tuned.prior_precision.values())
    _, G, flat = brute(model, data, likelihood, 0.5)
    shapes = {n: p.shape for n, p in model.named_parameters()}

    def f(vec):
        out, start = {}, 0
        for n, shape in shapes.items():
            out[n] = vec[start : start + math.prod(shape)].reshape(shape)
            start += math.prod(shape)
        return torch.func.functional_call(model, out, (x,))

    outputs = f(flat).detach()
    J = torch.autograd.functional.jacobian(f, flat)  # (N, C, P)

    def held_out_nll(d: float) -> float:  # the GLM predictive from the inverted dense posterior
        Sigma = torch.linalg.inv(G + d * torch.eye(len(flat), dtype=DTYPE))
        var = torch.einsum("ncp,pq,ncq->nc", J, Sigma, J)
        if likelihood == "classification":
            probs = torch.softmax(outputs / torch.sqrt(1 + math.pi / 8 * var), -1)
            return -float(probs[torch.arange(len(y)), y].log().mean())
        v = var + 0.5**2
        return float(
            (0.5 * ((y - outputs) ** 2 / v + v.log() + math.log(2 * math.pi))).sum(1).mean()
        )

    assert tuned.val_nll == pytest.approx(held_out_nll(delta), rel=1e-9)
    best = math.log10(delta)
    # no point of the coarse grid, nor a fine-grid neighbour (the fine grid reaches one coarse
    # step beyond the bounds), is better
    neighbours = [p for p in (best - 0.05, best + 0.05) if -4.25 <= p <= 4.25]
    for other in (*neighbours, -4.0, -2.0, 0.0, 2.0, 4.0):
        assert held_out_nll(10.0**other) >= tuned.val_nll - 1e-12
    assert tuned.log_marginal_likelihood == pytest.approx(float(la.log_marginal_likelihood(delta)))
    with pytest.raises(ValueError, match="val_data"):
        optimize_prior_precision(la, "val_nll")
    with pytest.raises(ValueError, match="val_data"):
        optimize_prior_precision(la, "val_nll", val_data=(x, y[:3]))
    with pytest.raises(ValueError, match=r"\['val_data'\] are options of another method"):
        optimize_prior_precision(la, "grid", val_data=(x, y))


def test_optimize_prior_precision_errors():
    la = Laplace(mlp(), "classification", "diag")
    with pytest.raises(RuntimeError, match="fit"):
        optimize_prior_precision(la)
    la.fit([batch("classification", 3, (3,))])
    with pytest.raises(ValueError, match="`method` must be one of"):
        optimize_prior_precision(la, "lbfgs")
    with pytest.raises(ValueError, match=r"\['steps'\] are options of another method"):
        optimize_prior_precision(la, "grid", steps=3)
    with pytest.raises(ValueError, match=r"\['bounds'\] are options of another method"):
        optimize_prior_precision(la, "adam", bounds=(-1.0, 1.0))
    with pytest.raises(ValueError, match="low < high"):
        optimize_prior_precision(la, "grid", bounds=(1.0, -1.0))
    with pytest.raises(TypeError, match="`laplace` must be a Laplace"):
        optimize_prior_precision(mlp())


# -- errors --------------------------------------------------------------------------------


def test_errors():
    model = mlp()
    data = [batch("classification", 3, (3,))]
    with pytest.raises(ValueError, match="`likelihood` must be one of"):
        Laplace(model, "poisson", "full")
    with pytest.raises(ValueError, match="`structure` must be one of"):
        Laplace(model, "classification", "lowrank")
    with pytest.raises(ValueError, match="`sigma` must be a positive finite float"):
        Laplace(model, "regression", "full", sigma=0.0)
    with pytest.raises(ValueError, match="`temperature` must be a positive finite float"):
        Laplace(model, "regression", "full", temperature=-1.0)
    with pytest.raises(TypeError, match="`model` must be a Module"):
        Laplace("model", "regression", "full")
    la = Laplace(model, "classification", "full")
    with pytest.raises(RuntimeError, match="fit"):
        la.log_marginal_likelihood(1.0)
    la.fit(data)
    with pytest.raises(ValueError, match=r"`prior_precision\['2'\]` must be positive"):
        la.log_marginal_likelihood({"0": 1.0, "2": torch.tensor(-0.5)})
    with pytest.raises(ValueError, match="`prior_precision` must be positive"):
        la.log_marginal_likelihood(0.0)
    with pytest.raises(ValueError, match=r"missing \['2'\], unknown \['9'\]"):
        la.log_marginal_likelihood({"0": 1.0, "9": 1.0})
    with pytest.raises(ValueError, match="must be a 0-d tensor"):
        la.log_marginal_likelihood(torch.ones(2))
    with pytest.raises(TypeError, match="must be a float or a 0-d tensor"):
        la.log_marginal_likelihood("1.0")
    ruleless = nn.Sequential(nn.Bilinear(3, 3, 3))  # no KFAC rule for a bilinear layer
    with pytest.raises(ValueError, match=r"'0 \(Bilinear\)'.*no"):
        Laplace(ruleless, "classification", "kron")
    with pytest.raises(ValueError, match="at least one"):
        Laplace(model, "classification", "full").fit([])


@pytest.mark.parametrize("likelihood", ["classification", "regression"])
@pytest.mark.parametrize(
    "structure, options",
    [("full", {}), ("diag", {}), ("kron", {}), ("kron", {"kron_factors": kfac})],
    ids=["full", "diag", "kron", "kron-separate-factors"],
)
def test_fit_with_non_finite_outputs_raises_non_finite_loss_error(structure, options, likelihood):
    """Finite weights, a NaN input: the likelihood is not finite, whether the exact-GGN fit,
    the fused KFAC forward or a separate KFAC (whose core checks the loss first) meets it."""
    x, y = batch(likelihood, 4, (3,))
    x[1, 0] = math.nan
    la = Laplace(mlp(), likelihood, structure, sigma=SIGMA, **options)
    with pytest.raises(NonFiniteLossError, match="finite"):
        la.fit([(x, y)])
    with pytest.raises(RuntimeError, match="fit"):
        la.log_marginal_likelihood(1.0)


def _spd(n, seed):
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T + torch.eye(n, dtype=torch.float64)


def test_block_diagonal_factor_is_decomposed_per_block_with_the_same_eigenpairs():
    """The expanded-input factors of F-FC are block diagonal; their eigh goes block by block."""
    blocks = [
        _spd(3, 0),
        _spd(1, 1),
        _spd(4, 2),
        torch.zeros(2, 2, dtype=torch.float64),
        _spd(2, 3),
    ]
    M = torch.block_diag(*blocks)
    assert kron_module._diagonal_blocks(M) == [3, 1, 4, 1, 1, 2]
    dense = _spd(5, 4)
    dense[0, 4] = dense[4, 0] = 0.0  # a zero entry is not a block boundary
    assert kron_module._diagonal_blocks(dense) == [5]
    values, vectors = kron_module._symmetric_eigh(M)
    torch.testing.assert_close(values, torch.linalg.eigvalsh(M), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vectors @ torch.diag(values) @ vectors.T, M, rtol=0, atol=1e-12)
    torch.testing.assert_close(vectors.T @ vectors, torch.eye(12, dtype=torch.float64))


def test_kron_eigh_retries_a_lapack_failure_with_a_tiny_shift(monkeypatch):
    """LAPACK's eigh failed to converge on a rank-deficient KFAC factor (seen with one thread);
    the retry on ``M + j I`` must return M's eigenpairs (shifted back), and a second failure a
    named error."""
    from ella.laplace import kron

    g = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 6, generator=g, dtype=torch.float64)
    m = rows.T @ rows  # rank 3 of 6
    real, calls = torch.linalg.eigh, []

    def failing_once(a, *args, **kwargs):
        calls.append(a.clone())
        if len(calls) == 1:
            raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
        return real(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", failing_once)
    values, vectors = kron._symmetric_eigh(m)
    assert len(calls) == 2 and not torch.equal(calls[1], m)  # retried on a shifted matrix
    torch.testing.assert_close(vectors @ torch.diag(values) @ vectors.T, m, rtol=0, atol=1e-12)
    torch.testing.assert_close(values, real(m)[0], rtol=0, atol=1e-12)

    def failing(a, *args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "eigh", failing)
    with pytest.raises(ValueError, match=r"\(6, 6\) KFAC factor failed to converge"):
        kron._symmetric_eigh(m)
