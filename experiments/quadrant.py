"""Paper 000, section 6.1 (table 1): adapting symmetry to the task, on digits in quadrants.

Every 8x8 scikit-learn digit is placed in one of the four quadrants (chosen at random, seeded)
of a zero 16x16 canvas. Two tasks:

* ``digit``: the digit (10 classes), translation invariant;
* ``digit_quadrant``: the digit and its quadrant, ``digit + 10 * quadrant`` (40 classes), which
  no strictly translation-invariant model can solve (at best a quarter of its digit accuracy).

Models (:func:`build_model`): four relaxed layers 1x16x16 -> a x8x8 -> 2a x4x4 -> 4a x2x2 ->
8a x1x1 (every layer halves the resolution, ReLU after each), then a plain ``nn.Linear`` to the
classes; the relaxed layers are ``FC`` (``fc``), ``CONV`` with polyphase pooling (``conv``,
exactly invariant to circular shifts of the canvas) or ``PathSum(FFC, CONV)`` (``ffc_conv``).
Each is trained with ``map`` (precisions frozen at 1) and with ``marglik`` (per-layer, per-path
precisions learned by the KFAC Laplace marginal likelihood, :func:`ella.marglik.train_marglik`).

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
from torch import Tensor, nn

from _common import parser, run_config, setup, write_results
from ella.laplace import Laplace
from ella.layers import CONV, FC, FFC, PathSum
from ella.marglik import MarglikConfig, learned_layer_report, train_marglik

TASKS = ("digit", "digit_quadrant")
MODELS = ("fc", "conv", "ffc_conv")
OBJECTIVES = ("map", "marglik")
N_CLASSES = {"digit": 10, "digit_quadrant": 40}
CANVAS = 16
log = logging.getLogger("quadrant")


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def quadrant_digits(
    task: str, seed: int, n_train: int = 1200
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The scikit-learn digits on a 16x16 canvas, one quadrant per image (seeded).

    Pixels are scaled to [0, 1], placed on a zero canvas in quadrant q (0: upper left, 1: upper
    right, 2: lower left, 3: lower right), and the canvases standardised with one scalar mean
    and standard deviation of the training canvases (so a shift of the digit is still a shift
    of the whole input). Labels: the digit (``task="digit"``) or ``digit + 10 * q``
    (``task="digit_quadrant"``). The split is a seeded permutation: the first ``n_train``
    images train, the rest (597 for the default) test.

    Returns:
        ``(X_train, y_train, X_test, y_test)``, X float32 of shape (N, 1, 16, 16), y int64.
    """
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # (1797, 8, 8)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    n = len(labels)
    if not 0 < n_train < n:
        raise ValueError(f"`n_train` must be in (0, {n}), got {n_train}")
    quadrant = rng.integers(0, 4, size=n)
    canvas = np.zeros((n, 1, CANVAS, CANVAS), dtype=np.float32)
    half = CANVAS // 2
    for i in range(n):
        r, c = divmod(int(quadrant[i]), 2)
        canvas[i, 0, r * half : (r + 1) * half, c * half : (c + 1) * half] = images[i]
    target = labels if task == "digit" else labels + 10 * quadrant
    order = rng.permutation(n)
    train, test = order[:n_train], order[n_train:]
    mean, std = canvas[train].mean(), canvas[train].std()
    x = torch.from_numpy((canvas - mean) / std)
    y = torch.from_numpy(target)
    return x[train], y[train], x[test], y[test]


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def _layer(kind: str, c_in: int, c_out: int, s_in: int, s_out: int) -> nn.Module:
    if kind == "fc":
        return FC(c_in, c_out, s_in, s_out)
    if kind == "conv":
        return CONV(c_in, c_out, s_in, s_out)
    if kind == "ffc_conv":
        return PathSum(FFC(c_in, c_out, s_in, s_out), CONV(c_in, c_out, s_in, s_out))
    raise ValueError(f"`kind` must be one of {MODELS}, got {kind!r}")


def build_model(kind: str, n_classes: int, alpha: int = 4, seed: int = 0) -> nn.Sequential:
    """Relaxed layers 1x16 -> a x8 -> 2a x4 -> 4a x2 -> 8a x1 (ReLU after each), flatten, then
    ``nn.Linear(8a, n_classes)``. With ``kind="conv"`` the output is exactly invariant to
    circular shifts of the input (polyphase pooling in every halving CONV, a 1x1 map at the end).
    """
    torch.manual_seed(seed)
    channels = (1, alpha, 2 * alpha, 4 * alpha, 8 * alpha)
    sizes = (CANVAS, CANVAS // 2, CANVAS // 4, CANVAS // 8, CANVAS // 16)
    modules: list[nn.Module] = []
    for i in range(4):
        modules += [_layer(kind, channels[i], channels[i + 1], sizes[i], sizes[i + 1]), nn.ReLU()]
    modules += [nn.Flatten(), nn.Linear(channels[-1], n_classes)]
    return nn.Sequential(*modules)


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------


def run_case(task, kind, objective, seed, settings) -> dict[str, object]:
    """Train one model on one task with one objective and seed; return its metrics."""
    device = settings["device"]
    x_tr, y_tr, x_te, y_te = (
        t.to(device) for t in quadrant_digits(task, seed, settings["n_train"])
    )
    model = build_model(kind, N_CLASSES[task], settings["alpha"], seed).to(device)
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
        # the paths of PathSum "i" are the modules "i.layers.0" (F-FC) and "i.layers.1" (CONV),
        # each its own "layer" in the report: the shares are taken here over the PathSum
        rows = [
            {
                "layer": r["layer"].split(".layers.")[0],
                "path": r["path"],
                "module": r["layer"],
                "relative_effective_parameters": r["relative_effective_parameters"],
            }
            for r in learned_layer_report(model, laplace, prec)
            if r["path"] is not None
        ]
        for r in rows:
            total = sum(
                q["relative_effective_parameters"] for q in rows if q["layer"] == r["layer"]
            )
            r["path_share"] = (
                r["relative_effective_parameters"] / total if total > 0 else float("nan")
            )
        metrics["layers"] = rows
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
