"""Lanczos and stochastic Lanczos quadrature against eigvalsh of dense Hessians (float64)."""

import pytest
import torch

from conftest import brute_force_hessian, mlp_case
from symdisc.curvature import HessianOperator, eigenvalues, lanczos, slq_density


def operator_and_dense(case):
    H = HessianOperator(case.loss_fn, case.params, case.inputs, case.targets)
    return H, brute_force_hessian(case)


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_lanczos_extreme_eigenvalues_match_eigvalsh(case, which):
    H, dense = operator_and_dense(case)
    lam = torch.linalg.eigvalsh(dense)
    k = 4
    result = lanczos(H, k, which=which, generator=0)
    if which == "LA":
        want = lam.flip(0)[:k]
    elif which == "SA":
        want = lam[:k]
    else:
        want = lam[lam.abs().argsort(descending=True)][:k]
    assert bool(result.converged.all()), result
    rel = ((result.eigenvalues - want).abs() / want.abs()).max()
    assert rel <= 1e-8, (rel, result.eigenvalues, want)
    # the Ritz vectors are eigenvectors: ||H y - lam y|| small, and orthonormal
    Y = result.eigenvectors
    torch.testing.assert_close(Y.T @ Y, torch.eye(k, dtype=torch.float64), atol=1e-8, rtol=0)
    resid = (dense @ Y - Y * result.eigenvalues).norm(dim=0)
    assert bool((resid <= 1e-6 * lam.abs().max()).all()), resid


def test_lanczos_finds_repeated_eigenvalues_and_flags_non_convergence():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([5.0, 5.0, 5.0, 2.0]), torch.linspace(-1, 1, 56)]).double()
    A = Q @ torch.diag(lam) @ Q.T
    result = lanczos(A, 4, generator=1)
    torch.testing.assert_close(result.eigenvalues, lam[:4], rtol=1e-9, atol=0)
    hard = lanczos(A, 10, max_iter=12, generator=1)  # too few steps for the bulk
    assert not bool(hard.converged.all()) and hard.n_iter == 12


def test_lanczos_errors():
    A = torch.eye(5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"`k` must be an int in \[1, P=5\], got 6"):
        lanczos(A, 6)
    with pytest.raises(ValueError, match="`which`"):
        lanczos(A, 1, which="BE")
    with pytest.raises(ValueError, match="square"):
        lanczos(torch.ones(3, 4), 1)


def test_dense_eigenvalues_of_operator():
    case = mlp_case()
    H, dense = operator_and_dense(case)
    torch.testing.assert_close(eigenvalues(H), torch.linalg.eigvalsh(dense), rtol=1e-10, atol=1e-12)


def density_moments(d):
    dx = d.grid[1] - d.grid[0]
    return [float((d.density * d.grid**p).sum() * dx) for p in range(3)]


def test_slq_density_integrates_to_one_and_matches_moments():
    # SLQ only multiplies by its operator: the dense Hessian stands in for the (tested) matrix-free
    # one so that many probes stay cheap. Six nodes integrate polynomials up to degree 11 exactly,
    # so the moments' error is the probes' alone: ~1.5% at 3000 probes for this spectrum.
    dense = brute_force_hessian(mlp_case(loss="mse"))
    lam = torch.linalg.eigvalsh(dense)
    P = lam.numel()
    sigma = 1e-3 * float(lam.abs().max())
    d = slq_density(dense, n_steps=6, n_probes=3000, sigma=sigma, grid=4000, generator=0)
    mass, m1, m2 = density_moments(d)
    assert abs(mass - 1) < 1e-6
    assert abs(m1 - float(lam.sum()) / P) <= 0.05 * abs(float(lam.sum()) / P), (m1, lam.sum() / P)
    assert abs(m2 - float((lam**2).sum()) / P) <= 0.05 * float((lam**2).sum()) / P
    assert torch.allclose(d.weights.sum(1), torch.ones(3000, dtype=torch.float64))


def test_slq_moments_converge_as_probes_grow():
    dense = brute_force_hessian(mlp_case(loss="mse"))
    lam = torch.linalg.eigvalsh(dense)
    truth = float((lam**2).mean())
    errors = []
    for n_probes in (4, 400):
        errs = [
            abs(slq_density(dense, n_steps=12, n_probes=n_probes, generator=s).moment(2) - truth)
            for s in range(5)
        ]
        errors.append(sum(errs) / len(errs) / truth)
    assert errors[1] < 0.35 * errors[0], errors  # ~1/sqrt(probes): 10x at 100x probes
    assert errors[1] < 0.05, errors


def test_slq_exact_when_steps_span_the_space():
    """With n_steps = P the quadrature is exact: the moment of order p is v^T A^p v."""
    g = torch.Generator().manual_seed(2)
    A = torch.randn(12, 12, generator=g, dtype=torch.float64)
    A = A + A.T
    d = slq_density(A, n_steps=12, n_probes=1, generator=3)
    v = torch.randint(0, 2, (12,), generator=torch.Generator().manual_seed(3)).double() * 2 - 1
    v = v / v.norm()
    for p in (1, 2, 3):
        assert abs(d.moment(p) - float(v @ torch.linalg.matrix_power(A, p) @ v)) < 1e-9


def test_slq_errors():
    A = torch.eye(5, dtype=torch.float64)
    with pytest.raises(ValueError, match="`n_steps`"):
        slq_density(A, n_steps=6)
    with pytest.raises(ValueError, match="`n_probes`"):
        slq_density(A, n_steps=2, n_probes=0)
    with pytest.raises(ValueError, match="`sigma`"):
        slq_density(A, n_steps=2, sigma=-1.0)
