"""Hutchinson and Hutch++ converge to the dense trace (float64)."""

import pytest
import torch

from conftest import brute_force_hessian, mlp_case
from symdisc.curvature import HessianOperator, hutchinson, hutchpp


@pytest.fixture(scope="module")
def dense():
    return brute_force_hessian(mlp_case(loss="mse"))


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_converges_to_dense_trace(dense, distribution):
    truth = float(dense.trace())
    errors = []
    for n in (10, 1000):
        runs = [hutchinson(dense, n, distribution=distribution, generator=s) for s in range(8)]
        errors.append(sum(abs(float(r.value) - truth) for r in runs) / len(runs) / abs(truth))
        # the reported standard error is the spread of the estimate: most runs lie within 3 of it
        inside = sum(abs(float(r.value) - truth) <= 3 * float(r.std_error) for r in runs)
        assert inside >= 7, (n, inside)
    assert errors[1] < 0.3 * errors[0], errors  # 1/sqrt(n): 10x smaller at 100x probes
    assert errors[1] < 0.05, errors


def test_hutchinson_on_matrix_free_operator_matches_dense_probes():
    case = mlp_case(loss="cross_entropy")
    H = HessianOperator(case.loss_fn, case.params, case.inputs, case.targets)
    dense = brute_force_hessian(case)
    a = hutchinson(H, 20, generator=3)
    b = hutchinson(dense, 20, generator=3)  # same seed, same probes
    torch.testing.assert_close(a.value, b.value, rtol=1e-10, atol=1e-12)
    assert a.n_matvecs == 20


def test_hutchpp_converges_faster_and_is_exact_on_low_rank(dense):
    truth = float(dense.trace())
    errors = {}
    for name, fn in (("hutchinson", hutchinson), ("hutchpp", hutchpp)):
        runs = [fn(dense, 30, generator=s) for s in range(8)]
        errors[name] = sum(abs(float(r.value) - truth) for r in runs) / len(runs) / abs(truth)
    assert errors["hutchpp"] < errors["hutchinson"], errors
    big = [abs(float(hutchpp(dense, 150, generator=s).value) - truth) for s in range(4)]
    assert sum(big) / 4 / abs(truth) < 0.02
    g = torch.Generator().manual_seed(0)
    U = torch.randn(40, 5, generator=g, dtype=torch.float64)
    low_rank = U @ U.T  # rank 5 <= n_matvecs / 3: the sketch captures it whole
    torch.testing.assert_close(hutchpp(low_rank, 18, generator=1).value, low_rank.trace())


def test_trace_errors():
    A = torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="`n_probes`"):
        hutchinson(A, 0)
    with pytest.raises(ValueError, match="`n_matvecs`"):
        hutchpp(A, 2)
    with pytest.raises(ValueError, match="`distribution`"):
        hutchinson(A, 3, distribution="uniform")
    with pytest.raises(TypeError, match="`generator`"):
        hutchinson(A, 3, generator="seed")
