"""The kron Laplace's eigenvalues-only fit (``eigvalsh``) against full ``eigh`` in float64, and
its eigenvectors computed on first read: the same eigenpairs, kept until the next fit."""

import pytest
import torch
from torch import nn

import ella.laplace.kron as kron_module
from ella.laplace import Laplace

DTYPE = torch.float64


def _spd(d, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d + 2, generator=g, dtype=DTYPE)
    return m @ m.T


@pytest.mark.parametrize("diagonal_blocks", [False, True])
def test_eigenvalues_only_equal_those_of_eigh(diagonal_blocks):
    M = torch.block_diag(_spd(3, 0), _spd(4, 1)) if diagonal_blocks else _spd(6, 2)
    values, none = kron_module._symmetric_eigh(M, vectors=False)
    ref, vectors = kron_module._symmetric_eigh(M)
    assert none is None and vectors is not None
    torch.testing.assert_close(values, ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(values, torch.linalg.eigvalsh(M), rtol=1e-12, atol=1e-12)
    one = torch.ones(1, 1, dtype=DTYPE) * 2.5
    assert kron_module._symmetric_eigh(one, vectors=False) == (one.reshape(1), None)


def _fitted(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).to(DTYPE).eval()
    x = torch.randn(20, 3, dtype=DTYPE)
    y = torch.randint(0, 4, (20,))
    return Laplace(model, "classification", "kron", per_tensor=True).fit([(x, y)]), model, x, y


def test_eigenvectors_are_computed_on_first_read_and_reset_by_a_fit():
    la, model, x, y = _fitted(0)
    assert la._eigendecompositions is None  # the fit computed eigenvalues only
    products = la.group_eigenvalues()
    first = la.eigendecompositions
    assert la.eigendecompositions is first  # kept
    for key, (a, qa, g, qg) in first.items():
        f = la.curvature[key]
        torch.testing.assert_close(qa @ torch.diag(a) @ qa.T, f.A, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(qg @ torch.diag(g) @ qg.T, f.G, rtol=1e-12, atol=1e-12)
        a_only, g_only = la._eigenvalues[key]
        torch.testing.assert_close(a_only, a, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g_only, g, rtol=1e-12, atol=1e-12)
    for group, p in products.items():
        keys = [k for k, grp in la.block_groups.items() if grp == group]
        ref = torch.cat(
            [
                torch.outer(first[k][2].clamp_min(0), first[k][0].clamp_min(0)).reshape(-1)
                for k in keys
            ]
        )
        torch.testing.assert_close(p, ref, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        model[0].weight.mul_(1.5)
    la.fit([(x, y)])
    assert la._eigendecompositions is None
    second = la.eigendecompositions
    assert any(
        not torch.allclose(second[k][i], first[k][i]) for k in second for i in (0, 2)
    )  # the new fit's eigenpairs, not the first's


def test_chunked_fit_equals_whole_batch_fit():
    """``chunk_size`` changes how the KFAC passes are cut, not the marginal likelihood."""
    la, model, x, y = _fitted(1)
    deltas = dict(zip(la.groups, torch.linspace(0.5, 2.0, len(la.groups), dtype=DTYPE)))
    whole = la.log_marginal_likelihood(deltas)
    for chunk in (3, 7):
        part = Laplace(model, "classification", "kron", per_tensor=True, chunk_size=chunk)
        value = part.fit([(x, y)]).log_marginal_likelihood(deltas)
        torch.testing.assert_close(value, whole, rtol=1e-12, atol=1e-10)
    with pytest.raises(ValueError, match="chunk_size"):
        Laplace(model, "classification", "kron", chunk_size=0)
