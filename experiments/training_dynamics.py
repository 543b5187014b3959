"""Paper 003: relaxed vs strict group-equivariant CNNs, training dynamics by sharpness and Hessian.

Data (:mod:`ella.plume`): 2-D smoke plumes on a periodic 16x16 grid (semi-Lagrangian advection,
FFT pressure projection), each plume in the four buoyancy directions. ``symmetric``: the same
buoyancy strength in every direction (closed under C4: each plume with its 90, 180 and 270 degree
rotations, velocities rotated as vectors); ``broken``: strengths 1, 0.5, 1.5, 0.75 times the base
by direction. Task: predict the next state (density and velocity) from the current one; RMSE on
held-out time steps (a seeded 60/20/20 split of the steps into train, validation for the best
epoch, and test), fields normalised by their training rms.

Models (:mod:`ella.layers.relaxed_group`), all residual, 3x3 filters, circular padding, ELU:
``relaxed_gcnn`` = :class:`FieldGCNN` (relaxed lifting and group convolutions, L = 2 filter banks,
combination weights per rotation initialised equal), ``gcnn`` = the same with the weights tied
(exactly C4-equivariant on states), ``cnn`` = :class:`FieldCNN` of matched parameter count. Adam,
mean squared error, no relaxation penalty (paper 003's best models had none).

Measures at an early epoch and at the best validation epoch, per model and seed
(:func:`ella.dynamics.curvature_measures`): sharpness (unit directions, radii relative to the
parameter norm, mean |dL| and dL/L, and the filter-normalised variant), the top Hessian
eigenvalues by Lanczos, the SLQ spectral density, and, for the first ``--dense-seeds`` seeds,
the full Hessian spectrum with its count of negative eigenvalues.

Cases ``<dataset>/<model>``; metrics (mean over seeds with ``*_se`` the standard error over
seeds; best epoch at top level, the early epoch with suffix ``_early``): ``test_rmse``,
``sharpness_abs``, ``sharpness_rel`` (each averaged over radii and directions first),
``sharpness_filter_abs``, ``sharpness_filter_rel``, ``top_eig``, ``n_negative_eigs`` (None
where not computed), ``params``, ``equivariance_error`` (relative, of the trained model on test
states). Writes ``results.json``, ``spectra.json`` (full spectra), ``rmse_curves.png``,
``sharpness.png``, ``spectral_density.png``, ``top_eigenvalues.png``.

``--objective marglik`` (default ``mse``: the comparison above) trains ``relaxed_gcnn`` instead by
the marginal likelihood of paper 000 (:mod:`ella.marglik`: MAP steps on a Gaussian likelihood
with fixed ``sigma``, one Gaussian prior per layer and parameter group -- ``<layer>:gconv`` for
the filters, the equivariant combination weights and the bias, ``<layer>:relaxation`` for the
departure from equal combination weights -- and the log prior precisions by the KFAC Laplace
marginal likelihood with the Monte-Carlo Fisher, :mod:`ella.layers.kfac_group_rules`), 3 seeds
by default, and writes only ``results.json`` with the cases ``<dataset>/relaxed_gcnn_marglik``:
``test_rmse``, ``equivariance_error`` (of the model on test states), ``neg_log_marglik`` (each
with ``_se``) and ``layers``: per relaxed layer ``equivariance_error`` (relative, on the inputs
the layer receives, :func:`ella.layers.layer_equivariance_errors`), ``relaxation_precision``
(the learned prior precision of its ``relaxation``), ``gconv_precision`` and
``relaxation_spread`` (rms of the relaxation about its mean over the rotations), each with
``_se`` and ``_seeds``. The final weights and precisions are measured. Usage::

    python experiments/training_dynamics.py --out results/training_dynamics [--quick]
    python experiments/training_dynamics.py --objective marglik --out results/td_marglik
        [--executor {sequential,local,slurm} --workers N --slurm-partition P ...]

One job per case and seed (``experiments/_grid.py``; the data sets are made once, here, and
sent to the jobs); ``timings.<case>_s`` sums the case's jobs' own wall times wherever they ran.
"""

from __future__ import annotations

import json
import logging
import time

import torch

from _cli import add_grid_flags, grid_options, parser, run_config, setup
from _dynamics import CHECKPOINTS, mean_se, measure_checkpoints, summarise_checkpoints, to_device
from _grid import GridOptions, run_grid
from _results import write_results
from ella import plot
from ella.dynamics import fit_next_frame
from ella.dynamics.networks import FieldCNN, FieldGCNN, FieldSteerableCNN, cnn_width_for
from ella.dynamics.plume import (
    PlumeConfig,
    next_frame_data,
    plume_dataset,
    rotate_fields,
)
from ella.dynamics.training import rmse
from ella.laplace import Laplace
from ella.layers import equivariance_error, layer_equivariance_errors
from ella.marglik import MarglikConfig, MarglikLoop, TensorSource
from symdisc.curvature import StandardKFAC

DATASETS = ("symmetric", "broken")
MODELS = ("cnn", "gcnn", "relaxed_gcnn", "steerable", "rsteer")
log = logging.getLogger("training_dynamics")

DEFAULT = dict(
    size=16, n_plumes=12, n_frames=20, width=2, depth=2, banks=2, epochs=60, early_epoch=3,
    lr=3e-3, batch_size=32, measure_pairs=128, hessian_samples=32, directions=8,
    radii=(0.005, 0.01, 0.02), top_k=5, slq_steps=30, seeds=5, dense_seeds=1,
    steerable_width=5, rsteer_width=2,
)  # fmt: skip
QUICK = DEFAULT | dict(
    n_plumes=2, n_frames=8, width=1, depth=1, epochs=3, early_epoch=1, measure_pairs=8,
    hessian_samples=2, directions=2, radii=(0.01,), top_k=2, slq_steps=5, seeds=2, dense_seeds=0,
    steerable_width=1, rsteer_width=1,
)  # fmt: skip


def build_model(name: str, settings: dict, seed: int) -> torch.nn.Module:
    """``cnn``, ``gcnn``, ``relaxed_gcnn``, ``steerable`` or ``rsteer``; the same seed gives the
    G-CNNs the same filters. ``steerable`` / ``rsteer``: :class:`FieldSteerableCNN` on C4 with
    ``steerable_width`` / ``rsteer_width`` regular fields, strict / relaxed (default 5 and 2:
    791 and 1517 parameters against relaxed_gcnn's 802; rsteer's coefficients depend on the 9
    kernel offsets, so width 1 has 543 and width 2, with relaxed_gcnn's 8 hidden channels,
    1517)."""
    torch.manual_seed(seed)
    if name == "cnn":
        target = sum(p.numel() for p in build_model("relaxed_gcnn", settings, seed).parameters())
        torch.manual_seed(seed)
        return FieldCNN(cnn_width_for(target, settings["depth"]), settings["depth"])
    if name in ("gcnn", "relaxed_gcnn"):
        return FieldGCNN(
            settings["width"], settings["depth"], settings["banks"], tied=name == "gcnn"
        )
    if name in ("steerable", "rsteer"):
        width = settings["steerable_width" if name == "steerable" else "rsteer_width"]
        return FieldSteerableCNN(width, settings["depth"], order=4, relaxed=name == "rsteer")
    raise ValueError(f"`name` must be one of {MODELS}, got {name!r}")


def run_seed(model_name: str, data, seed: int, settings: dict, dense: bool) -> dict:
    """Train one model on one data set with one seed; measure at the early and best epoch.

    The model is built on the CPU (the same seed gives the same initial weights on every
    device) and moved to the device of the data.
    """
    model = build_model(model_name, settings, seed).to(data.train[0].device)
    tic = time.perf_counter()
    fit = fit_next_frame(
        model,
        data,
        epochs=settings["epochs"],
        lr=settings["lr"],
        batch_size=settings["batch_size"],
        seed=seed,
        early_epoch=settings["early_epoch"],
    )
    train_s = time.perf_counter() - tic

    def equivariance(model: torch.nn.Module, *_) -> dict:
        error = equivariance_error(
            model.double(), data.test[0][:16].double(), rotate_fields, rotate_fields
        )
        model.float()
        return {"equivariance_error": error}

    run = measure_checkpoints(
        model, fit, data.train, settings, seed, dense, test_metric="test_rmse", extra=equivariance
    )
    run["train_s"] = train_s
    run["total_s"] = time.perf_counter() - tic
    return run


def run_job(model_name: str, seed: int, data, settings: dict, dense: bool, device: str) -> tuple:
    """One model on one data set and seed (a job of the grid, in any process) on ``data`` (on
    the CPU; moved to ``device`` here): ``(run, wall seconds)`` (:func:`run_seed`)."""
    tic = time.perf_counter()
    run = run_seed(model_name, to_device(data, device), seed, settings, dense)
    return run, time.perf_counter() - tic


def summarise(runs: list[dict]) -> dict:
    """Case metrics: best-epoch values at top level, early-epoch ones with suffix ``_early``."""
    return summarise_checkpoints(
        runs,
        {
            "test_rmse": lambda m: m["test_rmse"],
            "sharpness_abs": lambda m: m["sharpness"]["abs"],
            "sharpness_rel": lambda m: m["sharpness"]["rel"],
            "sharpness_filter_abs": lambda m: m["sharpness_filter"]["abs"],
            "sharpness_filter_rel": lambda m: m["sharpness_filter"]["rel"],
            "top_eig": lambda m: m["top_eigs"][0],
            "n_negative_eigs": lambda m: m["n_negative"],
            "min_eig": lambda m: m["min_eig"],
            "equivariance_error": lambda m: m["equivariance_error"],
            "epoch": lambda m: m["epoch"],
        },
    )


OBJECTIVES = ("mse", "marglik")
MARGLIK_CASE = "relaxed_gcnn_marglik"
MARGLIK = dict(
    seeds=3, epochs=60, burn_in=10, marglik_every=10, n_hyper_steps=50, lr_hyper=0.1,
    sigma=0.05, fit_batch_size=128,
)  # fmt: skip
MARGLIK_QUICK = dict(
    seeds=1, epochs=2, burn_in=1, marglik_every=1, n_hyper_steps=3, lr_hyper=0.1, sigma=0.05,
    fit_batch_size=128,
)  # fmt: skip


class _FlatOutput(torch.nn.Module):
    """The model with outputs flattened to (B, 3 H W), the (N, C) outputs of ella.laplace."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).flatten(1)


def run_marglik_seed(data, seed: int, settings: dict) -> dict:
    """Train ``relaxed_gcnn`` by ella.marglik (MAP steps on a Gaussian likelihood with fixed
    ``sigma`` plus one Gaussian prior per layer and parameter group, ``relaxation`` separate;
    the log prior precisions by the KFAC Laplace marginal likelihood, with the Monte-Carlo
    Fisher, one draw per point, for the (B, 768) outputs) and measure the final model: test
    RMSE, equivariance error of the model and of every relaxed layer, learned precisions."""
    device = data.train[0].device
    inner = build_model("relaxed_gcnn", settings, seed).to(device)
    model = _FlatOutput(inner)
    x, y = data.train
    config = MarglikConfig(
        epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"],
        lr_hyper=settings["lr_hyper"], n_hyper_steps=settings["n_hyper_steps"],
        marglik_every=settings["marglik_every"], burn_in=settings["burn_in"], structure="kron",
        likelihood="regression", sigma=settings["sigma"], seed=seed,
    )  # fmt: skip
    source = TensorSource(x, y.flatten(1), settings["batch_size"], device)
    fit_source = TensorSource(x, y.flatten(1), settings["fit_batch_size"], device)
    run = MarglikLoop(model, config, source.n, desc="marglik")
    tic = time.perf_counter()

    def batch_loss(batch, prec):
        inputs, targets = batch
        nll = run.nll(model(inputs), targets)
        return run.map_loss(nll, prec), nll

    for epoch in run:
        record = run.weight_epoch(batch_loss, batches=source.epoch(run))
        if config.is_marglik_epoch(epoch):
            fisher = StandardKFAC("mc", mc_samples=1, generator=seed * 1000 + epoch)
            laplace = run.fit_laplace(
                lambda fisher=fisher: Laplace(
                    model, "regression", "kron", sigma=config.sigma, kron_factors=fisher
                ).fit(fit_source.fit_batches())
            )
            record.update(run.hyper_steps(laplace))
        run.end_epoch(record)
    train_s = time.perf_counter() - tic
    deltas = run.deltas()
    inner.eval()
    xt = data.test[0][:16].double()
    errors = layer_equivariance_errors(inner.double(), xt)
    model_error = equivariance_error(inner, xt, rotate_fields, rotate_fields)
    inner.float()
    layers = {}
    for name, error in errors.items():
        module = dict(inner.named_modules())[name]
        layers[name] = {
            "equivariance_error": error,
            "relaxation_precision": deltas[f"model.{name}:relaxation"],
            "gconv_precision": deltas[f"model.{name}:gconv"],
            "relaxation_spread": _spread(module.relaxation.detach()),
        }
    final = [r for r in run.history if "neg_log_marglik" in r]
    return {
        "seed": seed,
        "test_rmse": rmse(inner, *data.test),
        "equivariance_error": model_error,
        "neg_log_marglik": final[-1]["neg_log_marglik"] if final else None,
        "layers": layers,
        "train_s": train_s,
    }


def run_marglik_job(seed: int, data, settings: dict, device: str) -> tuple:
    """:func:`run_marglik_seed` as a job of the grid (in any process) on ``data`` (on the CPU;
    moved to ``device`` here): ``(run, wall seconds)``."""
    tic = time.perf_counter()
    run = run_marglik_seed(to_device(data, device), seed, settings)
    return run, time.perf_counter() - tic


def _spread(relaxation: torch.Tensor) -> float:
    """The rms of ``relaxation (L, |G|)`` about its mean over the group elements: the part that
    breaks equivariance (a relaxation constant over the group keeps the layer equivariant)."""
    return float((relaxation - relaxation.mean(1, keepdim=True)).pow(2).mean().sqrt())


def summarise_marglik(runs: list[dict]) -> dict:
    """Case metrics of the marglik runs: means with ``*_se`` over seeds, per layer under
    ``layers`` (``equivariance_error``, ``relaxation_precision``, ``gconv_precision``,
    ``relaxation_spread``)."""
    out: dict = {"n_seeds": len(runs)}
    for key in ("test_rmse", "equivariance_error", "neg_log_marglik", "train_s"):
        out[key], out[f"{key}_se"] = mean_se([r[key] for r in runs])
    out["layers"] = {}
    for layer in runs[0]["layers"]:
        row = {}
        for key in runs[0]["layers"][layer]:
            row[key], row[f"{key}_se"] = mean_se([r["layers"][layer][key] for r in runs])
            row[f"{key}_seeds"] = [r["layers"][layer][key] for r in runs]
        out["layers"][layer] = row
    return out


def main_marglik(args, options: GridOptions, start: float) -> None:
    """``--objective marglik``: ``relaxed_gcnn`` trained by the marginal likelihood on both data
    sets; cases ``<dataset>/relaxed_gcnn_marglik`` (no figures)."""
    settings = dict(QUICK if args.quick else DEFAULT) | (MARGLIK_QUICK if args.quick else MARGLIK)
    for key in ("seeds", "epochs"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    seeds = [args.seed + i for i in range(settings["seeds"])]
    plume = PlumeConfig(
        size=settings["size"], n_plumes=settings["n_plumes"], n_frames=settings["n_frames"]
    )
    data = {
        dataset: next_frame_data(plume_dataset(dataset, plume, args.seed), seed=args.seed)
        for dataset in DATASETS
    }
    jobs = {
        (dataset, seed): (seed, data[dataset], settings, args.device)
        for dataset in DATASETS
        for seed in seeds
    }
    done = run_grid(run_marglik_job, jobs, options, desc="marglik")
    cases, timings = {}, {}
    for dataset in DATASETS:
        name = f"{dataset}/{MARGLIK_CASE}"
        cases[name] = summarise_marglik([done[dataset, seed][0] for seed in seeds])
        timings[f"{name}_s"] = sum(done[dataset, seed][1] for seed in seeds)  # the jobs' own
    for dataset in DATASETS:
        c = cases[f"{dataset}/{MARGLIK_CASE}"]
        log.info(
            "%s/%s: test_rmse %.4f +- %.4f, model equivariance_error %.3g",
            dataset, MARGLIK_CASE, c["test_rmse"], c["test_rmse_se"], c["equivariance_error"],
        )  # fmt: skip
    log.info("%-10s %-14s %-22s %-22s %-12s", "dataset", "layer", "equivariance_error",
             "relaxation precision", "spread")  # fmt: skip
    for dataset in DATASETS:
        for layer, row in cases[f"{dataset}/{MARGLIK_CASE}"]["layers"].items():
            log.info("%-10s %-14s %-22s %-22s %-12.3g", dataset, layer,
                     f"{row['equivariance_error']:.3g} +- {row['equivariance_error_se']:.2g}",
                     f"{row['relaxation_precision']:.3g} +- {row['relaxation_precision_se']:.2g}",
                     row["relaxation_spread"])  # fmt: skip
    timings["total_s"] = time.perf_counter() - start
    config = {
        **settings,
        **run_config(args, seeds),
        "objective": "marglik",
        "plume": {k: str(v) if k == "dtype" else v for k, v in vars(plume).items()},
        "marglik": "Gaussian likelihood (fixed sigma), KFAC Laplace with the Monte-Carlo "
        "Fisher (1 draw per point), prior groups per layer: <layer>:gconv (weight, "
        "relaxed_weights, bias) and <layer>:relaxation; final weights and precisions",
    }
    log.info("wrote %s", write_results(args.out, "training_dynamics", config, cases, timings))


def draw_figures(out, runs: dict) -> None:
    """RMSE curves, sharpness bars, spectral densities (first seed) and top eigenvalues."""
    curves = {
        d: {
            m: {k: [r["history"][f"{k}_rmse"] for r in runs[d, m]] for k in ("train", "val")}
            for m in MODELS
        }
        for d in DATASETS
    }
    plot.save(plot.rmse_curves(curves, title="next-frame RMSE"), out / "rmse_curves.png")
    bars = {}
    for kind, key in (("abs", "|dL|"), ("rel", "dL/L")):
        for d in DATASETS:
            bars[f"{d}: sharpness {key}"] = {
                m: {c: mean_se([r[c]["sharpness"][kind] for r in runs[d, m]]) for c in CHECKPOINTS}
                for m in MODELS
            }
    plot.save(plot.sharpness_bars(bars, ylabel="sharpness"), out / "sharpness.png")
    dens = {
        f"{d}, {c}": {
            m: (runs[d, m][0][c]["slq"]["grid"], runs[d, m][0][c]["slq"]["density"]) for m in MODELS
        }
        for d in DATASETS
        for c in CHECKPOINTS
    }
    plot.save(plot.spectral_densities(dens), out / "spectral_density.png")
    tops = {
        f"{d}, {c}": {m: [e for r in runs[d, m] for e in r[c]["top_eigs"]] for m in MODELS}
        for d in DATASETS
        for c in CHECKPOINTS
    }
    plot.save(plot.top_eigenvalue_distributions(tops), out / "top_eigenvalues.png")


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--seeds", type=int, default=None, help="model seeds seed, seed+1, ...")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--dense-seeds", type=int, default=None, help="seeds with a full spectrum")
    p.add_argument(
        "--objective", choices=OBJECTIVES, default="mse",
        help="mse: the model comparison; marglik: relaxed_gcnn trained by the marginal "
        "likelihood, the learned relaxation per layer",
    )  # fmt: skip
    add_grid_flags(p)
    args = p.parse_args()
    setup(args)
    options = grid_options(p, args)
    if args.objective == "marglik":
        args.out.mkdir(parents=True, exist_ok=True)
        main_marglik(args, options, time.perf_counter())
        return
    settings = dict(QUICK if args.quick else DEFAULT)
    for key in ("seeds", "epochs", "dense_seeds"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    seeds = [args.seed + i for i in range(settings["seeds"])]
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    plume = PlumeConfig(
        size=settings["size"], n_plumes=settings["n_plumes"], n_frames=settings["n_frames"]
    )
    data, timings = {}, {}
    for dataset in DATASETS:
        tic = time.perf_counter()
        data[dataset] = next_frame_data(plume_dataset(dataset, plume, args.seed), seed=args.seed)
        timings[f"{dataset}/data_s"] = time.perf_counter() - tic
    dense = {seed: i < settings["dense_seeds"] for i, seed in enumerate(seeds)}
    jobs = {
        (dataset, model_name, seed): (
            model_name,
            seed,
            data[dataset],
            settings,
            dense[seed],
            args.device,
        )
        for dataset in DATASETS
        for model_name in MODELS
        for seed in seeds
    }
    done = run_grid(run_job, jobs, options, desc="training_dynamics")
    runs, cases, spectra = {}, {}, {}
    for dataset in DATASETS:
        for model_name in MODELS:
            name = f"{dataset}/{model_name}"
            runs[dataset, model_name] = [done[dataset, model_name, seed][0] for seed in seeds]
            cases[name] = summarise(runs[dataset, model_name])
            spectra[name] = {
                c: [r[c]["eigenvalues"] for r in runs[dataset, model_name]] for c in CHECKPOINTS
            }
            cases[name]["curves"] = {
                k: [r["history"][k] for r in runs[dataset, model_name]]
                for k in ("train_rmse", "val_rmse", "test_rmse")
            }
            # the case's jobs' own wall times, wherever they ran
            timings[f"{name}_s"] = sum(done[dataset, model_name, seed][1] for seed in seeds)
            c = cases[name]
            log.info(
                "%s: test_rmse %.4f, sharpness |dL| %.3g, dL/L %.3g, top_eig %.3g, "
                "n_negative %s, params %d (%.0f s)",
                name, c["test_rmse"], c["sharpness_abs"], c["sharpness_rel"], c["top_eig"],
                c["n_negative_eigs"], c["params"], timings[f"{name}_s"],
            )  # fmt: skip
    draw_figures(args.out, runs)
    (args.out / "spectra.json").write_text(json.dumps(spectra))
    timings["total_s"] = time.perf_counter() - start
    config = {
        **settings,
        **run_config(args, seeds),
        "plume": {k: str(v) if k == "dtype" else v for k, v in vars(plume).items()},
        "checkpoints": {"early": f"epoch {settings['early_epoch']}", "best": "lowest val RMSE"},
        "sharpness": "mean over directions and relative radii; se over seeds",
        "n_negative_eigs": "eigenvalues below -1e-8 lambda_max of the dense Hessian, first "
        "dense_seeds seeds only (None where not computed)",
    }
    log.info("wrote %s", write_results(args.out, "training_dynamics", config, cases, timings))


if __name__ == "__main__":
    main()
