"""Paper 003, "Super Resolution": CNN vs octahedral G-CNN vs relaxed G-CNN on 3-D turbulence,
training dynamics by MAE curves, sharpness and Hessian spectra (its Figs. 11-13).

Data (:mod:`ella.dynamics.turbulence`, generated here: the Johns Hopkins database the paper
used cannot be downloaded): isotropic 3-D turbulence simulated on a periodic ``sim_size^3``
grid (32, resolved) and box-averaged to ``size^3`` (16), as the paper averaged its 1024^3
simulation to 64^3; input three consecutive frames coarsened by ``factor`` (``(9, m, m, m)``,
``m = size / factor``), target the middle frame at full resolution (``(3, size, size, size)``);
whole trajectories split 60/20/20 into train, validation (best epoch) and test samples,
velocities normalised by their training rms.

Models (:mod:`ella.dynamics.superres`; after Wang, Walters and Smidt 2023, Fig. 1: encoder at the
coarse resolution, trilinear upsampling by ``factor``, a pointwise decoder at the fine
resolution, plus the upsampled coarse middle frame): ``rgcnn`` = :class:`SuperResGCNN` with
relaxed octahedral group convolutions (L = 2 filter banks, combination weights per rotation,
initialised equal), ``gcnn`` = the same with tied weights (exactly O-equivariant on velocity
fields), ``cnn`` = :class:`SuperResCNN` with the relaxed model's parameter count (within a few
per cent). Zero padding (the octahedral layers offer no circular padding), ELU, Adam on the mean
squared error (smooth, so that the Hessian measures, taken on the same loss, exist); the
paper's metric, the mean absolute error, is recorded per epoch.

Measures at epoch ``early_epoch`` (3, the paper's "early") and at the best validation-MAE epoch,
per model and seed (:func:`ella.dynamics.curvature_measures`): sharpness (unit directions,
radii relative to the parameter norm, mean |dL| and dL/L), the top Hessian eigenvalues by
Lanczos, the SLQ spectral density, ``min_eig_upper`` (the smallest Ritz value of a short
Lanczos run for the smallest eigenvalue: an upper bound on the least Hessian eigenvalue, so a
negative value proves a negative eigenvalue) and, for the first ``--dense-seeds`` seeds, the
full Hessian spectrum with its count of negative eigenvalues (default 0 seeds: the default
models have about 13 000 parameters, a dense Hessian is out of the CPU budget; the ``--quick``
models are small enough).

Cases ``<model>``; metrics (mean over seeds with ``*_se`` the standard error over seeds; best
epoch at top level, the early epoch with suffix ``_early``): ``test_mae``, ``sharpness_abs``,
``sharpness_rel``, ``top_eig``, ``n_negative_eigs`` (dense count for the first
``--dense-seeds`` seeds, else the SLQ estimate),
``min_eig_upper``, ``equivariance_error`` (relative, of the trained model on test inputs),
``params``. Writes ``results.json``, ``spectra.json`` (full spectra where computed),
``mae_curves.png`` (train and validation MAE per epoch, Figs. 11-12), ``sharpness.png``
(Fig. 13), ``spectral_density.png``, ``top_eigenvalues.png``.

Budget: the default run (6 seeds, the paper's; ``size`` 16, ``factor`` 4) is sized for 20 minutes
on the 2-core CPU with one thread (measured cost per seed in the README). Usage::

    python experiments/superresolution.py --out results/superresolution [--quick]
        [--executor {sequential,local,slurm} --workers N --slurm-partition P ...]

One job per model and seed (``experiments/_grid.py``; the data are made once, here, and sent to
every job); ``timings.<model>_s`` sums the model's jobs' own wall times wherever they ran.
"""

from __future__ import annotations

import json
import logging
import time

import torch

from _cli import add_grid_flags, grid_options, parser, run_config, setup
from _dynamics import CHECKPOINTS, mean_se, measure_checkpoints, summarise_checkpoints, to_device
from _grid import run_grid
from _results import write_results
from ella import plot
from ella.dynamics.superres import (
    SuperResCNN,
    SuperResGCNN,
    fit_superresolution,
    superres_cnn_width,
    upsample,
)
from ella.dynamics.turbulence import TurbulenceConfig, rotate_velocity, superresolution_data
from ella.layers import equivariance_error

MODELS = ("cnn", "gcnn", "rgcnn")
log = logging.getLogger("superresolution")

DEFAULT = dict(
    size=16, sim_size=32, factor=4, n_trajectories=10, width=2, depth=2, banks=2, kernel_size=3,
    epochs=20, early_epoch=3, lr=3e-3, batch_size=8, measure_pairs=16, hessian_samples=4,
    directions=6, radii=(0.005, 0.01, 0.02), top_k=3, slq_steps=20, min_eig_steps=20, seeds=6,
    dense_seeds=0,
)  # fmt: skip
QUICK = DEFAULT | dict(
    size=8, sim_size=8, n_trajectories=3, width=1, depth=1, kernel_size=1, epochs=3, early_epoch=2,
    measure_pairs=4, hessian_samples=2, directions=2, radii=(0.01,), top_k=2, slq_steps=5,
    min_eig_steps=5, seeds=2, dense_seeds=1,
)  # fmt: skip


def build_model(name: str, settings: dict, seed: int) -> torch.nn.Module:
    """``cnn``, ``gcnn`` or ``rgcnn``; the same seed gives the G-CNNs the same filters."""
    torch.manual_seed(seed)
    opts = dict(factor=settings["factor"], kernel_size=settings["kernel_size"])
    if name == "cnn":
        target = sum(p.numel() for p in build_model("rgcnn", settings, seed).parameters())
        width = superres_cnn_width(target, settings["depth"], settings["kernel_size"])
        torch.manual_seed(seed)
        return SuperResCNN(width, settings["depth"], **opts)
    if name in ("gcnn", "rgcnn"):
        return SuperResGCNN(
            settings["width"], settings["depth"], settings["banks"], relaxed=name == "rgcnn", **opts
        )
    raise ValueError(f"`name` must be one of {MODELS}, got {name!r}")


def min_eig_upper(model: torch.nn.Module, x, y, steps: int, seed: int) -> float:
    """The smallest Ritz value of ``steps`` Lanczos steps on the Hessian of the mean squared
    error (float64): an upper bound on the least eigenvalue (negative: the loss is not locally
    convex)."""
    from symdisc.curvature import HessianOperator, functional, lanczos

    f, params = functional(model)
    params = {k: v.to(torch.float64) for k, v in params.items()}
    x, y = x.to(torch.float64), y.to(torch.float64)

    def loss_fn(p, a, b):
        return torch.nn.functional.mse_loss(f(p, a), b)

    H = HessianOperator(loss_fn, params, x, y)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    steps = min(steps, H.shape[0])
    return float(lanczos(H, 1, which="SA", max_iter=steps, generator=gen).eigenvalues[0])


def run_seed(model_name: str, data, seed: int, settings: dict, dense: bool) -> dict:
    """Train one model with one seed; measure at the early and the best epoch."""
    model = build_model(model_name, settings, seed).to(data.train[0].device)
    tic = time.perf_counter()
    fit = fit_superresolution(
        model,
        data,
        epochs=settings["epochs"],
        lr=settings["lr"],
        batch_size=settings["batch_size"],
        seed=seed,
        early_epoch=settings["early_epoch"],
    )
    train_s = time.perf_counter() - tic

    def extra(model: torch.nn.Module, xm: torch.Tensor, ym: torch.Tensor) -> dict:
        hx, hy = xm[: settings["hessian_samples"]], ym[: settings["hessian_samples"]]
        lowest = min_eig_upper(model, hx, hy, settings["min_eig_steps"], seed)
        error = equivariance_error(
            model.double(), data.test[0][:4].double(), rotate_velocity, rotate_velocity
        )
        model.float()
        return {"min_eig_upper": lowest, "equivariance_error": error}

    run = measure_checkpoints(
        model, fit, data.train, settings, seed, dense, test_metric="test_mae", extra=extra
    )
    run["train_s"] = train_s
    run["total_s"] = time.perf_counter() - tic
    return run


def run_job(name: str, seed: int, data, settings: dict, dense: bool, device: str) -> tuple:
    """One model on one seed (a job of the grid, in any process) on ``data`` (on the CPU;
    moved to ``device`` here): ``(run, wall seconds)`` (:func:`run_seed`)."""
    tic = time.perf_counter()
    run = run_seed(name, to_device(data, device), seed, settings, dense)
    return run, time.perf_counter() - tic


def summarise(runs: list[dict]) -> dict:
    """Case metrics: best-epoch values at top level, early-epoch ones with suffix ``_early``;
    ``n_negative_eigs`` is the dense count where computed, else the SLQ estimate."""
    out = summarise_checkpoints(
        runs,
        {
            "test_mae": lambda m: m["test_mae"],
            "sharpness_abs": lambda m: m["sharpness"]["abs"],
            "sharpness_rel": lambda m: m["sharpness"]["rel"],
            "top_eig": lambda m: m["top_eigs"][0],
            "n_negative_eigs": lambda m: (
                m["n_negative_slq"] if m["n_negative"] is None else m["n_negative"]
            ),
            "min_eig_upper": lambda m: m["min_eig_upper"],
            "equivariance_error": lambda m: m["equivariance_error"],
            "epoch": lambda m: m["epoch"],
        },
    )
    # the same architecture for every seed: no spread
    out.update(params_se=0.0, params_early=out["params"], params_se_early=0.0)
    return out


def draw_figures(out, runs: dict) -> None:
    """MAE curves (train, validation), sharpness bars, spectral densities (first seed) and top
    eigenvalues."""
    curves = {
        f"{split} MAE": {m: {key: [r["history"][f"{key}_mae"] for r in runs[m]]} for m in MODELS}
        for split, key in (("train", "train"), ("validation", "val"))
    }
    fig = plot.rmse_curves(curves, title="super-resolution MAE (mean over seeds)")
    for ax in fig.axes:
        ax.set_ylabel("MAE")
    plot.save(fig, out / "mae_curves.png")
    bars = {
        f"sharpness {key}": {
            m: {c: mean_se([r[c]["sharpness"][kind] for r in runs[m]]) for c in CHECKPOINTS}
            for m in MODELS
        }
        for kind, key in (("abs", "|dL|"), ("rel", "dL/L"))
    }
    plot.save(plot.sharpness_bars(bars, ylabel="sharpness"), out / "sharpness.png")
    dens = {
        c: {m: (runs[m][0][c]["slq"]["grid"], runs[m][0][c]["slq"]["density"]) for m in MODELS}
        for c in CHECKPOINTS
    }
    plot.save(plot.spectral_densities(dens), out / "spectral_density.png")
    tops = {
        c: {m: [e for r in runs[m] for e in r[c]["top_eigs"]] for m in MODELS} for c in CHECKPOINTS
    }
    plot.save(plot.top_eigenvalue_distributions(tops), out / "top_eigenvalues.png")


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--seeds", type=int, default=None, help="model seeds seed, seed+1, ...")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--size", type=int, default=None, help="fine grid size (a multiple of 4)")
    p.add_argument("--dense-seeds", type=int, default=None, help="seeds with a full spectrum")
    add_grid_flags(p)
    args = p.parse_args()
    setup(args)
    options = grid_options(p, args)
    settings = dict(QUICK if args.quick else DEFAULT)
    for key in ("seeds", "epochs", "size", "dense_seeds"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if settings["size"] % settings["factor"]:
        p.error(f"--size must be a multiple of the factor {settings['factor']}")
    seeds = [args.seed + i for i in range(settings["seeds"])]
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if settings["sim_size"] % settings["size"]:
        settings["sim_size"] = settings["size"]  # --size beyond the default simulation grid
    turb = TurbulenceConfig(size=settings["sim_size"])
    data = superresolution_data(
        turb,
        settings["n_trajectories"],
        factor=settings["factor"],
        seed=args.seed,
        fine_size=settings["size"],
    )
    timings = {"data_s": time.perf_counter() - start}
    x_test, y_test = data.test
    middle = upsample(x_test[:, 3:6], settings["factor"])
    baseline_mae = float((middle - y_test).abs().mean())
    log.info("trilinear upsampling of the middle frame: test MAE %.4f", baseline_mae)
    dense = {seed: i < settings["dense_seeds"] for i, seed in enumerate(seeds)}
    jobs = {
        (name, seed): (name, seed, data, settings, dense[seed], args.device)
        for name in MODELS
        for seed in seeds
    }
    done = run_grid(run_job, jobs, options, desc="superresolution")
    runs, cases, spectra = {}, {}, {}
    for name in MODELS:
        runs[name] = [done[name, seed][0] for seed in seeds]
        cases[name] = summarise(runs[name])
        spectra[name] = {c: [r[c]["eigenvalues"] for r in runs[name]] for c in CHECKPOINTS}
        cases[name]["curves"] = {
            k: [r["history"][k] for r in runs[name]] for k in ("train_mae", "val_mae", "test_mae")
        }
        timings[f"{name}_s"] = sum(done[name, seed][1] for seed in seeds)  # the jobs' own
        c = cases[name]
        log.info(
            "%s: test_mae %.4f, sharpness |dL| %.3g, dL/L %.3g, top_eig %.3g, "
            "min_eig_upper %.3g, n_negative %s, params %d (%.0f s)",
            name, c["test_mae"], c["sharpness_abs"], c["sharpness_rel"], c["top_eig"],
            c["min_eig_upper"], c["n_negative_eigs"], c["params"], timings[f"{name}_s"],
        )  # fmt: skip
    draw_figures(args.out, runs)
    (args.out / "spectra.json").write_text(json.dumps(spectra))
    timings["total_s"] = time.perf_counter() - start
    config = {
        **settings,
        **run_config(args, seeds),
        "turbulence": {k: str(v) if k == "dtype" else v for k, v in vars(turb).items()},
        "n_samples": {s: len(getattr(data, s)[0]) for s in ("train", "val", "test")},
        "checkpoints": {"early": f"epoch {settings['early_epoch']}", "best": "lowest val MAE"},
        "loss": "mean squared error (trained and measured); MAE reported",
        "sharpness": "mean over directions and relative radii; se over seeds",
        "n_negative_eigs": "eigenvalues below -1e-8 lambda_max of the dense Hessian for the "
        "first dense_seeds seeds (n_dense_seeds per case), the SLQ estimate (P times the "
        "quadrature weight on Ritz values below -1e-3 lambda_max, one probe) for the others",
        "baseline_test_mae": baseline_mae,
        "baseline": "trilinear upsampling of the coarse middle frame, no learning",
        "min_eig_upper": f"smallest Ritz value after {settings['min_eig_steps']} Lanczos steps",
    }
    log.info("wrote %s", write_results(args.out, "superresolution", config, cases, timings))


if __name__ == "__main__":
    main()
