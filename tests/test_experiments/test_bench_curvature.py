"""The curvature benchmark script runs end to end on its --quick workload, peers or not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import check_bench_report, run_quick
from symdisc.curvature import slq_density

EXPECTED_ROWS = {
    ("top5_eigenvalues", "ours"),
    ("top5_eigenvalues", "pyhessian"),
    ("top5_eigenvalues", "curvlinops"),
    ("trace_100", "ours"),
    ("trace_100", "pyhessian"),
    ("trace_100", "curvlinops"),
    ("slq_100", "ours"),
    ("slq_100", "hessian_eigenthings"),
    ("slq_100", "pyhessian"),
    ("full_spectrum", "ours"),
    ("full_spectrum", "torch_func_hessian"),
    ("sharpness", "ours"),
}
PEERS = ("pyhessian", "curvlinops", "hessian_eigenthings")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The report of one --quick run (the run must exit cleanly), and its output folder."""
    out = tmp_path_factory.mktemp("bench_curvature")
    report, _ = run_quick("bench_curvature", out)
    return report, out


def test_quick_benchmark_report(quick_run):
    report, out = quick_run
    check_bench_report(report, "curvature")
    assert {"torch", "threads", "device", "python", "peers"} <= set(report["environment"])
    assert {"model", "N", "P", "final_loss"} <= set(report["workload"])

    pairs = [(row["task"], row["method"]) for row in report["rows"]]
    assert len(pairs) == len(set(pairs)), "a (task, method) pair appears twice"
    assert set(pairs) == EXPECTED_ROWS

    for row in report["rows"]:
        if row["method"] == "ours":
            assert "error" not in row, row
            assert row["median_s"] > 0 and len(row["runs_s"]) >= 3
        elif "error" not in row:
            assert row["median_s"] > 0
        if "error" in row and row["method"] in PEERS and row["error"].startswith("not installed"):
            assert row["error"] == f"not installed: {row['method']}"
    top5 = next(
        r for r in report["rows"] if r["task"] == "top5_eigenvalues" and r["method"] == "ours"
    )
    assert top5["rel_error"] <= 1e-5
    for target in report["targets"]:
        assert {"task", "criterion", "value", "pass"} <= set(target)

    assert (out / "bench_curvature.md").read_text().startswith("# Curvature benchmark")
    assert (out / "spectrum.png").stat().st_size > 0


def test_plot_spectral_density_without_pyplot(tmp_path):
    from symdisc.plot import plot_spectral_density

    A = torch.diag(torch.linspace(0.0, 1.0, 60, dtype=torch.float64))
    density = slq_density(A, n_steps=20, generator=0)
    fig, ax = plot_spectral_density(density, torch.diagonal(A))
    assert ax.get_yscale() == "log"
    fig.savefig(tmp_path / "density.png")
    assert (tmp_path / "density.png").stat().st_size > 0


def test_plot_module_leaves_pyplot_alone():
    code = "import sys, symdisc.plot; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
