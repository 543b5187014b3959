"""The Laplace benchmark script runs end to end on its --quick workload, peers or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import check_bench_report, run_quick

TASKS = ("kron_marglik", "full_marglik", "kron_reeval")
BACKENDS = ("backpack", "asdl", "curvlinops", "asdfghjkl")

# Runs the script with every `laplace` import failing, as if laplace-torch were not installed.
WITHOUT_LAPLACE = """
import runpy, sys
from importlib.abc import MetaPathFinder

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "laplace" or name.startswith("laplace."):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, Block())
sys.argv = [sys.argv[1], *sys.argv[2:]]
sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])  # as `python script.py` would
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run(out: Path, *, without_laplace: bool = False) -> dict:
    """The report of a --quick run on one thread (the run must exit cleanly)."""
    python = ("-c", WITHOUT_LAPLACE) if without_laplace else ()
    report, _ = run_quick("bench_laplace", out, 600, args=("--threads", "1"), python=python)
    return report


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench_laplace")
    report = run(out)
    return report, (out / "bench_laplace.md").read_text()


def test_quick_benchmark_report(quick_run):
    report, md = quick_run
    check_bench_report(report, "laplace")
    assert {"torch", "threads", "device", "python", "peers"} <= set(report["environment"])
    assert set(report["workload"]) == {"mlp", "resnet"}
    for described in report["workload"].values():
        assert {"model", "N", "P", "final_loss", "reference"} <= set(described)

    triples = [(row["workload"], row["task"], row["method"]) for row in report["rows"]]
    assert len(triples) == len(set(triples)), "a (workload, task, method) row appears twice"
    for workload, tasks in (("mlp", TASKS), ("resnet", ("kron_marglik",))):
        for task in tasks:
            methods = {m for w, t, m in triples if (w, t) == (workload, task)}
            assert {"ours", *(f"laplace_{b}" for b in BACKENDS)} <= methods
        assert (workload, "gradient", "torch_autograd") in triples
    assert {t for w, t, _ in triples if w == "resnet"} == {"gradient", "kron_marglik"}

    for row in report["rows"]:
        if "error" in row:
            assert row["method"] != "ours", row
            assert isinstance(row["error"], str) and row["error"]
            continue
        assert row["median_s"] > 0 and len(row["runs_s"]) == 1  # --quick: one repeat
        assert row["gradients"] > 0
        if row["task"] == "gradient":
            assert row["gradients"] == 1.0 and "abs_error" not in row
            continue
        assert row["abs_error"] >= 0
        if row["method"] == "ours":
            assert row["abs_error"] <= 1e-3, row  # nats, against the float64 brute force
            assert row["agrees"] is True and row["peak_mb"] >= 0
        if row["task"] == "kron_reeval":
            assert len(row["grad"]) == 6 and row["grad_error"] >= 0
    ours_reeval = next(
        r for r in report["rows"] if r["task"] == "kron_reeval" and r["method"] == "ours"
    )
    assert ours_reeval["grad_error"] <= 1e-3

    reference = report["workload"]["mlp"]["reference"]
    for key in ("ours64_kron_abs_error", "ours64_full_abs_error", "ours64_kron_reeval_abs_error"):
        assert reference[key] <= 1e-8, (key, reference[key])
    assert report["workload"]["resnet"]["reference"]["ours64_kron_abs_error"] <= 1e-8
    assert len(report["config"]["tasks"]) == 7  # gradient and six timed against laplace-torch
    assert [(t["workload"], t["task"]) for t in report["targets"]] == [
        *(("mlp", task) for task in report["config"]["tasks"] if task != "gradient"),
        ("resnet", "kron_marglik"),
    ]
    for target in report["targets"]:
        assert {"task", "criterion", "value", "pass"} <= set(target)
        assert target["pass"] is None  # ratios are not judged on --quick
    assert md.startswith("# Laplace marginal-likelihood benchmark")


def test_quick_benchmark_without_laplace_torch(tmp_path):
    report = run(tmp_path, without_laplace=True)
    for row in report["rows"]:
        if row["task"] == "gradient":
            assert "error" not in row, row
        elif row["method"] == "ours":
            assert "error" not in row and row["abs_error"] <= 1e-3, row
        else:
            assert row["error"] == "not installed: laplace", row
    assert all(t["value"] is None and t["pass"] is None for t in report["targets"])


PREDICTIVE_TASKS = ("glm_predictive", "glm_predictive_full", "last_layer_fit")


def test_quick_benchmark_predictive_tasks(quick_run):
    """The tasks of ella's predictive API (issue 17), run where ella has it."""
    report, md = quick_run
    tasks = report["config"]["tasks"]
    assert set(PREDICTIVE_TASKS) <= set(tasks)
    reference = report["workload"]["mlp"]["reference"]
    assert reference["n_test"] == 100  # --quick
    for key in ("ours64_glm_kron_abs_error", "ours64_glm_full_abs_error"):
        assert reference[key] <= 1e-10, (key, reference[key])
    assert reference["ours64_last_layer_abs_error"] <= 1e-8
    rows = {(r["task"], r["method"]): r for r in report["rows"] if r["workload"] == "mlp"}
    for task in PREDICTIVE_TASKS:
        ours = rows[(task, "ours")]
        assert "error" not in ours and ours["agrees"] is True, ours
        bound = 1e-4 if task.startswith("glm_") else 1e-3
        assert ours["abs_error"] <= bound, ours
        assert ("value" in ours) == (task == "last_layer_fit")
        curvlinops = rows[(task, "laplace_curvlinops")]
        if "error" not in curvlinops:  # the peer matches the same reference
            assert curvlinops["abs_error"] <= bound, curvlinops
    assert {t["task"] for t in report["targets"]} == set(tasks) - {"gradient"}
    assert "glm_predictive" in md
