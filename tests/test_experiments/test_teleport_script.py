"""experiments/teleport.py runs end to end on --quick and writes results.json with the case and
metric names issue 13 fixes, and the loss-curve plot."""

from __future__ import annotations

from conftest import run_quick

TELEPORTED = {"steps_to_threshold", "loss_change_at_teleport", "grad_norm_gain", "steps_ratio"}


def test_quick_run_writes_cases_metrics_and_plot(tmp_path):
    record, _ = run_quick("teleport", tmp_path)
    assert record["experiment"] == "teleport"
    assert record["config"]["quick"] is True and "total_s" in record["timings"]
    cases = record["cases"]
    assert set(cases) == {"plain", "known", "learned", "untrained"}
    assert isinstance(cases["plain"]["steps_to_threshold"], float)
    for case in ("known", "learned", "untrained"):
        assert TELEPORTED <= set(cases[case]), (case, TELEPORTED - set(cases[case]))
        assert all(isinstance(cases[case][m], float) for m in TELEPORTED)
        assert cases[case]["loss_change_at_teleport"] <= record["config"]["teleport"]["tol"]
    # the known action is an exact symmetry: the teleport keeps the loss to rounding
    assert cases["known"]["loss_change_at_teleport"] < 1e-10
    assert set(cases["learned"]["targets"]) == {"steps_ratio", "loss_change_at_teleport"}
    assert (tmp_path / "teleport_losses.png").stat().st_size > 1000
