"""Paper 002, section 4.1 (Figs. 2 and 5): discover the data-independent symmetries of two-layer
linear and ReLU networks, and score them against the known GL(h) and rescaling symmetries.

Cases (the action reads (g, theta) only: section 4.1's data-independent setting, where a field
orthogonal to the loss gradient for every X must lie in the symmetry's tangent space):

* ``linear_1x1``: ``||W2 W1 X - Y||^2`` with scalars (m = h = n = k = 1), one generator of gl(2)
  (Fig. 2); ``cos_true`` compares the field with the rescaling tangent (W1, -W2).
* ``linear_h2``: a linear net with m = n = h = 2, two generators; known: GL(2).
* ``relu_h3``: a ReLU net with h = 3, two generators; known: positive rescaling.
* ``linear_fig5``: the linear net of Fig. 5 (W2 in R^{1x2}, W1 in R^{2x1}), two generators.

Writes ``results.json`` (metrics per case), generator heatmaps, training curves and the loss along
the learned flows next to random directions. Usage::

    python experiments/rescaling.py --out results [--seed 0] [--device cpu] [--quick]
"""

from __future__ import annotations

import logging
import time

from _common import check_targets, discovery_case, parser, setup, write_results

from symdisc.losses import two_layer
from symdisc.train import TrainConfig

CASES = {
    "linear_1x1": dict(loss=dict(activation="identity", m=1, h=1, n=1, k=1), d=2, k=1, known="gl"),
    "linear_h2": dict(loss=dict(activation="identity", m=2, h=2, n=2, k=2), d=2, k=2, known="gl"),
    "relu_h3": dict(loss=dict(activation="relu", m=2, h=3, n=2, k=2), d=3, k=2, known="rescaling"),
    "linear_fig5": dict(loss=dict(activation="identity", m=1, h=2, n=1, k=1), d=2, k=2, known="gl"),
}
TARGETS = {
    "linear_1x1": {"cos_true": (">=", 0.99), "invariance_median": ("<=", 1e-2)},
    "linear_h2": {"energy_outside": ("<=", 0.05)},
    "relu_h3": {"energy_outside": ("<=", 0.05)},
}


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = p.parse_args()
    setup(args)
    log = logging.getLogger("rescaling")
    steps = 40 if args.quick else args.steps
    n_train, n_test = (512, 256) if args.quick else (10_000, 2_000)
    config = TrainConfig(steps=steps, seed=args.seed, progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    cases, timings, start = {}, {}, time.perf_counter()
    for name in args.cases:
        spec = CASES[name]
        tic = time.perf_counter()
        scores = discovery_case(
            name,
            two_layer(**spec["loss"]),
            spec,
            args,
            config,
            data_dependent=False,
            n_train=n_train,
            n_test=n_test,
        )
        scores["targets"] = check_targets(scores, TARGETS.get(name, {}))
        if name == "linear_1x1":  # v_norm_mean within 10% of beta
            beta = config.weights.beta
            scores["targets"]["v_norm_mean"] = {
                "want": f"within 10% of beta={beta}",
                "pass": bool(abs(scores["v_norm_mean"] - beta) <= 0.1 * beta),
            }
        cases[name] = scores
        timings[f"{name}_s"] = time.perf_counter() - tic
        log.info("%s: %s", name, {k: v for k, v in scores.items() if k != "targets"})
    timings["total_s"] = time.perf_counter() - start
    config_record = {
        "seed": args.seed,
        "quick": args.quick,
        "device": args.device,
        "steps": steps,
        "n_train": n_train,
        "n_test": n_test,
        "cases": {n: CASES[n] for n in args.cases},
        "weights": config.weights.as_dict(),
        "lr": config.lr,
        "batch_size": config.batch_size,
    }
    path = write_results(args.out, "rescaling", config_record, cases, timings)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
