"""experiments/toy_rotation.py (paper 001, section 5.1): the data, the model and the --quick
run's results.json."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_quick
from ella.data import rotation_toy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

toy = pytest.importorskip("toy_rotation")


def test_rotation_toy_is_seeded_and_labelled_by_band_and_arc():
    x, y = rotation_toy(400, 0, max_angle_deg=60.0)
    x2, y2 = rotation_toy(400, 0, max_angle_deg=60.0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (400, 2) and set(y.tolist()) == {0, 1}
    r = x.norm(dim=1)
    assert float(r.min()) >= 0.5 - 1e-12 and float(r.max()) <= 2.0 + 1e-12
    # two arcs of +-60 degrees about 0 and 180 degrees, with empty gaps between them; away
    # from the arcs' ends (jitter 2 degrees) the label is (band + arc) mod 2
    angle = torch.remainder(torch.atan2(x[:, 1], x[:, 0]), 2 * math.pi)
    arc = torch.round(angle / math.pi).long() % 2
    offset = torch.remainder(angle - arc * math.pi + math.pi, 2 * math.pi) - math.pi
    assert float(offset.abs().max()) < math.radians(60 + 4 * 2)
    inside = offset.abs() < math.radians(50)
    band = (r >= 1.25).long()
    assert inside.sum() > 200
    assert torch.equal(y[inside], ((band + arc) % 2)[inside])


def test_quick_run_writes_all_cases_and_metrics(tmp_path):
    results, _ = run_quick("toy_rotation", tmp_path, args=["--seeds", "2", "--seed", "3"])
    assert results["experiment"] == "toy_rotation"
    assert results["config"]["seeds"] == [3, 4]
    assert set(results["cases"]) == {"no_invariance", "augerino", "lila_full", "lila_kron"}
    for name, metrics in results["cases"].items():
        for key in ("learned_angle_deg", "neg_log_marglik", "test_acc"):
            assert math.isfinite(metrics[key]), (name, key)
            per_seed = [metrics["seeds"][s][key] for s in ("3", "4")]
            # today's keys are the first seed's; mean and std (ddof 1) over the two seeds
            assert metrics[key] == per_seed[0]
            assert metrics[f"{key}_mean"] == pytest.approx(sum(per_seed) / 2)
            assert metrics[f"{key}_std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2**0.5)
        assert 0.0 <= metrics["test_acc"] <= 100.0
    assert results["cases"]["no_invariance"]["learned_angle_deg"] == 0.0
    assert "targets" in results["cases"]["lila_full"]
    targets = results["targets"]
    assert set(targets) == {
        "lila_full_learned_angle_deg_mean",
        "lila_kron_learned_angle_deg_mean",
        "lila_best_marglik_seeds",
    }
    for name in ("lila_full", "lila_kron"):
        target = targets[f"{name}_learned_angle_deg_mean"]
        mean = results["cases"][name]["learned_angle_deg_mean"]
        assert target["value"] == mean and target["pass"] == (abs(mean - 60.0) <= 15.0)
    best = targets["lila_best_marglik_seeds"]
    expected = [
        s
        for s in (3, 4)
        if min(
            results["cases"], key=lambda c: results["cases"][c]["seeds"][str(s)]["neg_log_marglik"]
        ).startswith("lila")
    ]
    assert best["seeds"] == expected and best["value"] == len(expected)
    assert best["pass"] == (len(expected) == 2)
    assert {"seed3_s", "seed4_s", "total_s"} <= set(results["timings"])
    assert (tmp_path / "decision_boundaries.png").stat().st_size > 0
    assert (tmp_path / "eta_trajectory.png").stat().st_size > 0


@pytest.mark.filterwarnings("ignore::ella.invariance.FewEtaStepsWarning")  # a run of seconds
def test_a_job_returns_what_rebuilds_its_trained_model(monkeypatch):
    """The figures are drawn from models rebuilt from the jobs' returns (the jobs may run in
    other processes): the rebuilt model predicts what the trained one does, learned eta and
    all."""
    settings = dict(toy.QUICK, progress=False)
    models = []

    def run_case(*args):  # keeps the trained model the job drops
        out = run_case_of_the_script(*args)
        models.append(out[1])
        return out

    run_case_of_the_script = toy.run_case
    monkeypatch.setattr(toy, "run_case", run_case)
    job = toy.run_job("augerino", 0, settings, "cpu")
    (trained,) = models
    rebuilt = toy.rebuild("augerino", job, settings, 0, "cpu")
    assert float(job["eta"].abs().max()) > 0  # eta moved, so restoring it is tested
    pts = torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = trained(pts, generator=torch.Generator().manual_seed(13))
    torch.testing.assert_close(rebuilt(pts, generator=torch.Generator().manual_seed(13)), expected)
