"""experiments/symmetry_dimension.py runs end to end on --quick with the issue's names."""

from __future__ import annotations

from conftest import run_quick

CASES = {"linear_h2": 4, "relu_h3": 3, "relu_deep": 6, "sigmoid_3x3": 0}


def test_quick_run_writes_dimension_and_null_dimension(tmp_path):
    record, _ = run_quick("symmetry_dimension", tmp_path)
    assert record["experiment"] == "symmetry_dimension"
    assert record["config"]["quick"] is True and "total_s" in record["timings"]
    assert set(record["cases"]) == set(CASES)
    for name, null_dim in CASES.items():
        scores = record["cases"][name]
        assert isinstance(scores["dimension"], float)
        assert scores["null_dimension"] == float(null_dim)  # the closed form, even on --quick
        evidence = scores["evidence"]
        assert 1 <= len(evidence) <= 2 and evidence[0]["k"] == 1
        for step in evidence:
            assert len(step["invariance"]) == step["k"] == len(step["singular_values"])
        assert scores["dimension"] <= len(evidence)
        assert scores["targets"]["dimension"]["want"] == f"== {null_dim}"
    assert (tmp_path / "dimension_evidence.png").stat().st_size > 1000
