"""Paper 000, section 6.2 (table 2) as a pipeline: the --quick run of experiments/cifar_layers.py
on the embedded MNIST writes every case of its rows with finite metrics and its settings."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUICK_ROWS = ("conv", "ffc+conv", "sfc+sconv/anchors")


def test_quick_run_writes_cases_metrics_and_config(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "cifar_layers.py"), "--quick", "--out"]
    subprocess.run(cmd + [str(tmp_path)], check=True, cwd=ROOT, timeout=300)
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["experiment"] == "cifar_layers"
    assert set(record["cases"]) == {f"{r}/{o}" for r in QUICK_ROWS for o in ("map", "marglik")}
    for name, case in record["cases"].items():
        for key in ("test_acc", "test_nll", "neg_log_marglik"):
            assert math.isfinite(case[key]), (name, key)
        assert 0.0 <= case["test_acc"] <= 100.0 and case["test_nll"] > 0.0
        assert case["params"] > 0 and case["paper"]["params_M"] > 0
    # the same network under both objectives; the sparse row carries its prior target
    assert record["cases"]["conv/map"]["params"] == record["cases"]["conv/marglik"]["params"]
    assert record["cases"]["sfc+sconv/anchors/map"]["prior_on"] == "anchors"
    # marglik on a path sum reports the path shares of its 8 layers, which sum to 1 per layer
    rows = record["cases"]["ffc+conv/marglik"]["layers"]
    assert len(rows) == 16 and {r["path"] for r in rows} == {"fc", "conv"}
    for layer in {r["layer"] for r in rows}:
        total = sum(r["path_share"] for r in rows if r["layer"] == layer)
        assert math.isclose(total, 1.0, rel_tol=1e-9)
    config = record["config"]
    assert config["quick"] is True and config["dataset"] == "mnist"
    assert config["rows"] == list(QUICK_ROWS) and config["failed"] == []
    assert config["n_train_used"] == config["n_train"] == 200 and config["n_test"] == 4800
    assert config["image_shape"] == [1, 28, 28] and config["augment"] is None
    assert config["init"] == "he"  # the variance-preserving scale (else: chance accuracy)
    for key in ("alpha", "epochs", "lr", "lr_hyper", "batch_size", "burn_in", "marglik_every"):
        assert key in config
    assert (tmp_path / "learned_paths.png").stat().st_size > 0
    table = (tmp_path / "results.md").read_text()
    assert "| conv |" in table and "82.81" in table  # beside table 2's MAP CONV accuracy
