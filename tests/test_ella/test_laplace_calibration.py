"""Calibration metrics (ella.laplace.calibration) against hand-computed cases and brute-force
loops in float64, their argument errors, and the reliability diagram (ella.plot)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ella.laplace.calibration import (
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)

F64 = torch.float64


def random_case(n: int = 200, c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = 2.5 * torch.randn(n, c, generator=g, dtype=F64)
    return torch.softmax(logits, 1), torch.randint(0, c, (n,), generator=g)


# ---------------------------------------------------------------------------------------------
# hand-computed cases
# ---------------------------------------------------------------------------------------------

HAND_P = torch.tensor(
    [[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.25, 0.25, 0.5], [0.9, 0.05, 0.05]], dtype=F64
)
HAND_Y = torch.tensor([0, 0, 2, 1])


def test_hand_nll_and_brier():
    p, y = HAND_P.to(F64), HAND_Y
    nll = -(math.log(0.7) + math.log(0.3) + math.log(0.5) + math.log(0.05)) / 4
    assert negative_log_likelihood(p, y).item() == pytest.approx(nll, abs=1e-14)
    brier = (
        (0.3**2 + 0.2**2 + 0.1**2)
        + (0.7**2 + 0.6**2 + 0.1**2)
        + (0.25**2 + 0.25**2 + 0.5**2)
        + (0.9**2 + 0.95**2 + 0.05**2)
    ) / 4
    assert brier_score(p, y).item() == pytest.approx(brier, abs=1e-14)


def test_hand_bins_and_ece():
    # confidences 0.7, 0.6, 0.5, 0.9; correct: yes, no, yes, no; 5 bins of width 0.2:
    # (0.4, 0.6] holds 0.6 and 0.5 (0.6 on the right edge), (0.6, 0.8] 0.7, (0.8, 1] 0.9
    conf, acc, count = reliability_bins(HAND_P.to(F64), HAND_Y, n_bins=5)
    assert count.tolist() == [0, 0, 2, 1, 1]
    assert count.dtype == torch.int64
    assert torch.isnan(conf[:2]).all() and torch.isnan(acc[:2]).all()
    assert conf[2:].tolist() == pytest.approx([0.55, 0.7, 0.9], abs=1e-14)
    assert acc[2:].tolist() == pytest.approx([0.5, 1.0, 0.0], abs=1e-14)
    ece = 2 / 4 * abs(0.5 - 0.55) + 1 / 4 * abs(1.0 - 0.7) + 1 / 4 * abs(0.0 - 0.9)
    assert expected_calibration_error(HAND_P.to(F64), HAND_Y, 5).item() == pytest.approx(
        ece, abs=1e-14
    )


def test_perfect_and_worst_predictions():
    y = torch.tensor([0, 1, 2, 1])
    onehot = torch.nn.functional.one_hot(y, 3).to(F64)
    assert negative_log_likelihood(onehot, y).item() == 0.0
    assert brier_score(onehot, y).item() == 0.0
    assert expected_calibration_error(onehot, y).item() == 0.0
    wrong = onehot.roll(1, dims=1)  # all the mass on a wrong class
    assert brier_score(wrong, y).item() == 2.0
    assert expected_calibration_error(wrong, y).item() == 1.0
    # a zero probability for the target: -log(tiny), finite
    nll = negative_log_likelihood(wrong, y).item()
    assert nll == pytest.approx(-math.log(torch.finfo(F64).tiny))


def test_uniform_prediction_is_calibrated_at_chance():
    # uniform over C classes: confidence 1/C; with targets such that argmax (class 0) is right
    # for exactly a 1/C share, the ECE is 0
    c = 4
    p = torch.full((8, c), 1.0 / c, dtype=F64)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    assert expected_calibration_error(p, y).item() == pytest.approx(0.0, abs=1e-15)
    assert negative_log_likelihood(p, y).item() == pytest.approx(math.log(c), abs=1e-14)
    assert brier_score(p, y).item() == pytest.approx(1 - 1 / c, abs=1e-14)


# ---------------------------------------------------------------------------------------------
# brute-force loops
# ---------------------------------------------------------------------------------------------


def brute(p: torch.Tensor, y: torch.Tensor, n_bins: int):
    P, Y = p.tolist(), y.tolist()
    n = len(Y)
    nll = sum(-math.log(P[i][Y[i]]) for i in range(n)) / n
    brier = sum(sum((P[i][c] - (c == Y[i])) ** 2 for c in range(len(P[i]))) for i in range(n)) / n
    members: list[list[int]] = [[] for _ in range(n_bins)]
    for i in range(n):
        conf = max(P[i])
        for b in range(n_bins):
            lo, hi = b / n_bins, (b + 1) / n_bins
            if lo < conf <= hi or (b == 0 and conf == 0.0):
                members[b].append(i)
                break
    conf_b, acc_b, count_b, ece = [], [], [], 0.0
    for idx in members:
        count_b.append(len(idx))
        if not idx:
            conf_b.append(math.nan)
            acc_b.append(math.nan)
            continue
        confs = [max(P[i]) for i in idx]
        hits = [int(P[i].index(max(P[i])) == Y[i]) for i in idx]
        conf_b.append(sum(confs) / len(idx))
        acc_b.append(sum(hits) / len(idx))
        ece += len(idx) / n * abs(acc_b[-1] - conf_b[-1])
    return nll, brier, conf_b, acc_b, count_b, ece


@pytest.mark.parametrize("n_bins", [1, 7, 15])
@pytest.mark.parametrize("seed", [0, 1])
def test_against_brute_force(n_bins, seed):
    p, y = random_case(seed=seed)
    nll, brier, conf_b, acc_b, count_b, ece = brute(p, y, n_bins)
    assert negative_log_likelihood(p, y).item() == pytest.approx(nll, abs=1e-12)
    assert brier_score(p, y).item() == pytest.approx(brier, abs=1e-12)
    conf, acc, count = reliability_bins(p, y, n_bins)
    assert count.tolist() == count_b and int(count.sum()) == len(y)
    np.testing.assert_allclose(conf.numpy(), conf_b, atol=1e-12)  # NaNs at the same places
    np.testing.assert_allclose(acc.numpy(), acc_b, atol=1e-12)
    assert expected_calibration_error(p, y, n_bins).item() == pytest.approx(ece, abs=1e-12)


def test_confidence_on_bin_edges():
    # confidences exactly 0.5 and 1.0 fall in the bins they close, (0.25, 0.5] and (0.75, 1]
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]], dtype=F64)
    y = torch.tensor([0, 0, 0])
    _, _, count = reliability_bins(p, y, 4)
    assert count.tolist() == [0, 1, 0, 2]


def test_float32_and_differentiable():
    p, y = random_case()
    p32 = p.float().requires_grad_(True)
    value = negative_log_likelihood(p32, y)
    assert value.dtype == torch.float32
    value.backward()
    assert p32.grad is not None and torch.isfinite(p32.grad).all()
    assert brier_score(p.float(), y).item() == pytest.approx(brier_score(p, y).item(), abs=1e-6)
    assert expected_calibration_error(p.float(), y).item() == pytest.approx(
        expected_calibration_error(p, y).item(), abs=1e-6
    )


# ---------------------------------------------------------------------------------------------
# argument errors
# ---------------------------------------------------------------------------------------------

FUNCTIONS = [negative_log_likelihood, brier_score, expected_calibration_error, reliability_bins]


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_argument_errors(fn):
    p, y = random_case(n=10)
    with pytest.raises(ValueError, match="`targets`.*\\(10,\\)"):
        fn(p, y[:9])
    with pytest.raises(ValueError, match="`probs`.*\\(N, C\\)"):
        fn(p[0], y)
    with pytest.raises(ValueError, match="`probs` rows must sum to 1.*logits"):
        fn(p * 0.9, y)
    with pytest.raises(ValueError, match="`probs` rows must sum to 1"):
        fn(p**2, y)  # entries in [0, 1], rows not normalised
    with pytest.raises(ValueError, match="`probs` must lie in \\[0, 1\\]"):
        fn(torch.cat([p[:-1], torch.tensor([[1.2, -0.2, 0.0, 0.0]], dtype=F64)]), y)
    with pytest.raises(ValueError, match="`targets` must be class indices in \\[0, 4\\)"):
        fn(p, y + 4)
    with pytest.raises(ValueError, match="`probs` must be finite"):
        fn(torch.full_like(p, float("nan")), y)
    with pytest.raises(TypeError, match="`targets` must be an integer tensor"):
        fn(p, y.double())
    with pytest.raises(TypeError, match="`probs` must be a floating-point tensor"):
        fn(y[:, None].expand(10, 4), y)
    with pytest.raises(TypeError, match="`probs` must be"):
        fn(p.numpy(), y)


def test_n_bins_errors():
    p, y = random_case(n=10)
    with pytest.raises(ValueError, match="`n_bins`"):
        expected_calibration_error(p, y, 0)
    with pytest.raises(TypeError, match="`n_bins`"):
        reliability_bins(p, y, 2.0)


# ---------------------------------------------------------------------------------------------
# the reliability diagram
# ---------------------------------------------------------------------------------------------


def test_reliability_diagram_draws_the_bins(tmp_path):
    from ella.plot import reliability_diagram, save

    p, y = random_case(seed=3)
    bins_a = reliability_bins(p, y, 10)
    bins_b = reliability_bins(HAND_P, HAND_Y, 10)
    fig = reliability_diagram({"MAP": bins_a, "Laplace": bins_b}, title="test set")
    top, bottom = fig.axes
    diagonal, line_a, line_b = top.lines
    np.testing.assert_allclose(diagonal.get_xydata(), [[0, 0], [1, 1]])
    filled = bins_a[2] > 0
    np.testing.assert_allclose(line_a.get_xdata(), bins_a[0][filled].numpy())
    np.testing.assert_allclose(line_a.get_ydata(), bins_a[1][filled].numpy())
    assert line_b.get_xdata().tolist() == pytest.approx([0.5, 0.6, 0.7, 0.9])  # 4 of 10 bins
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    ece_a = expected_calibration_error(p, y, 10).item()
    assert labels == [
        "perfect calibration",
        f"MAP (ECE {ece_a:.3f})",
        f"Laplace (ECE {expected_calibration_error(HAND_P, HAND_Y, 10).item():.3f})",
    ]
    share_a, _ = bottom.lines
    np.testing.assert_allclose(share_a.get_xdata(), (np.arange(10) + 0.5) / 10)
    np.testing.assert_allclose(share_a.get_ydata(), bins_a[2].numpy() / len(y))
    assert top.get_title() == "test set"
    save(fig, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_reliability_diagram_rejects_malformed_input():
    from ella.plot import reliability_diagram

    good = ([0.5, 0.9], [0.4, 1.0], [3, 1])
    with pytest.raises(ValueError, match="at least one method"):
        reliability_diagram({})
    with pytest.raises(TypeError, match="`results` must be a mapping"):
        reliability_diagram([good])
    with pytest.raises(TypeError, match="`results\\['a'\\]` must be a .* triple"):
        reliability_diagram({"a": good[:2]})
    with pytest.raises(ValueError, match="same number of bins"):
        reliability_diagram({"a": good, "b": ([0.5], [0.5], [2])})
    with pytest.raises(ValueError, match="`results\\['a'\\]`: confidence, accuracy and count"):
        reliability_diagram({"a": ([0.5, 0.9], [0.4], [3, 1])})
    with pytest.raises(ValueError, match="counts must be non-negative integers"):
        reliability_diagram({"a": ([0.5, 0.9], [0.4, 1.0], [3, -1])})
    with pytest.raises(ValueError, match="counts must be non-negative integers"):
        reliability_diagram({"a": ([0.5, 0.9], [0.4, 1.0], [0, 0])})
    with pytest.raises(ValueError, match="accuracy must lie in \\[0, 1\\]"):
        reliability_diagram({"a": ([0.5, 0.9], [0.4, 1.5], [3, 1])})
    with pytest.raises(ValueError, match="confidence must lie in \\[0, 1\\]"):
        reliability_diagram({"a": ([float("nan"), 0.9], [0.4, 1.0], [3, 1])})
    # NaN in an empty bin is fine, and left out of the diagram
    fig = reliability_diagram({"a": ([float("nan"), 0.9], [float("nan"), 1.0], [0, 1])})
    assert fig.axes[0].lines[1].get_xdata().tolist() == [0.9]
