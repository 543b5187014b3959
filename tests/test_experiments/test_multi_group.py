"""Paper 000, section 6.3 (table 3) as a pipeline: the --quick run of experiments/multi_group.py
(F-FC+CONV+GCONV on the embedded MNIST and its rotated version) writes finite metrics and the
relative effective parameters of the FC, CONV and GCONV paths."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_metrics_and_path_shares(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "multi_group.py"), "--quick", "--out"]
    subprocess.run(cmd + [str(tmp_path)], check=True, cwd=ROOT, timeout=300)
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["experiment"] == "multi_group"
    assert set(record["cases"]) == {"mnist/marglik", "rotated_mnist/marglik"}
    for name, case in record["cases"].items():
        for key in ("test_acc", "test_nll", "neg_log_marglik"):
            assert math.isfinite(case[key]), (name, key)
        rows = case["layers"]
        assert len(rows) == 24 and {r["path"] for r in rows} == {"fc", "conv", "gconv"}
        assert all(0.0 <= r["relative_effective_parameters"] <= 1.0 for r in rows)
        for layer in {r["layer"] for r in rows}:
            total = sum(r["path_share"] for r in rows if r["layer"] == layer)
            assert math.isclose(total, 1.0, rel_tol=1e-9)
        summary = case["rel_eff_params"]
        assert set(summary) == {"fc", "conv", "gconv"}
        for path, s in summary.items():
            shares = [100 * r["path_share"] for r in rows if r["path"] == path]
            assert math.isclose(s["mean"], sum(shares) / 8) and s["max"] == max(shares)
        assert math.isclose(sum(s["mean"] for s in summary.values()), 100.0)
        assert case["paper"]["acc"] > 90
    config = record["config"]
    assert config["quick"] is True and config["layer"] == "ffc+conv+gconv"
    assert config["variants"] == ["original", "rotated"] and config["objectives"] == ["marglik"]
    assert config["sizes"]["mnist"] == {"n_train": 200, "n_test": 4800}
    assert config["init"] == "he" and config["structure"] == "diag"
    assert (tmp_path / "learned_paths.png").stat().st_size > 0
    assert "| rotated_mnist |" in (tmp_path / "results.md").read_text()
