"""The curvature benchmark script runs end to end on its --quick workload, peers or not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import check_bench_report, run_quick
from symdisc.curvature import slq_density

#: the rows of the MLP; the ResNet's are the same without full_spectrum, and on --quick without
#: the peers of the slow tasks (top5_eigenvalues, trace_100, slq_100)
MLP_ROWS = {
    ("gradient", "torch_autograd"),
    ("gradient", "ours"),
    ("hvp", "ours"),
    ("hvp", "curvlinops"),
    ("hvp", "pyhessian"),
    ("ggn_vp", "ours"),
    ("ggn_vp", "curvlinops"),
    ("ggn_vp", "backpack"),
    ("kfac_factors", "ours"),
    ("kfac_factors", "curvlinops"),
    ("kfac_factors", "laplace_backpack"),
    ("kfac_factors", "laplace_asdl"),
    ("kfac_factors", "laplace_curvlinops"),
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
SLOW_TASKS = ("top5_eigenvalues", "trace_100", "slq_100")
RESNET_QUICK_ROWS = {
    (task, method)
    for task, method in MLP_ROWS
    if task != "full_spectrum" and (task not in SLOW_TASKS or method == "ours")
}
PEERS = ("pyhessian", "curvlinops", "hessian_eigenthings", "backpack")
#: ours' answers that every --quick run checks against the float64 references
CHECKED = {"gradient": 1e-4, "hvp": 1e-3, "ggn_vp": 1e-4, "kfac_factors": 1e-4}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The report of one --quick run (the run must exit cleanly), and its output folder."""
    out = tmp_path_factory.mktemp("bench_curvature")
    report, _ = run_quick("bench_curvature", out, 900)
    return report, out


def test_quick_benchmark_report(quick_run):
    report, out = quick_run
    check_bench_report(report, "curvature")
    assert {"torch", "threads", "device", "python", "peers"} <= set(report["environment"])
    assert set(report["workload"]) == {"mlp", "resnet"}
    for described in report["workload"].values():
        assert {"model", "N", "P", "final_loss"} <= set(described)
    assert report["workload"]["resnet"]["model"].startswith("resnet")

    triples = [(row["workload"], row["task"], row["method"]) for row in report["rows"]]
    assert len(triples) == len(set(triples)), "a (workload, task, method) row appears twice"
    assert {(t, m) for w, t, m in triples if w == "mlp"} == MLP_ROWS
    assert {(t, m) for w, t, m in triples if w == "resnet"} == RESNET_QUICK_ROWS

    for row in report["rows"]:
        if row["method"] == "ours":
            assert "error" not in row, row
            assert row["median_s"] > 0 and len(row["runs_s"]) >= 3
            if row["task"] in CHECKED:
                assert row["rel_error"] <= CHECKED[row["task"]], row
                assert row["agrees"] is True
        if "error" not in row:
            assert row["median_s"] > 0 and row["gradients"] > 0
        if (row["task"], row["method"]) == ("gradient", "torch_autograd"):
            assert row["gradients"] == 1.0
        if "error" in row and row["method"] in PEERS and row["error"].startswith("not installed"):
            assert row["error"] == f"not installed: {row['method']}"
    for workload, bound in (("mlp", 1e-5), ("resnet", 1e-4)):
        top5 = next(
            r
            for r in report["rows"]
            if (r["workload"], r["task"], r["method"]) == (workload, "top5_eigenvalues", "ours")
        )
        assert top5["rel_error"] <= bound
    kfac_peaks = [r for r in report["rows"] if r["task"] == "kfac_factors" and "error" not in r]
    assert all(r["peak_mb"] >= 0 for r in kfac_peaks)
    for target in report["targets"]:
        assert {"workload", "task", "criterion", "value", "pass"} <= set(target)
        if target["criterion"].startswith("ours median_s") or "gradients" in target["criterion"]:
            assert target["pass"] is None  # ratios are not judged on --quick

    assert (out / "bench_curvature.md").read_text().startswith("# Curvature benchmark")
    assert (out / "spectrum.png").stat().st_size > 0
    assert (out / "spectrum_resnet.png").stat().st_size > 0


def test_explicit_kfac_matches_dense_ggn_for_one_sample():
    """The benchmarks' KFAC reference is exact for one sample of an MLP (no weight sharing):
    each layer's block A (x) G equals the dense GGN's diagonal block (float64)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
    from _workloads import explicit_kfac, make_mlp
    from symdisc.curvature import functional
    from symdisc.curvature.reference import dense_ggn

    torch.manual_seed(0)
    model = make_mlp((3, 4, 2)).double()
    X = torch.randn(1, 3, dtype=torch.float64)
    factors = explicit_kfac(model, X, chunk=1)
    f, params = functional(model)
    p = torch.softmax(model(X).detach(), dim=-1)
    H = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    dense = dense_ggn(f, params, X, H)
    offset = 0
    for A, G in factors.values():
        d_out, d_in = G.shape[0], A.shape[0]  # A has the bias row
        folded = torch.kron(G, A)  # [W | b] in row-major order
        grid = torch.arange(d_out * d_in).reshape(d_out, d_in)
        order = torch.cat([grid[:, :-1].reshape(-1), grid[:, -1]])
        size = d_out * d_in
        block = dense[offset : offset + size, offset : offset + size]
        torch.testing.assert_close(folded[order][:, order], block)
        offset += size


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
