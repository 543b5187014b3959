"""The data-parallel benchmark runs end to end on --quick, with 1 and 2 gloo ranks started by
the script itself and with 2 ranks started by ``torchrun``; the ranks' answers agree with one
plain process (the script exits 1 otherwise)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import check_bench_report, run_quick

TASKS = {"hvp", "kfac_factors", "kron_marglik", "trace_100", "top5_eigenvalues"}
ROW_KEYS = {"task", "method", "median_s", "runs_s", "rel_error"}


def _check_rows(rows: list[dict], methods: set[str]) -> None:
    assert {(r["task"], r["method"]) for r in rows} == {(t, m) for t in TASKS for m in methods}
    for row in rows:
        assert ROW_KEYS <= set(row), row
        assert row["median_s"] > 0 and len(row["runs_s"]) == 2
        assert row["rel_error"] <= 1e-5, row  # float32 sums in another order


def test_quick_benchmark_spawns_1_and_2_ranks(tmp_path: Path) -> None:
    report, stdout = run_quick("bench_distributed", tmp_path, timeout=300, args=["--threads", "1"])
    check_bench_report(report, "distributed")
    _check_rows(report["rows"], {"1_rank", "2_ranks"})
    assert report["config"]["world_sizes"] == [1, 2]
    assert report["config"]["backend"] == "gloo"
    assert all(r["rel_error"] == 0.0 for r in report["rows"] if r["method"] == "1_rank")
    table = (tmp_path / "bench_distributed.md").read_text()
    assert "| task | method | median_s | rel_error |" in table
    assert table.strip() in stdout


def test_quick_benchmark_under_torchrun(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    root = Path(__file__).resolve().parents[2]
    script = str(root / "experiments" / "bench_distributed.py")
    flags = ["--quick", "--threads", "1", "--out", str(tmp_path)]
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", script, *flags],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "bench_distributed.json").read_text())
    check_bench_report(report, "distributed")
    assert report["config"]["launcher"] == "torchrun"
    _check_rows(report["rows"], {"2_ranks"})
