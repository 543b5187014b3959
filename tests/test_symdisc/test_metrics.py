"""The rank and coverage of learned fields and the verdict, on constructed fields (issue 13)."""

from __future__ import annotations

import math

import pytest
import torch

from symdisc.metrics import (
    REPORT_ORDER,
    THRESHOLDS,
    coverage,
    energy_outside,
    evaluate,
    field_rank,
    random_invariance,
    verdict,
)

DTYPE = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _known_plane(N: int, P: int, seed: int = 0) -> torch.Tensor:
    """A random 2-dimensional known tangent space per sample: (N, 2, P), non-orthonormal rows."""
    return torch.randn(N, 2, P, generator=_gen(seed), dtype=DTYPE)


def test_duplicated_fields_have_rank_one_and_cover_half_a_plane():
    N, P = 50, 7
    basis = _known_plane(N, P)
    c = torch.randn(N, 2, generator=_gen(1), dtype=DTYPE)
    one = torch.einsum("nr,nrp->np", c, basis)  # a direction inside the plane
    fields = torch.stack([one, 3.0 * one], dim=1)  # the same direction twice
    assert field_rank(fields) == 1.0
    assert coverage(fields, basis) == pytest.approx(0.5, abs=1e-12)
    assert energy_outside(fields, basis) == pytest.approx(0.0, abs=1e-12)  # inside, yet half
    # a duplicate up to a difference below the rank tolerance still counts once
    noisy = fields + 1e-4 * torch.randn(fields.shape, generator=_gen(2), dtype=DTYPE)
    assert field_rank(noisy) == 1.0
    assert coverage(noisy, basis) == pytest.approx(0.5, abs=1e-6)


def test_fields_spanning_the_known_space_cover_it():
    N, P = 40, 9
    basis = _known_plane(N, P)
    mix = torch.randn(N, 3, 2, generator=_gen(3), dtype=DTYPE)  # 3 fields, rank 2, in the plane
    fields = mix @ basis
    assert field_rank(fields) == 2.0
    assert coverage(fields, basis) == pytest.approx(1.0, abs=1e-12)
    # a field leaving the plane keeps the coverage if the plane is still spanned
    extra = torch.randn(N, 1, P, generator=_gen(4), dtype=DTYPE)
    spanning = torch.cat([basis + 0.3 * basis.flip(1), extra], 1)
    assert field_rank(spanning) == 3.0
    assert coverage(spanning, basis) == pytest.approx(1.0, abs=1e-12)


def test_coverage_of_one_axis_is_the_squared_cosine():
    """Against a 1-dimensional known space, coverage is the mean squared cosine."""
    N, P = 30, 5
    t = torch.randn(N, 1, P, generator=_gen(5), dtype=DTYPE)
    v = torch.randn(N, 1, P, generator=_gen(6), dtype=DTYPE)
    cos2 = (
        torch.einsum("np,np->n", t[:, 0], v[:, 0]) / (t.norm(dim=-1) * v.norm(dim=-1))[:, 0]
    ) ** 2
    assert coverage(v, t) == pytest.approx(float(cos2.mean()), rel=1e-12)


@pytest.mark.parametrize("k", [1, 3])
def test_random_fields_cover_k_over_P_of_a_known_space(k):
    """k random directions in R^P capture k / P of any fixed space on average: the coverage
    converges to it as the number of samples grows."""
    P, N = 60, 4000
    basis = _known_plane(N, P, seed=7)
    fields = torch.randn(N, k, P, generator=_gen(8), dtype=DTYPE)
    errors = []
    for n in (250, 4000):
        errors.append(abs(coverage(fields[:n], basis[:n]) - k / P))
    # the standard error of the mean shrinks with sqrt(N): at N = 4000 within 4 of them
    per_sample_sd = math.sqrt(2 * k / P**2)  # order of the spread of one sample's coverage
    assert errors[-1] < 4 * per_sample_sd / math.sqrt(N)
    assert field_rank(fields) == float(k)


def test_field_rank_of_vanishing_fields_is_zero():
    assert field_rank(torch.zeros(4, 2, 5, dtype=DTYPE)) == 0.0


def test_random_invariance_matches_random_directions():
    P = 25
    assert random_invariance(P) == pytest.approx(math.sqrt(2 / (math.pi * P)), rel=0.03)
    u = torch.randn(200_000, P, generator=_gen(9), dtype=DTYPE)
    mc = float((u[:, 0].abs() / u.norm(dim=1)).mean())
    assert random_invariance(P) == pytest.approx(mc, rel=0.01)
    with pytest.raises(ValueError, match="`P`"):
        random_invariance(0)


def _scores(**over):
    base = {
        "invariance_median": 0.01,
        "invariance_p90": 0.05,
        "v_norm_mean": 1.05,
        "flow_drift_ratio": 0.02,
        "identity_error": 0.001,
        "associativity_error": 0.01,
        "field_rank": 3.0,
        "coverage": 0.97,
        "energy_outside": 0.01,
    }
    return base | over


def test_verdict_passes_a_symmetry_and_lists_baselines():
    v = verdict(_scores(), 20, k=3, known_dim=3)
    assert v.passed and v.symmetry
    rows = {r["metric"]: r for r in v.rows}
    assert rows["invariance_median"]["random"] == pytest.approx(random_invariance(20))
    assert rows["flow_drift_ratio"]["random"] == 1.0
    assert rows["coverage"]["random"] == pytest.approx(3 / 20)
    assert rows["energy_outside"]["random"] == pytest.approx(1 - 3 / 20)
    assert rows["identity_error"]["passed"] is None  # no target: shown, not judged
    text = v.report()
    assert "invariance_median" in text and "pass" in text and "FAIL" not in text
    assert "P = 20" in text and str(v) == text


def test_verdict_fails_what_misses_its_target():
    """The tanh net of the issue: invariance 0.022 and drift 0.13 is no symmetry."""
    v = verdict(_scores(invariance_median=0.022, flow_drift_ratio=0.13, field_rank=2.0), 20, k=3)
    rows = {r["metric"]: r for r in v.rows}
    assert rows["invariance_median"]["passed"] is True
    assert rows["flow_drift_ratio"]["passed"] is False
    assert rows["field_rank"]["passed"] is False and rows["field_rank"]["target"] == ">= 3"
    assert not v.passed and not v.symmetry
    assert "FAIL" in v.report() and "not a symmetry" in v.report()
    collapsed = verdict(_scores(v_norm_mean=0.08), 20)
    assert {r["metric"]: r for r in collapsed.rows}["v_norm_mean"]["passed"] is False
    loose = verdict(
        _scores(flow_drift_ratio=0.13), 20, thresholds={"flow_drift_ratio": ("<=", 0.2)}
    )
    assert loose.symmetry
    assert set(THRESHOLDS) <= set(REPORT_ORDER)  # every target appears in the report


def test_verdict_argument_errors():
    with pytest.raises(TypeError, match="`scores`"):
        verdict([0.1], 3)
    with pytest.raises(ValueError, match="`P`"):
        verdict({}, 0)
    with pytest.raises(TypeError, match="`k`"):
        verdict({}, 3, k=1.5)
    with pytest.raises(ValueError, match="`beta`"):
        verdict({}, 3, beta=0.0)


def test_evaluate_adds_rank_and_coverage_with_the_known_action():
    """The known GL(2) action of a linear net, its 4 unit generators: rank 4, coverage 1."""
    from symdisc.known import KnownAction, tangent_basis
    from symdisc.losses import two_layer
    from symdisc.sampler import sample

    loss = two_layer("identity", 2, 2, 2, 2)
    samples = sample(loss, 64, seed=0, dtype=DTYPE)
    action = KnownAction(loss, "gl")
    h = torch.eye(4).reshape(4, 2, 2).to(samples.theta)
    basis = torch.vmap(tangent_basis(loss, "gl"))(samples.theta, samples.X)
    scores = evaluate(loss, action, h, samples, known_basis=basis)
    assert scores["field_rank"] == 4.0
    assert scores["coverage"] == pytest.approx(1.0, abs=1e-5)
    assert scores["invariance_median"] < 1e-5
    half = evaluate(loss, action, h[:1].expand(2, 2, 2).clone(), samples, known_basis=basis)
    assert half["field_rank"] == 1.0 and half["coverage"] == pytest.approx(0.25, abs=1e-5)
    assert "coverage" not in evaluate(loss, action, h, samples)
    assert verdict(scores, loss.num_params, k=4, known_dim=4).symmetry


def test_generator_figure_has_no_title_and_a_known_row():
    from symdisc import plot

    h = torch.randn(3, 3, 3, generator=_gen(10))
    known = torch.diag_embed(torch.eye(3))
    fig = plot.generators(h, known=known, title="relu_h3", known_title="rescaling")
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(axes) == 6 and fig._suptitle is None
    titles = [ax.get_title() for ax in axes]
    assert titles == ["$h_{1}$", "$h_{2}$", "$h_{3}$", "$A_{1}$", "$A_{2}$", "$A_{3}$"]
    assert all(ax.get_xlabel() == "column j" for ax in axes)
    assert "relu_h3" in axes[0].get_ylabel() and "rescaling" in axes[3].get_ylabel()
    texts = [t.get_text() for t in axes[3].texts]
    assert texts.count("1.00") == 1 and texts.count("0") == 8  # canonical E_11
    one_row = plot.generators(h[:2])
    assert len([ax for ax in one_row.axes if ax.get_label() != "<colorbar>"]) == 2
    with pytest.raises(ValueError, match="`known`"):
        plot.generators(h, known=torch.eye(2)[None])
