"""The discovery experiment scripts run end to end on --quick and write results.json with the
case and metric names the issue fixes."""

from __future__ import annotations

import pytest

from conftest import run_quick

COMMON = {
    "invariance_median",
    "invariance_p90",
    "v_norm_mean",
    "flow_drift_ratio",
    "identity_error",
    "associativity_error",
    "field_rank",
}
KNOWN = {"energy_outside", "coverage"}
EXPECTED = {
    "rescaling": {
        "linear_1x1": COMMON | KNOWN | {"cos_true"},
        "linear_h2": COMMON | KNOWN,
        "relu_h3": COMMON | KNOWN,
        "linear_fig5": COMMON | KNOWN,
        "relu_deep": COMMON | KNOWN,
    },
    "data_dependent": {"sigmoid_3x3": COMMON, "tanh_2layer": COMMON, "tanh_skip": COMMON},
    "lift": {
        name: {"invariance_median", "invariance_p90", "identity_error"}
        for name in ("small", "wide", "deep")
    },
}
PLOTS = {
    "rescaling": lambda case: [f"{case}_{s}.png" for s in ("generators", "training", "flow")],
    "data_dependent": lambda case: [f"{case}_{s}.png" for s in ("generators", "training", "flow")],
    "lift": lambda case: ["lift_generators.png", "lift_invariance.png"],
}


@pytest.mark.parametrize("experiment", sorted(EXPECTED))
def test_quick_run_writes_results_and_plots(experiment, tmp_path):
    record, _ = run_quick(experiment, tmp_path)
    assert record["experiment"] == experiment
    assert {"config", "environment", "cases", "timings"} <= set(record)
    assert record["config"]["quick"] is True and "total_s" in record["timings"]
    assert set(record["cases"]) == set(EXPECTED[experiment])
    for case, metrics in EXPECTED[experiment].items():
        scores = record["cases"][case]
        assert metrics <= set(scores), (case, metrics - set(scores))
        assert all(isinstance(scores[m], float) for m in metrics)
        for png in PLOTS[experiment](case):
            assert (tmp_path / png).stat().st_size > 1000
