"""The layer benchmark script runs end to end on its --quick workload and writes its JSON and
markdown; its two F-FC formulations agree (the script exits 1 otherwise)."""

from __future__ import annotations

from pathlib import Path

from conftest import check_bench_report, run_quick

FFC_TASKS = ("ffc_layer_fwd_bwd", "ffc_layer1_fwd_bwd")
ROW_KEYS = {"task", "method", "median_s", "runs_s", "peak_mb", "params"}


def test_quick_benchmark(tmp_path: Path) -> None:
    report, stdout = run_quick("bench_layers", tmp_path, timeout=120)
    check_bench_report(report, "layers")
    assert report["workload"]["alpha"] == 1 and report["workload"]["batch"] == 8

    for row in report["rows"]:
        assert ROW_KEYS <= set(row), row
        assert row["median_s"] > 0 and len(row["runs_s"]) >= 3
        assert row["params"] > 0
        assert row["peak_mb"] is not None

    pairs = {(r["task"], r["method"]) for r in report["rows"]}
    assert {("conv_fwd_bwd", "ours"), ("ffc_fwd_bwd", "ours")} <= pairs
    for task in FFC_TASKS:
        assert {(task, "ours"), (task, "block_diag")} <= pairs
        params = {r["params"] for r in report["rows"] if r["task"] == task}
        assert len(params) == 1  # the same layer, the same parameters
        errors = report["config"]["agreement"][task]
        assert max(errors.values()) <= 1e-10, errors

    assert {t["task"] for t in report["targets"]} == set(FFC_TASKS)
    assert all(t["pass"] is None for t in report["targets"])  # not judged on --quick

    table = (tmp_path / "bench_layers.md").read_text()
    assert "| task | method | params | median ms | peak MB |" in table
    assert table.strip() in stdout
