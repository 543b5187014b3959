"""experiments/calibration.py (issue 17): a --quick run's results.json and reliability diagrams."""

from __future__ import annotations

import math

import pytest

from conftest import run_quick
from ella.laplace import Laplace

ALL = ("map", "laplace_kron", "laplace_last_layer", "lila_map", "lila_laplace")
#: the Laplace rows need ella's predictive API (Laplace.predictive)
HAS_PREDICTIVE = hasattr(Laplace, "predictive")
METHODS = ALL if HAS_PREDICTIVE else ("map", "lila_map")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration")
    report, _ = run_quick("calibration", out, 600, args=("--methods", *METHODS))
    return report, out


def test_quick_run_records_every_method_and_test_set(quick_run):
    report, out = quick_run
    assert report["experiment"] == "calibration"
    config = report["config"]
    assert config["quick"] is True and config["methods"] == list(METHODS)
    assert set(report["cases"]) == {f"{t}/{m}" for t in ("original", "rotated") for m in METHODS}
    for name, case in report["cases"].items():
        n_test = config["n_test"]
        assert 0.0 <= case["accuracy"] <= 100.0
        assert 0.0 < case["nll"] < 50.0 and 0.0 <= case["ece"] <= 1.0
        assert 0.0 <= case["brier"] <= 2.0
        bins = case["bins"]
        assert len(bins["count"]) == config["n_bins"] and sum(bins["count"]) == n_test, name
        # the ECE and the accuracy are those of the recorded bins
        ece = sum(
            n / n_test * abs(a - c)
            for c, a, n in zip(bins["confidence"], bins["accuracy"], bins["count"])
            if n > 0
        )
        assert math.isclose(case["ece"], ece, abs_tol=1e-9), name
        hits = sum(a * n for a, n in zip(bins["accuracy"], bins["count"]) if n > 0)
        assert math.isclose(case["accuracy"], 100.0 * hits / n_test, abs_tol=1e-6), name
        assert all((c is None) == (n == 0) for c, n in zip(bins["confidence"], bins["count"])), name
    # the rotated digits are the original ones rotated: the MAP network loses accuracy
    cases = report["cases"]
    assert cases["rotated/map"]["accuracy"] < cases["original/map"]["accuracy"]
    for test_set in ("original", "rotated"):
        assert (out / f"reliability_{test_set}.png").stat().st_size > 1000
    assert report["timings"]["total_s"] > 0


@pytest.mark.skipif(not HAS_PREDICTIVE, reason="ella's predictive API not built yet")
def test_quick_run_laplace_rows(quick_run):
    report, _ = quick_run
    cases = report["cases"]
    for method in ("laplace_kron", "laplace_last_layer", "lila_laplace"):
        for test_set in ("original", "rotated"):
            case = cases[f"{test_set}/{method}"]
            assert case["prior_precision"] and all(v > 0 for v in case["prior_precision"].values())
    # the GLM predictive keeps the MAP's decisions mostly (probit only shrinks the logits)
    base = cases["original/map"]["accuracy"]
    assert abs(cases["original/laplace_kron"]["accuracy"] - base) <= 10.0
    targets = report["config"]["targets"]
    assert set(targets) == {"laplace_kron", "laplace_last_layer", "lila_laplace"}
    for verdict in targets.values():
        assert {"nll_gain", "ece_gain"} <= set(verdict)
