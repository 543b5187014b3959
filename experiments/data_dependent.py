"""Paper 002, section 4.2 (Figs. 3, 4 and 6): discover data-dependent symmetries of networks with
no known continuous data-independent symmetry.

Cases (the action reads X as well as (g, theta)):

* ``sigmoid_3x3``: ``||W2 sigmoid(W1 X) - Y||^2`` with W1 in R^{3x3}, W2 in R^{1x3}, one data
  point X in R^3 (Figs. 3 and 6), generators in gl(3).
* ``tanh_skip``: the three-layer tanh network with a skip connection (Fig. 4), W1, W2 in R^{2x2},
  W3 in R^{1x2}, X in R^2, generators in gl(2).

The normalised invariance error and the loss drift along the learned flows (against random
directions) are the scores; no known symmetry is assumed. Writes ``results.json`` and, per case,
generator heatmaps, training curves and the loss along the flows. Usage::

    python experiments/data_dependent.py --out results [--seed 0] [--device cpu] [--quick]
"""

from __future__ import annotations

import logging
import time

from _common import check_targets, discovery_case, parser, setup, write_results

from symdisc.losses import three_layer_tanh_skip, two_layer
from symdisc.objective import Weights
from symdisc.train import TrainConfig

CASES = {
    "sigmoid_3x3": dict(loss=lambda: two_layer("sigmoid", m=1, h=3, n=3, k=1), d=3, k=2),
    "tanh_skip": dict(loss=lambda: three_layer_tanh_skip(n=2, h=2, m=1, k=1), d=2, k=2),
}
# The invariance term weighs 30 here, not 10 as in section 4.1: with the norm term at 10 the
# fields of the tanh net stopped at a median invariance error of 0.023 and a flow drift ratio of
# 0.12 after 8000 steps; at 30 they reach 3e-4 and 0.002 (other changes tried: 12000 steps, batch
# 1024, a slower decay, lr 3e-3; none below a drift ratio of 0.10).
WEIGHTS = Weights(invariance=30.0)
TARGETS = {
    name: {"invariance_median": ("<=", 0.05), "flow_drift_ratio": ("<=", 0.1)} for name in CASES
}


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = p.parse_args()
    setup(args)
    log = logging.getLogger("data_dependent")
    steps = 40 if args.quick else args.steps
    n_train, n_test = (512, 256) if args.quick else (10_000, 2_000)
    config = TrainConfig(steps=steps, seed=args.seed, progress=True, weights=WEIGHTS)
    args.out.mkdir(parents=True, exist_ok=True)
    cases, timings, start = {}, {}, time.perf_counter()
    for name in args.cases:
        spec = CASES[name]
        tic = time.perf_counter()
        scores = discovery_case(
            name,
            spec["loss"](),
            spec,
            args,
            config,
            data_dependent=True,
            n_train=n_train,
            n_test=n_test,
        )
        scores["targets"] = check_targets(scores, TARGETS[name])
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
        "cases": {n: {"d": CASES[n]["d"], "k": CASES[n]["k"]} for n in args.cases},
        "weights": config.weights.as_dict(),
        "lr": config.lr,
        "batch_size": config.batch_size,
    }
    path = write_results(args.out, "data_dependent", config_record, cases, timings)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
