"""The dimension of the symmetry algebra and the Lie closure of generators (issue 13)."""

from __future__ import annotations

import pytest
import torch

from symdisc.dimension import (
    dimension_step,
    estimate_dimension,
    learned_fields,
    lie_closure,
)
from symdisc.known import gl_ansatz, null_space
from symdisc.losses import two_layer
from symdisc.sampler import sample
from symdisc.trainer import TrainConfig

DTYPE = torch.float64


def _E(d: int, i: int, j: int) -> torch.Tensor:
    E = torch.zeros(d, d, dtype=DTYPE)
    E[i, j] = 1.0
    return E


def test_a_lie_subalgebra_closes():
    """so(3), the diagonal matrices, all of gl(2): every bracket lies in the span."""
    so3 = torch.stack([_E(3, i, j) - _E(3, j, i) for i, j in ((0, 1), (0, 2), (1, 2))])
    mix = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0], [0.0, 1.0, 1.0]], dtype=DTYPE)
    for h in (
        so3,
        torch.einsum("ab,bij->aij", mix, so3),  # another basis of so(3), not orthonormal
        torch.stack([_E(3, i, i) for i in range(3)]),  # commuting: all brackets vanish
        torch.randn(4, 2, 2, generator=torch.Generator().manual_seed(0), dtype=DTYPE),  # gl(2)
    ):
        closure = lie_closure(h)
        assert closure.max_distance < 1e-12
        assert closure.closes()
    assert lie_closure(so3).bracket[0, 1] > 0.5  # so(3) does not commute: the bracket is there


def test_a_set_that_is_not_closed_is_measured():
    """[E12, E21] = E11 - E22 lies outside span(E12, E21): all of it."""
    h = torch.stack([_E(2, 0, 1), _E(2, 1, 0)])
    closure = lie_closure(h)
    assert closure.distance[0, 1] == pytest.approx(2**0.5, rel=1e-12)
    assert float(closure.distance[0, 1]) == pytest.approx(float(closure.bracket[0, 1]), rel=1e-12)
    assert closure.distance[0, 0] == 0.0 and not closure.closes()
    # adding the bracket's half that is inside: span(E12, E21, E11) misses E22's part only
    h3 = torch.cat([h, _E(2, 0, 0)[None]])
    d = lie_closure(h3).distance
    assert d[0, 1] == pytest.approx(1.0, rel=1e-12)  # E11 - E22 minus its projection -E22
    # rescaling a generator does not change the relative distance
    assert lie_closure(h * torch.tensor([3.0, 0.1], dtype=DTYPE)[:, None, None]).distance[
        0, 1
    ] == pytest.approx(2**0.5, rel=1e-12)
    with pytest.raises(ValueError, match="`h`"):
        lie_closure(torch.zeros(2, 2, 3))
    with pytest.raises(TypeError, match="`h`"):
        lie_closure([[1.0]])


def _null_space_fit(loss, n: int = 200):
    """``fit`` from the closed form: the first null-space generators through the GL ansatz, then
    generic (non-symmetry) generators once the null space is used up."""
    samples = sample(loss, n, seed=0, dtype=DTYPE)
    ansatz = gl_ansatz(loss)
    ns = null_space(loss, samples, ansatz)
    extra = torch.randn(8, *ns.a_shape, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    gens = torch.cat([ns.generators, extra])

    def field(theta, X, A):
        return ansatz(theta, X, A)

    def fit(k: int):
        over_gens = torch.vmap(field, in_dims=(None, None, 0))
        fields = torch.vmap(over_gens, in_dims=(0, 0, None))(samples.theta, samples.X, gens[:k])
        return fields, samples.grad, gens[:k]

    return fit, ns


@pytest.mark.parametrize(
    "loss, expected",
    [
        (two_layer("identity", 2, 2, 2, 2), 4),  # GL(2)
        (two_layer("relu", 2, 3, 2, 2), 3),  # positive rescaling of 3 units
        (two_layer("sigmoid", m=1, h=3, n=3, k=1), 0),  # no data-independent symmetry
    ],
)
def test_dimension_of_the_closed_form_null_space(loss, expected):
    fit, ns = _null_space_fit(loss)
    assert ns.dim == expected
    est = estimate_dimension(fit=fit, k_max=8)
    assert est.dimension == expected and not est.saturated
    assert len(est.steps) == expected + 1
    last = est.steps[-1]
    if expected == 4:  # all of gl(2) is a symmetry: a fifth generator is dependent
        assert last.invariant and not last.independent and last.singular_values[-1] < 1e-10
    else:  # a generic generator: independent, not invariant
        assert not last.invariant and last.independent
    for step in est.steps[:-1]:
        assert step.passed and max(step.invariance) < 1e-8
        assert step.singular_values[0] == 1.0 and len(step.singular_values) == step.k
    if expected:
        assert lie_closure(est.extras[expected]).closes(1e-10)  # the null space is an algebra


def test_a_repeated_field_is_not_independent():
    loss = two_layer("relu", 2, 3, 2, 2)
    fit, ns = _null_space_fit(loss)

    def repeating(k: int):
        fields, grad, _ = fit(min(k, 2))
        if k > 2:
            fields = torch.cat([fields, fields[:, :1].expand(-1, k - 2, -1)], dim=1)
        return fields, grad

    est = estimate_dimension(fit=repeating, k_max=5)
    assert est.dimension == 2
    assert est.steps[-1].invariant and not est.steps[-1].independent
    assert est.steps[-1].singular_values[-1] < 1e-10
    saturated = estimate_dimension(fit=fit, k_max=2)
    assert saturated.dimension == 2 and saturated.saturated


def test_dimension_step_on_vanishing_fields():
    step = dimension_step(torch.zeros(5, 1, 4), torch.randn(5, 4))
    assert not step.independent and not step.passed


def test_flow_drift_counts_unless_its_threshold_is_none():
    loss = two_layer("relu", 2, 3, 2, 2)
    fit, _ = _null_space_fit(loss)

    def drifting(k: int):
        fields, grad, gens = fit(k)
        return fields, grad, gens, [0.5 if j == 1 else 0.01 for j in range(k)]

    evidence_only = estimate_dimension(fit=drifting, k_max=5, drift_threshold=None)
    assert evidence_only.dimension == 3 and evidence_only.steps[1].flow_drift == [0.01, 0.5]
    strict = estimate_dimension(fit=drifting, k_max=5)
    assert strict.dimension == 1 and not strict.steps[1].invariant
    last = evidence_only.steps[-1]  # the generic fourth generator: its p90 above its median
    assert last.invariance_p90[-1] > last.invariance[-1] > 0.05


def test_estimate_dimension_argument_errors():
    with pytest.raises(ValueError, match="`loss` and `d`"):
        estimate_dimension(k_max=2)
    with pytest.raises(ValueError, match="`k_max`"):
        estimate_dimension(fit=lambda k: None, k_max=0)
    with pytest.raises(TypeError, match="`fit`"):
        estimate_dimension(fit=3)
    with pytest.raises(ValueError, match=r"fit\(1\)"):
        estimate_dimension(fit=lambda k: (torch.zeros(3, 2, 4), torch.zeros(3, 4)), k_max=1)


@pytest.mark.slow
def test_short_learned_run_finds_an_invariant_field(one_thread):
    """One learned step on linear h=2 (about 8 s on a loaded CPU, so slow): the default fit
    trains with discover and reports the evidence of k = 1, a field far more invariant than a
    random direction."""
    loss = two_layer("identity", 2, 2, 2, 2)
    fit = learned_fields(
        loss,
        d=2,
        data_dependent=False,
        n_train=1024,
        n_test=128,
        config=TrainConfig(steps=1500, seed=0),
    )
    est = estimate_dimension(fit=fit, k_max=1)
    step = est.steps[0]
    assert step.k == 1 and len(step.invariance) == 1
    assert step.invariance[0] < 0.05  # a random direction in R^8 scores about 0.28
    assert est.dimension == 1 and est.saturated
    assert est.extras[1].discovery.generators().shape == (1, 2, 2)
