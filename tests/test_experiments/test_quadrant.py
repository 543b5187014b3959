"""Paper 000, section 6.1 (table 1): the quadrant-digits data (:mod:`ella.data.quadrant`), the
exact shift invariance of the CONV model (:mod:`ella.models.quadrant`), and the --quick run's
results.json of experiments/quadrant.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ella.data import quadrant_digits
from ella.models import quadrant_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("source", ["sklearn", "mnist"])
def test_quadrant_digits_shapes_classes_and_placement(source):
    x_tr, y_tr, x_te, y_te = quadrant_digits("digit_quadrant", seed=0, source=source)
    side = {"sklearn": 16, "mnist": 32}[source]
    n_train, n_test = {"sklearn": (1200, 597), "mnist": (4000, 1000)}[source]
    half = side // 2
    assert x_tr.shape == (n_train, 1, side, side) and x_te.shape == (n_test, 1, side, side)
    assert y_tr.shape == (n_train,) and y_te.shape == (n_test,)
    assert abs(float(x_tr.mean())) < 1e-5 and abs(float(x_tr.std()) - 1) < 1e-4  # F.5
    labels = torch.cat([y_tr, y_te])
    assert set(labels.tolist()) == set(range(40))
    x = torch.cat([x_tr, x_te])[:, 0]
    background = x.flatten(1).min(1).values  # the standardised zero of the canvas
    for img, label, bg in zip(x, labels, background):
        q = int(label) // 10
        r, c = divmod(q, 2)
        inside = img[half * r : half * (r + 1), half * c : half * (c + 1)]
        mask = torch.ones(side, side, dtype=torch.bool)
        mask[half * r : half * (r + 1), half * c : half * (c + 1)] = False
        assert torch.all(img[mask] == bg)  # nothing outside the labelled quadrant
        assert torch.any(inside != bg)
    # the digit task has the same images and the digit as label
    x2, y2, _, _ = quadrant_digits("digit", seed=0, source=source)
    assert torch.equal(x2, x_tr) and torch.equal(y2, y_tr % 10)
    assert set(y2.tolist()) == set(range(10))


def test_quadrant_data_and_model_check_their_arguments():
    with pytest.raises(ValueError, match="`task` must be one of"):
        quadrant_digits("quadrant", seed=0)
    with pytest.raises(ValueError, match="`n_train` must be in"):
        quadrant_digits("digit", seed=0, n_train=1797, source="sklearn")
    with pytest.raises(ValueError, match="`source` must be one of"):
        quadrant_digits("digit", seed=0, source="cifar")
    with pytest.raises(TypeError, match="`seed` must be an int"):
        quadrant_digits("digit", seed=0.5)
    with pytest.raises(ValueError, match="`kind` must be one of"):
        quadrant_model("ffc+conv", 10)
    with pytest.raises(ValueError, match="`alpha` must be a positive int"):
        quadrant_model("fc", 10, alpha=0)
    with pytest.raises(ValueError, match="`size` must be a power of two"):
        quadrant_model("fc", 10, size=24)


@pytest.mark.parametrize("size", [16, 32])
def test_conv_model_is_invariant_to_moving_the_digit_between_quadrants(size):
    """Stride subsampling, polyphase in the last layer: exactly invariant to circular shifts by
    multiples of size / 2 (the quadrant moves), not to every shift."""
    model = quadrant_model("conv", 40, alpha=2, seed=0, size=size).double()
    x = torch.randn(
        6, 1, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    h = size // 2
    with torch.no_grad():
        y = model(x)
        for shift in [(h, 0), (0, h), (h, h), (-h, h)]:
            ys = model(torch.roll(x, shifts=shift, dims=(2, 3)))
            torch.testing.assert_close(ys, y, rtol=1e-12, atol=1e-12)
        assert (model(torch.roll(x, shifts=(1, 0), dims=(2, 3))) - y).abs().max() > 1e-6


def test_fc_and_ffc_conv_models_see_the_quadrant():
    """FC sees the quadrant; F-FC+CONV starts as its CONV path (the F-FC path at zero output,
    so invariant to quadrant moves) and sees the quadrant once the F-FC path is non-zero."""
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def quadrant_effect(model):
        with torch.no_grad():
            return (model(x) - model(torch.roll(x, shifts=(8, 0), dims=(2, 3)))).abs().max()

    assert quadrant_effect(quadrant_model("fc", 40, alpha=2, seed=0, size=16).double()) > 1e-6
    model = quadrant_model("ffc_conv", 40, alpha=2, seed=0, size=16).double()
    assert quadrant_effect(model) < 1e-12
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("theta1"):
                assert torch.all(p == 0)
                p.normal_(generator=torch.Generator().manual_seed(3))
    assert quadrant_effect(model) > 1e-6


def test_quick_run_writes_all_cases_and_metrics(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "quadrant.py"), "--quick", "--out"]
    subprocess.run(cmd + [str(tmp_path)], check=True, cwd=ROOT, timeout=120)
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["experiment"] == "quadrant"
    assert {"experiment", "config", "environment", "cases", "timings"} <= set(record)
    names = {
        f"{t}/{m}/{o}"
        for t in ("digit", "digit_quadrant")
        for m in ("fc", "conv", "ffc_conv")
        for o in ("map", "marglik")
    }
    assert set(record["cases"]) == names
    for name, case in record["cases"].items():
        assert {"test_acc", "test_nll", "neg_log_marglik", "params"} <= set(case), name
    for task in ("digit", "digit_quadrant"):
        rows = record["cases"][f"{task}/ffc_conv/marglik"]["layers"]
        assert len(rows) == 10 and {r["path"] for r in rows} == {"fc", "conv"}  # 5 layers
        assert all(0.0 <= r["relative_effective_parameters"] <= 1.0 for r in rows)
    assert (tmp_path / "learned_paths.png").stat().st_size > 0
