"""Issue 13 (paper 002, section 5's future work): estimate the dimension of a network's symmetry
algebra by learning k = 1, 2, ... fields until an added field is no longer both invariant and
independent (:func:`symdisc.dimension.estimate_dimension`: median invariance error <= 0.05 and
flow drift ratio <= 0.1 for every field, the k-th relative singular value above 1e-2), next to
the closed-form null-space baseline of the GL ansatz (:func:`symdisc.known.null_space`).

Cases (every action data-independent, reading (g, theta) only):

* ``linear_h2``: a two-layer linear net, m = h = n = 2 (GL(2): 4), generators in gl(2).
* ``relu_h3``: a two-layer ReLU net with h = 3 (positive rescaling: 3), gl(3).
* ``relu_deep``: a 2-3-3-1 ReLU ``nn.Sequential`` with biases through ``module_loss``
  (rescaling of each of the 6 hidden units: 6), gl(3).
* ``sigmoid_3x3``: ``||W2 sigmoid(W1 X) - Y||^2``, W1 in R^{3x3} (no data-independent continuous
  symmetry: 0), gl(3).

Metrics per case: ``dimension`` (learned), ``null_dimension`` (closed form), the evidence per k
(the median and 90th-percentile invariance error and the flow drift ratio of each field, and the
relative singular values of the k fields), and ``lie_closure_max``, the largest relative
distance of a bracket ``[h_i, h_j]`` of the generators learned at k = dimension to their span.
Writes ``results.json``, ``dimension_evidence.png`` (invariance, singular values and flow drift
against k) and ``<case>_generators.png`` (the generators at k = dimension, with the unit
generators of the known algebra below them). Usage::

    python experiments/symmetry_dimension.py --out results [--seed 0] [--device cpu] [--quick]
"""

from __future__ import annotations

import logging
import time
from functools import partial

import matplotlib.figure
import matplotlib.ticker
import numpy as np
import torch

from _cli import parser, run_config, setup
from _discovery import relu_deep
from _results import write_results
from symdisc import plot
from symdisc.dimension import (
    DRIFT_THRESHOLD,
    INVARIANCE_THRESHOLD,
    estimate_dimension,
    lie_closure,
)
from symdisc.known import gl_ansatz, null_space, unit_generators
from symdisc.losses import two_layer
from symdisc.metrics import RANK_RTOL, random_invariance
from symdisc.sampler import sample
from symdisc.trainer import TrainConfig

CASES = {
    "linear_h2": dict(
        loss=partial(two_layer, "identity", 2, 2, 2, 2),
        d=2,
        k_max=5,
        known="gl",
    ),
    "relu_h3": dict(
        loss=partial(two_layer, "relu", 2, 3, 2, 2),
        d=3,
        k_max=5,
        known="rescaling",
    ),
    "relu_deep": dict(loss=relu_deep, d=3, k_max=8),
    "sigmoid_3x3": dict(loss=partial(two_layer, "sigmoid", m=1, h=3, n=3, k=1), d=3, k_max=3),
}


def evidence_figure(estimates: dict) -> matplotlib.figure.Figure:
    """Per case against k: the median invariance error of each field (dots; the worst joined),
    the relative singular values of the k fields (the smallest joined) and each field's flow
    drift ratio, with the thresholds (dashed) and the null-space dimension (dotted)."""
    names = list(estimates)
    fig = matplotlib.figure.Figure(figsize=(3.0 * len(names), 7.4), layout="constrained")
    axes = fig.subplots(3, len(names), squeeze=False, sharex="col")
    for col, name in enumerate(names):
        est, null_dim = estimates[name]
        ks = [s.k for s in est.steps]
        top, bottom, drift = axes[0, col], axes[1, col], axes[2, col]
        for s in est.steps:
            inv = np.clip(s.invariance, 1e-8, None)
            top.scatter([s.k] * len(inv), inv, s=12, color="C0", alpha=0.7)
            sv = np.clip(s.singular_values, 1e-8, None)
            bottom.scatter([s.k] * len(sv), sv, s=12, color="C1", alpha=0.7)
            if s.flow_drift is not None:
                dr = np.clip(s.flow_drift, 1e-8, None)
                drift.scatter([s.k] * len(dr), dr, s=12, color="C2", alpha=0.7)
        top.plot(ks, [max(s.invariance) for s in est.steps], color="C0", lw=1)
        top.axhline(INVARIANCE_THRESHOLD, color="k", ls="--", lw=0.8)
        bottom.plot(ks, [max(s.singular_values[-1], 1e-8) for s in est.steps], color="C1", lw=1)
        bottom.axhline(RANK_RTOL, color="k", ls="--", lw=0.8)
        drift.axhline(DRIFT_THRESHOLD, color="k", ls="--", lw=0.8)
        right = max(ks + [null_dim + 1]) + 0.5
        limits = ((top, (1e-4, 1.0)), (bottom, (1e-4, 2.0)), (drift, (1e-3, 3.0)))
        for ax, ylim in limits:
            ax.set_yscale("log")
            ax.set_ylim(*ylim)
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.axvline(null_dim + 0.5, color="0.5", ls=":", lw=1)
            ax.set_xlim(0.5, right)
            ax.set_xticks(range(1, int(right) + 1))
            ax.tick_params(labelsize=9)
        top.set_title(f"{name}: dim {est.dimension} (null space {null_dim})", fontsize=10)
        drift.set_xlabel("k (fields learned)")
        if col == 0:
            top.set_ylabel("invariance error (median)")
            bottom.set_ylabel("singular value / largest")
            drift.set_ylabel("flow drift ratio")
    return fig


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = p.parse_args()
    setup(args)
    log = logging.getLogger("symmetry_dimension")
    steps = 40 if args.quick else args.steps
    n_train, n_test = (256, 128) if args.quick else (10_000, 2_000)
    args.out.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(steps=steps, seed=args.seed)
    cases, case_records, timings, estimates = {}, {}, {}, {}
    start = time.perf_counter()
    for name in args.cases:
        spec = CASES[name]
        tic = time.perf_counter()
        loss = spec["loss"]()
        case_records[name] = {"d": spec["d"], "k_max": spec["k_max"], "loss": loss.name}
        case_records[name]["known"] = spec.get("known", "")
        reference = sample(loss, 500, seed=args.seed + 2, dtype=torch.float64)
        null_dim = null_space(loss, reference, gl_ansatz(loss)).dim
        k_max = min(spec["k_max"], 2) if args.quick else spec["k_max"]
        est = estimate_dimension(
            loss,
            d=spec["d"],
            k_max=k_max,
            data_dependent=False,
            n_train=n_train,
            n_test=n_test,
            config=config,
            seed=args.seed,
            device=args.device,
        )
        estimates[name] = (est, null_dim)
        scores = {
            "dimension": float(est.dimension),
            "null_dimension": float(null_dim),
            "saturated": est.saturated,
            "P": loss.num_params,
            "random_invariance": random_invariance(loss.num_params),
            "evidence": [s.as_dict() for s in est.steps],
        }
        if est.dimension >= 1:
            h = est.extras[est.dimension].discovery.generators().detach()
            scores["lie_closure_max"] = lie_closure(h).max_distance
            known_name = spec.get("known", "")
            known = unit_generators(loss, known_name, spec["d"]) if known_name else None
            fig = plot.generators(h, known=known, title="learned", known_title=known_name)
            plot.save(fig, args.out / f"{name}_generators.png")
        scores["targets"] = {
            "dimension": {"want": f"== {null_dim}", "pass": est.dimension == null_dim}
        }
        cases[name] = scores
        timings[f"{name}_s"] = time.perf_counter() - tic
        log.info("%s: dimension %d, null space %d", name, est.dimension, null_dim)
    timings["total_s"] = time.perf_counter() - start
    plot.save(evidence_figure(estimates), args.out / "dimension_evidence.png")
    record = {
        **run_config(args),
        "steps": steps,
        "n_train": n_train,
        "n_test": n_test,
        "data_dependent": False,
        "objective": config.objective,
        "weights": config.weights.as_dict(),
        "invariance_threshold": INVARIANCE_THRESHOLD,
        "drift_threshold": DRIFT_THRESHOLD,
        "rank_rtol": RANK_RTOL,
        "cases": case_records,
    }
    log.info("wrote %s", write_results(args.out, "symmetry_dimension", record, cases, timings))


if __name__ == "__main__":
    main()
