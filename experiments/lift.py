"""Paper 002, section 3 and appendix C: learn a symmetry on a narrow two-layer net and lift it.

A data-independent action is learned on ``two_layer(act, m=1, h=2, n=2, k=2)`` (case ``small``)
and lifted with :mod:`symdisc.compose`, without retraining:

* ``wide``: to the same net with h' = 8 hidden units, acting on units 0 and 1 (corollary C.1);
* ``deep``: to a 4-layer network with widths 3-4-2-8-1, acting on units 0 and 1 of the block of
  layers 3 and 4 (corollaries C.1 and C.2).

Each case is scored on its own network's held-out samples: the normalised invariance error of
the (lifted) fields, median and 90th percentile, and the identity error of the (lifted) action.
Writes ``results.json`` and a histogram of the invariance errors. Usage::

    python experiments/lift.py --out results [--seed 0] [--activation relu] [--quick]
"""

from __future__ import annotations

import logging
import time

import torch

from _cli import parser, run_config, setup
from _results import write_results
from symdisc import plot
from symdisc.compose import InducedAction, depth_embedding, width_embedding
from symdisc.discovery import discover
from symdisc.losses import mlp, two_layer
from symdisc.metrics import evaluate, invariance_errors
from symdisc.objective import tangent_fields
from symdisc.sampler import sample
from symdisc.trainer import TrainConfig

UNITS = [0, 1]


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--activation", default="relu", choices=("identity", "relu", "leaky_relu"))
    args = p.parse_args()
    setup(args)
    log = logging.getLogger("lift")
    steps = 40 if args.quick else args.steps
    n_train, n_test = (512, 256) if args.quick else (10_000, 2_000)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    small = two_layer(args.activation, m=1, h=2, n=2, k=2)
    run = discover(
        small,
        d=2,
        k=1,
        data_dependent=False,
        n_train=n_train,
        n_test=n_test,
        config=TrainConfig(steps=steps, seed=args.seed, progress=True),
        seed=args.seed,
        device=args.device,
    )
    learned, h = run.discovery.action, run.discovery.generators().detach()
    timings = {"learn_s": time.perf_counter() - start}

    wide = two_layer(args.activation, m=1, h=8, n=2, k=2)
    deep = mlp(args.activation, [3, 4, 2, 8, 1], k=2)
    networks = {
        "small": (small, learned),
        "wide": (wide, InducedAction(learned, width_embedding(small, wide, UNITS))),
        "deep": (deep, InducedAction(learned, depth_embedding(small, deep, 3, UNITS))),
    }
    cases, errors = {}, {}
    for name, (loss, action) in networks.items():
        test = sample(loss, n_test, seed=args.seed + 1, device=args.device)
        scores = evaluate(loss, action, h, test, seed=args.seed)
        with torch.no_grad():
            errors[name] = invariance_errors(
                tangent_fields(action, h, test.theta, test.X), test.grad
            )
        cases[name] = {"loss": loss.name, "P": loss.num_params, **scores}
        log.info("%s (P=%d): %s", name, loss.num_params, scores)
    timings["total_s"] = time.perf_counter() - start
    plot.save(
        plot.generators(h, title="learned on the small net"), args.out / "lift_generators.png"
    )
    plot.save(
        plot.invariance_distributions(errors, title="lifted fields on their own networks"),
        args.out / "lift_invariance.png",
    )
    config = {
        **run_config(args),
        "activation": args.activation,
        "steps": steps,
        "n_train": n_train,
        "n_test": n_test,
        "units": UNITS,
        "wide": wide.name,
        "deep": deep.name,
        "deep_block_layers": [3, 4],
    }
    log.info("wrote %s", write_results(args.out, "lift", config, cases, timings))


if __name__ == "__main__":
    main()
