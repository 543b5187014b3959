"""ella.plot.learned_paths (paper 000, figure 3's analogue): the bars are the path shares of a
report, per layer and path."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.container import BarContainer

from ella.plot import learned_paths


def _report():
    shares = {"a": {"fc": 0.2, "conv": 0.8}, "b": {"fc": 0.9, "conv": 0.1}, "c": {"conv": 1.0}}
    rows = [
        {"layer": layer, "path": path, "path_share": s, "relative_effective_parameters": s / 2}
        for layer, paths in shares.items()
        for path, s in paths.items()
    ]
    rows.append({"layer": "conv9", "path": None, "path_share": 1.0})  # untagged: left out
    return rows


def test_bars_equal_the_shares_given():
    fig = learned_paths(_report())
    (ax,) = fig.axes
    fc, conv = ax.containers
    np.testing.assert_allclose([b.get_height() for b in fc], [0.2, 0.9, 0.0])  # c has no fc
    np.testing.assert_allclose([b.get_height() for b in conv], [0.8, 0.1, 1.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["layer 1", "layer 2", "layer 3"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["FC", "CONV"]
    # bars of one layer sit side by side around its tick
    assert fc[0].get_x() + fc[0].get_width() == pytest.approx(conv[0].get_x())


def test_panels_values_errors_and_labels(tmp_path):
    report = _report()
    for r in report:
        r["relative_effective_parameters_std"] = 0.01
    fig = learned_paths(
        {"task A": report, "task B": report[:2]},
        value="relative_effective_parameters",
        error="relative_effective_parameters_std",
        labels={"fc": "F-FC"},
    )
    a, b = fig.axes
    bars = [c for c in a.containers if isinstance(c, BarContainer)]
    assert a.get_title() == "task A" and len(bars) == 2 and len(b.containers) == 4  # + errors
    heights = [p.get_height() for p in bars[0]]
    np.testing.assert_allclose(heights, [0.1, 0.45, 0.0])
    assert a.get_legend().get_texts()[0].get_text() == "F-FC"
    fig.savefig(tmp_path / "paths.png")
    assert (tmp_path / "paths.png").stat().st_size > 0


def test_rejects_reports_without_paths_or_values():
    with pytest.raises(ValueError, match="no row with a path"):
        learned_paths([{"layer": "x", "path": None, "path_share": 1.0}])
    with pytest.raises(ValueError, match="value"):
        learned_paths(_report(), value="gamma")
