"""experiments/transformed_digits.py (paper 001, section 5.2, table 1 in miniature): the data
versions, the IDX loaders and a --quick run's results.json."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ella.data import (
    VERSIONS,
    imposed_eta,
    load_mnist,
    read_idx,
    transform_images,
    transformed_digits,
    transformed_idx,
)

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("sklearn")


def test_versions_are_seeded_and_transform_as_named():
    assert VERSIONS == ("rotated", "partially_rotated", "translated", "scaled", "original")
    x, y, xt, yt = transformed_digits("rotated", 0, n_train=100, source="sklearn")
    assert x.shape == (100, 1, 16, 16) and xt.shape == (1697, 1, 16, 16)
    assert y.shape == (100,) and yt.shape == (1697,)
    x2, y2, _, _ = transformed_digits("rotated", 0, n_train=100, source="sklearn")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    xo, yo, _, _ = transformed_digits("original", 0, n_train=100, source="sklearn")
    assert torch.equal(yo, y) and not torch.allclose(xo, x)
    # a centred disc-shaped blob is invariant to rotation and moved by translation
    blob = torch.zeros(4, 1, 16, 16)
    ii, jj = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    blob[:, 0] = torch.exp(-((ii - 7.5) ** 2 + (jj - 7.5) ** 2) / 8)
    torch.testing.assert_close(transform_images(blob, "rotated", 1), blob, atol=0.06, rtol=0)
    moved = transform_images(blob, "translated", 1)
    assert float((moved - blob).abs().max()) > 0.1
    assert imposed_eta("rotated") == {"rotate": pytest.approx(math.pi)}
    assert set(imposed_eta("scaled")) == {"scale_x", "scale_y"}
    assert imposed_eta("original") == {}
    with pytest.raises(ValueError, match="version"):
        transform_images(blob, "flipped", 0)


def _write_idx(path, array, code):
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_idx_loaders_read_mnist_layout(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, 0x08)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, 0x08)
    np.testing.assert_array_equal(read_idx(tmp_path / "t10k-labels-idx1-ubyte"), labels)
    x, y = load_mnist(tmp_path, "test")
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0] * 255, torch.from_numpy(images).float())
    assert y.tolist() == labels.tolist()
    with pytest.raises(FileNotFoundError, match="train-images"):
        load_mnist(tmp_path, "train")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(tmp_path / "bad")


def test_quick_run_writes_cases_metrics_and_plots(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "transformed_digits.py"),
        "--quick",
        "--out",
        str(tmp_path),
        "--versions",
        "rotated",
        "original",
        "--seeds",
        "2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    want = {
        f"{v}/{m}/{k}"
        for v in ("rotated", "original")
        for m in ("mlp", "cnn")
        for k in ("baseline", "augerino", "lila")
    }
    assert set(results["cases"]) == want
    for name, metrics in results["cases"].items():
        assert 0.0 <= metrics["test_acc"] <= 100.0
        assert math.isfinite(metrics["neg_log_marglik"]), name
        assert metrics["test_acc_mean"] == metrics["test_acc"]
        per_seed = [m["test_acc"] for m in metrics["per_seed"]]
        assert metrics["n_seeds"] == len(per_seed) == 2
        assert metrics["test_acc"] == pytest.approx(sum(per_seed) / 2)
        assert metrics["test_acc_std"] == pytest.approx(float(np.std(per_seed, ddof=1)))
        assert metrics["neg_log_marglik_se"] == pytest.approx(
            metrics["neg_log_marglik_std"] / math.sqrt(2)
        )
        assert isinstance(metrics["eta_diverged"], list)
        assert {
            f"eta/{c}"
            for c in ("translate_x", "translate_y", "rotate", "scale_x", "scale_y", "shear")
        } <= set(metrics)
    assert all(
        results["cases"][f"rotated/{m}/baseline"]["eta/rotate"] == 0.0 for m in ("mlp", "cnn")
    )
    targets = results["cases"]["rotated/mlp/lila"]["targets"]
    assert {"dominant", "rotation_extent", "test_acc", "neg_log_marglik"} <= set(targets)
    assert results["config"]["seeds"] == [0, 1]
    for m in ("mlp", "cnn"):
        assert (tmp_path / f"eta_trajectories_{m}.png").stat().st_size > 0
        assert (tmp_path / f"flow_fields_{m}.png").stat().st_size > 0


def test_transformed_idx_reads_local_files_and_transforms_both_splits(tmp_path):
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 12), ("t10k", 6)):
        _write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            0x08,
        )
        _write_idx(
            tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8), 0x08
        )
    x, y, xt, yt = transformed_idx(tmp_path, "rotated", 0, n_train=10, n_test=4)
    assert x.shape == (10, 1, 28, 28) and xt.shape == (4, 1, 28, 28)
    raw, labels = load_mnist(tmp_path, "train")
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))[:10]
    assert torch.equal(y, labels[order])
    torch.testing.assert_close(x, transform_images(raw[order], "rotated", 1000))
    xo, _, _, _ = transformed_idx(tmp_path, "original", 0, n_train=10)
    torch.testing.assert_close(xo, raw[order])
    with pytest.raises(ValueError, match="n_train"):
        transformed_idx(tmp_path, "rotated", 0, n_train=13)


def test_data_efficiency_quick_run(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "data_efficiency.py"),
        "--quick",
        "--out",
        str(tmp_path),
        "--workers",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    sizes = results["config"]["sizes"]
    assert set(results["cases"]) == {
        f"{n}/{m}" for n in sizes for m in ("baseline", "augerino", "lila")
    }
    for n in sizes:
        lila, base = results["cases"][f"{n}/lila"], results["cases"][f"{n}/baseline"]
        gap = lila["test_acc"] - base["test_acc"]
        assert lila["targets"]["test_acc"]["got"] == pytest.approx(gap, abs=1e-3)
        assert len(lila["per_seed"]) == 2
    assert "largest_gap" in results["cases"][f"{min(sizes)}/lila"]["targets"]
    assert (tmp_path / "data_efficiency.png").stat().st_size > 0


def test_quick_run_on_local_fashion_mnist_files(tmp_path):
    rng = np.random.default_rng(2)
    data = tmp_path / "fmnist"
    data.mkdir()
    for prefix, n in (("train", 80), ("t10k", 30)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        _write_idx(data / f"{prefix}-images-idx3-ubyte.gz", images, 0x08)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        _write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", labels, 0x08)
    cmd = [sys.executable, str(ROOT / "experiments" / "transformed_digits.py"), "--quick"]
    cmd += ["--out", str(tmp_path / "out"), "--dataset", "fmnist", "--data-dir", str(data)]
    cmd += ["--versions", "translated", "--models", "mlp", "--workers", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["dataset"] == "fmnist" and str(data) in results["config"]["data"]
    assert results["config"]["n_test"] == 30  # the whole local test split
    assert set(results["cases"]) == {
        f"translated/mlp/{m}" for m in ("baseline", "augerino", "lila")
    }
    missing = subprocess.run(
        [*cmd[:3], "--out", str(tmp_path / "x"), "--dataset", "fmnist"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert missing.returncode != 0 and "--data-dir" in missing.stderr
