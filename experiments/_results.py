"""What every script records with its results (infrastructure, no paper): the environment,
``results.json`` in the format of DESIGN.md, and verdicts on the targets an issue sets."""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path

import torch


def environment(device: str) -> dict[str, object]:
    """Versions and threads, recorded with every result."""
    return {
        "torch": torch.__version__.split("+")[0],
        "threads": torch.get_num_threads(),
        "device": device,
        "python": platform.python_version(),
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value) of a metric over seeds."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def write_results(out: Path, experiment: str, config: dict, cases: dict, timings: dict) -> Path:
    """Write ``out/results.json`` in the format of DESIGN.md and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    record = {
        "experiment": experiment,
        "config": config,
        "environment": environment(config.get("device", "cpu")),
        "cases": cases,
        "timings": timings,
    }
    path.write_text(json.dumps(record, indent=2))
    return path


def check_targets(scores: dict[str, float], targets: dict[str, tuple[str, float]]) -> dict:
    """``{metric: {"want": ">= 0.99", "pass": bool}}`` for the targets an issue sets.

    A target is ``(op, bound)`` with op ``">="`` or ``"<="``, or ``("within", (centre, rel))``
    for ``|value - centre| <= rel * centre``.
    """
    out = {}
    for metric, (op, bound) in targets.items():
        value = scores[metric]
        if op == "within":
            centre, rel = bound
            ok, want = abs(value - centre) <= rel * centre, f"within {rel:.0%} of {centre}"
        else:
            ok, want = (value >= bound if op == ">=" else value <= bound), f"{op} {bound}"
        out[metric] = {"want": want, "pass": bool(ok)}
    return out
