"""experiments/training_dynamics.py (paper 003): the models' parameter counts and equivariance,
the curvature measures leaving the model untouched, and the --quick run's results.json."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_quick
from ella.dynamics import curvature_measures
from ella.dynamics.plume import PlumeConfig, next_frame_data, plume_dataset, rotate_fields
from ella.layers import equivariance_error

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

td = pytest.importorskip("training_dynamics")

DATASETS = ("symmetric", "broken")
MODELS = ("cnn", "gcnn", "relaxed_gcnn", "steerable", "rsteer")


def test_models_matched_in_size_and_gcnn_equivariant():
    counts = {m: sum(p.numel() for p in td.build_model(m, td.DEFAULT, 0).parameters())
              for m in MODELS}  # fmt: skip
    assert abs(counts["cnn"] - counts["relaxed_gcnn"]) / counts["relaxed_gcnn"] < 0.1
    assert counts["gcnn"] < counts["relaxed_gcnn"] < 2000  # small enough for a dense Hessian
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gcnn = td.build_model("gcnn", td.DEFAULT, 0).double()
    assert equivariance_error(gcnn, x, rotate_fields, rotate_fields) < 1e-12
    with pytest.raises(ValueError, match="name"):
        td.build_model("mlp", td.DEFAULT, 0)


def test_steerable_models_sized_and_equivariant():
    counts = {m: sum(p.numel() for p in td.build_model(m, td.DEFAULT, 0).parameters())
              for m in ("relaxed_gcnn", "steerable", "rsteer")}  # fmt: skip
    assert abs(counts["steerable"] - counts["relaxed_gcnn"]) / counts["relaxed_gcnn"] < 0.1
    assert counts["rsteer"] < 2000  # small enough for a dense Hessian
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for name in ("steerable", "rsteer"):  # rsteer: at initialisation
        model = td.build_model(name, td.DEFAULT, 0).double()
        assert equivariance_error(model, x, rotate_fields, rotate_fields) < 1e-12, name


def test_curvature_measures_agree_and_leave_the_model_alone(one_thread):
    config = PlumeConfig(size=8, n_plumes=1, n_frames=5)
    data = next_frame_data(plume_dataset("symmetric", config, 0), seed=0)
    model = td.build_model("relaxed_gcnn", td.QUICK, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data.train
    m = curvature_measures(model, x, y, radii=(0.01, 0.02), directions=3, hessian_samples=4,
                           top_k=2, slq_steps=10, dense=True)  # fmt: skip
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.dtype == torch.float32, k
    ev = torch.tensor(m["eigenvalues"])
    assert len(ev) == m["params"]
    assert m["top_eigs"][0] == pytest.approx(float(ev[-1]), rel=1e-5)  # Lanczos vs dense
    assert m["n_negative"] == int((ev < -1e-8 * ev.abs().max()).sum())
    assert m["sharpness"]["abs"] > 0 and m["sharpness_filter"]["abs"] > 0  # weights moved
    assert len(m["sharpness"]["abs_per_radius"]) == 2


def test_quick_run_writes_all_cases_and_metrics(tmp_path):
    record, _ = run_quick("training_dynamics", tmp_path, timeout=120)
    assert record["experiment"] == "training_dynamics"
    assert {"experiment", "config", "environment", "cases", "timings"} <= set(record)
    assert set(record["cases"]) == {f"{d}/{m}" for d in DATASETS for m in MODELS}
    keys = ["test_rmse", "sharpness_abs", "sharpness_rel", "top_eig"]
    for name, case in record["cases"].items():
        for key in keys + ["sharpness_filter_abs", "sharpness_filter_rel"]:
            for k in (key, f"{key}_se", f"{key}_early", f"{key}_se_early"):
                assert isinstance(case[k], float) and math.isfinite(case[k]), (name, k)
        assert case["test_rmse"] > 0 and case["sharpness_abs"] > 0
        assert isinstance(case["params"], int) and case["params"] > 0
        assert "n_negative_eigs" in case and "n_negative_eigs_early" in case
        neg = case["n_negative_eigs"]
        assert neg is None or (isinstance(neg, float) and neg >= 0)
        assert len(case["curves"]["val_rmse"]) == record["config"]["seeds"].__len__()
    assert record["cases"]["symmetric/gcnn"]["equivariance_error"] < 1e-5
    assert record["cases"]["symmetric/steerable"]["equivariance_error"] < 1e-5
    for png in ("rmse_curves", "sharpness", "spectral_density", "top_eigenvalues"):
        assert (tmp_path / f"{png}.png").stat().st_size > 0


def test_quick_marglik_objective_reports_the_learned_relaxation_per_layer(tmp_path):
    """``--objective marglik``: relaxed_gcnn trained by the marginal likelihood; per relaxed
    layer the equivariance error and the learned precision of its relaxation."""
    record, _ = run_quick(
        "training_dynamics", tmp_path, timeout=120, args=["--objective", "marglik"]
    )
    assert record["config"]["objective"] == "marglik"
    assert set(record["cases"]) == {f"{d}/relaxed_gcnn_marglik" for d in DATASETS}
    for name, case in record["cases"].items():
        assert case["test_rmse"] > 0 and math.isfinite(case["neg_log_marglik"]), name
        assert set(case["layers"]) == {"lift_density", "lift_velocity", "out"}  # QUICK: depth 1
        for layer, row in case["layers"].items():
            assert row["relaxation_precision"] > 0 and row["gconv_precision"] > 0, (name, layer)
            assert row["relaxation_precision"] != 1.0  # learned (init 1)
            assert 0 <= row["equivariance_error"] < 1 and row["relaxation_spread"] >= 0
