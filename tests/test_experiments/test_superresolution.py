"""experiments/superresolution.py (paper 003, "Super Resolution"): the models' parameter counts
and equivariance, and the --quick run's results.json and figures."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_quick
from ella.dynamics.turbulence import rotate_velocity
from ella.layers import equivariance_error

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

import superresolution as sr  # noqa: E402

MODELS = ("cnn", "gcnn", "rgcnn")
METRICS = ("test_mae", "sharpness_abs", "sharpness_rel", "top_eig", "n_negative_eigs", "params")


def test_models_matched_in_size_and_gcnn_equivariant():
    for settings in (sr.DEFAULT, sr.QUICK):
        counts = {
            m: sum(p.numel() for p in sr.build_model(m, settings, 0).parameters()) for m in MODELS
        }
        assert abs(counts["cnn"] - counts["rgcnn"]) / counts["rgcnn"] < 0.1
        assert counts["gcnn"] < counts["rgcnn"]
    x = torch.randn(2, 9, 2, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gcnn = sr.build_model("gcnn", sr.QUICK, 0).double()
    assert equivariance_error(gcnn, x, rotate_velocity, rotate_velocity) < 1e-12
    with pytest.raises(ValueError, match="name"):
        sr.build_model("mlp", sr.DEFAULT, 0)


def test_quick_run_writes_all_cases_and_metrics(tmp_path):
    record, _ = run_quick("superresolution", tmp_path, timeout=120)
    assert record["experiment"] == "superresolution"
    assert {"experiment", "config", "environment", "cases", "timings"} <= set(record)
    assert set(record["cases"]) == set(MODELS)
    n_seeds = len(record["config"]["seeds"])
    for name, case in record["cases"].items():
        for key in METRICS:
            for k in (key, f"{key}_se", f"{key}_early", f"{key}_se_early"):
                assert k in case, (name, k)
                value = case[k]
                if key == "n_negative_eigs" and value is None:
                    continue
                assert isinstance(value, (int, float)) and math.isfinite(value), (name, k)
        assert case["test_mae"] > 0 and case["sharpness_abs"] > 0 and case["top_eig"] > 0
        assert isinstance(case["params"], int) and case["params"] > 0
        # the quick settings compute the full spectrum for the first seed
        assert case["n_negative_eigs"] is not None and case["n_negative_eigs"] >= 0
        assert case["min_eig_upper"] is not None
        assert len(case["curves"]["val_mae"]) == n_seeds
        assert len(case["curves"]["val_mae"][0]) == record["config"]["epochs"] + 1
    assert record["cases"]["gcnn"]["equivariance_error"] < 1e-5
    assert record["cases"]["cnn"]["equivariance_error"] > 1e-3
    for png in ("mae_curves", "sharpness", "spectral_density", "top_eigenvalues"):
        assert (tmp_path / f"{png}.png").stat().st_size > 0
