"""Paper 000, section 6.1 (table 1): adapting symmetry to the task, on digits in quadrants.

Every 8x8 scikit-learn digit is placed in one of the four quadrants (chosen at random, seeded)
of a zero 16x16 canvas (:func:`ella.data.quadrant_digits`). Two tasks:

* ``digit``: the digit (10 classes), translation invariant;
* ``digit_quadrant``: the digit and its quadrant, ``digit + 10 * quadrant`` (40 classes), which
  no strictly translation-invariant model can solve (at best a quarter of its digit accuracy).

Models (:func:`ella.models.quadrant_model`): four relaxed layers 1x16x16 -> a x8x8 -> 2a x4x4
-> 4a x2x2 -> 8a x1x1 (every layer halves the resolution, ReLU after each), then a plain
``nn.Linear`` to the classes; the relaxed layers are ``FC`` (``fc``), ``CONV`` with polyphase
pooling (``conv``, exactly invariant to circular shifts of the canvas) or ``PathSum(FFC, CONV)``
(``ffc_conv``). Each is trained with ``map`` (precisions frozen at 1) and with ``marglik``
(per-layer, per-path precisions learned by the KFAC Laplace marginal likelihood,
:func:`ella.marglik.train_marglik`).

Cases ``<task>/<model>/<objective>``; metrics (mean and standard deviation over seeds):
``test_acc`` (%), ``test_nll`` (mean per test point), ``neg_log_marglik`` (per training point:
the KFAC Laplace ``-log p(D | delta) / N`` at the final weights and final precisions; for
``map`` at the frozen precisions 1), ``params``; for ``ffc_conv/marglik`` per layer and path
the relative effective number of parameters gamma_g / P_g and its path share (table 4 of the
paper) at the final precisions. Writes ``results.json`` and ``learned_paths.png``. Usage::

    python experiments/quadrant.py --out results [--seed 0] [--seeds 3] [--quick]
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from _cli import parser, run_config, setup
from _results import write_results
from ella.data import QUADRANT_CLASSES, QUADRANT_TASKS, quadrant_digits
from ella.laplace import Laplace
from ella.marglik import MarglikConfig, learned_layer_report, train_marglik
from ella.models import QUADRANT_MODELS, quadrant_model

TASKS = QUADRANT_TASKS
MODELS = QUADRANT_MODELS
OBJECTIVES = ("map", "marglik")
log = logging.getLogger("quadrant")


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------


def run_case(task, kind, objective, seed, settings) -> dict[str, object]:
    """Train one model on one task with one objective and seed; return its metrics."""
    device = settings["device"]
    x_tr, y_tr, x_te, y_te = (
        t.to(device) for t in quadrant_digits(task, seed, settings["n_train"])
    )
    model = quadrant_model(kind, QUADRANT_CLASSES[task], settings["alpha"], seed).to(device)
    config = MarglikConfig(
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        lr_hyper=settings["lr_hyper"],
        n_hyper_steps=settings["n_hyper_steps"],
        marglik_every=settings["marglik_every"],
        burn_in=settings["burn_in"],
        structure="kron",
        learn_hyper=objective == "marglik",
        seed=seed,
    )
    tic = time.perf_counter()
    result = train_marglik(model, (x_tr, y_tr), config)
    train_s = time.perf_counter() - tic
    model.eval()
    with torch.no_grad():
        out = model(x_te)
        acc = 100.0 * float((out.argmax(1) == y_te).double().mean())
        nll = float(F.cross_entropy(out, y_te))
    precisions = result.precisions  # final ones (the weights are the final ones too)
    batches = [
        (x_tr[i : i + config.batch_size], y_tr[i : i + config.batch_size])
        for i in range(0, len(y_tr), config.batch_size)
    ]
    laplace = Laplace(model, "classification", "kron").fit(batches)
    prec = {g: torch.tensor(v, dtype=laplace.dtype) for g, v in precisions.items()}
    with torch.no_grad():
        nlml = -float(laplace.log_marginal_likelihood(prec)) / len(y_tr)
    metrics: dict[str, object] = {
        "test_acc": acc,
        "test_nll": nll,
        "neg_log_marglik": nlml,
        "params": sum(p.numel() for p in model.parameters()),
        "train_s": train_s,
    }
    if kind == "ffc_conv" and objective == "marglik":
        # per relaxed layer (the PathSum "i") and path (its modules "i.layers.0", "i.layers.1")
        keys = ("layer", "path", "module", "relative_effective_parameters", "path_share")
        metrics["layers"] = [
            {k: r[k] for k in keys}
            for r in learned_layer_report(model, laplace, prec)
            if r["path"] is not None
        ]
    return metrics


def _summarise(runs: list[dict]) -> dict[str, object]:
    """Mean and standard deviation (0 for one seed) over seeds of every scalar metric, and the
    per-layer, per-path relative effective parameters averaged over seeds."""

    def stats(values: list[float]) -> tuple[float, float]:
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    out: dict[str, object] = {"n_seeds": len(runs)}
    for key in ("test_acc", "test_nll", "neg_log_marglik", "params", "train_s"):
        mean, std = stats([float(r[key]) for r in runs])
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
                    "relative_effective_parameters": stats(rel)[0],
                    "relative_effective_parameters_std": stats(rel)[1],
                    "path_share": stats(share)[0],
                    "path_share_std": stats(share)[1],
                }
            )
        out["layers"] = rows
        for row in rows:
            out[f"rel_eff_params/{row['layer']}/{row['path']}"] = row[
                "relative_effective_parameters"
            ]
    return out


def plot_paths(cases: dict, path: Path) -> None:
    """Bars of the relative effective parameters of the fc and conv paths per layer for
    ``ffc_conv/marglik`` on both tasks."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5), layout="constrained")
    axes = fig.subplots(1, len(TASKS), sharey=True)
    for ax, task in zip(axes, TASKS):
        rows = cases[f"{task}/ffc_conv/marglik"]["layers"]
        layers = list(dict.fromkeys(r["layer"] for r in rows))
        xs = np.arange(len(layers))
        for k, (p, color) in enumerate((("fc", "tab:orange"), ("conv", "tab:blue"))):
            sel = {r["layer"]: r for r in rows if r["path"] == p}
            ax.bar(
                xs + (k - 0.5) * 0.38,
                [sel[lay]["relative_effective_parameters"] for lay in layers],
                0.38,
                yerr=[sel[lay]["relative_effective_parameters_std"] for lay in layers],
                label=p.upper() if p == "conv" else "F-FC",
                color=color,
            )
        ax.set_xticks(xs, [f"layer {i + 1}" for i in range(len(layers))])
        ax.set_title(f"{task} (F-FC+CONV, marglik)")
        ax.set_ylabel(r"relative effective parameters $\gamma_g / P_g$")
        ax.legend()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--seeds", type=int, default=3, help="seeds seed, seed+1, ...")
    p.add_argument("--epochs", type=int, default=None)
    args = p.parse_args()
    setup(args)
    if args.quick:
        settings = dict(
            n_train=300, epochs=2, burn_in=0, marglik_every=1, n_hyper_steps=5, batch_size=128,
            alpha=2,
        )  # fmt: skip
        seeds = [args.seed]
    else:
        settings = dict(
            n_train=1200, epochs=40, burn_in=5, marglik_every=5, n_hyper_steps=50, batch_size=64,
            alpha=8,
        )  # fmt: skip
        seeds = [args.seed + i for i in range(args.seeds)]
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    settings |= dict(lr=3e-3, lr_hyper=0.1, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    cases, timings, start = {}, {}, time.perf_counter()
    for task in TASKS:
        for kind in MODELS:
            for objective in OBJECTIVES:
                name = f"{task}/{kind}/{objective}"
                tic = time.perf_counter()
                runs = [run_case(task, kind, objective, s, settings) for s in seeds]
                cases[name] = _summarise(runs)
                timings[f"{name}_s"] = time.perf_counter() - tic
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
        "n_test": 1797 - settings["n_train"],
        "neg_log_marglik": "per training point, KFAC Laplace at final weights and precisions",
        "test_acc": "percent",
        **settings,
    }
    log.info("wrote %s", write_results(args.out, "quadrant", config, cases, timings))


if __name__ == "__main__":
    main()
