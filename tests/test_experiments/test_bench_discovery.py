"""The discovery benchmark script runs end to end on its --quick workload, and its three
formulations of the objective agree."""

from __future__ import annotations

import math
from pathlib import Path

from conftest import check_bench_report, run_quick

TASKS = ("linear_1x1", "sigmoid_3x3")
METHODS = ("ours", "loop_autograd", "batched_autograd")  # --quick leaves out ours_compiled


def test_quick_benchmark(tmp_path: Path) -> None:
    report, stdout = run_quick("bench_discovery", tmp_path, timeout=120)
    check_bench_report(report, "discovery")
    assert report["environment"]["threads"] == 1
    assert report["workload"]["batch"] == 64
    assert report["workload"]["hidden"] == [64, 64, 64]

    pairs = [(r["task"], r["method"]) for r in report["rows"]]
    assert sorted(pairs) == sorted((t, m) for t in TASKS for m in METHODS)
    for row in report["rows"]:
        assert {"median_s", "runs_s", "steps_per_s", "speedup_vs_ours", "objective"} <= set(row)
        assert row["steps_per_s"] > 0 and math.isclose(row["steps_per_s"], 1 / row["median_s"])
        assert len(row["runs_s"]) >= 1

    for task in TASKS:
        objectives = {r["method"]: r["objective"] for r in report["rows"] if r["task"] == task}
        for method in METHODS:
            assert math.isclose(objectives[method], objectives["ours"], rel_tol=1e-4), objectives
        ours = next(r for r in report["rows"] if (r["task"], r["method"]) == (task, "ours"))
        assert ours["speedup_vs_ours"] == 1.0

    criteria = {(t["task"], t["criterion"]) for t in report["targets"]}
    assert criteria == {
        (task, c)
        for task in TASKS
        for c in ("ours >= 20x loop_autograd", "ours >= 1.5x batched_autograd")
    }
    assert all(t["pass"] is None for t in report["targets"])  # speed is not judged on --quick

    table = (tmp_path / "bench_discovery.md").read_text()
    assert "| task | method | steps/s | ratio ours/method | objective |" in table
    assert table.strip() in stdout
