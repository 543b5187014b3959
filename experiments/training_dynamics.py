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
``sharpness.png``, ``spectral_density.png``, ``top_eigenvalues.png``. Usage::

    python experiments/training_dynamics.py --out results/training_dynamics [--quick]
"""

from __future__ import annotations

import json
import logging
import statistics
import time

import torch
from tqdm import tqdm

from _cli import parser, run_config, setup
from _results import write_results
from ella import plot
from ella.dynamics import curvature_measures, fit_next_frame
from ella.dynamics.networks import FieldCNN, FieldGCNN, cnn_width_for
from ella.dynamics.plume import (
    NextFrameData,
    PlumeConfig,
    next_frame_data,
    plume_dataset,
    rotate_fields,
)
from ella.layers import equivariance_error

DATASETS = ("symmetric", "broken")
MODELS = ("cnn", "gcnn", "relaxed_gcnn")
CHECKPOINTS = ("early", "best")
log = logging.getLogger("training_dynamics")

DEFAULT = dict(
    size=16, n_plumes=12, n_frames=20, width=2, depth=2, banks=2, epochs=60, early_epoch=3,
    lr=3e-3, batch_size=32, measure_pairs=128, hessian_samples=32, directions=8,
    radii=(0.005, 0.01, 0.02), top_k=5, slq_steps=30, seeds=5, dense_seeds=1,
)  # fmt: skip
QUICK = DEFAULT | dict(
    n_plumes=2, n_frames=8, width=1, depth=1, epochs=3, early_epoch=1, measure_pairs=8,
    hessian_samples=2, directions=2, radii=(0.01,), top_k=2, slq_steps=5, seeds=2, dense_seeds=0,
)  # fmt: skip


def build_model(name: str, settings: dict, seed: int) -> torch.nn.Module:
    """``cnn``, ``gcnn`` or ``relaxed_gcnn``; the same seed gives the G-CNNs the same filters."""
    torch.manual_seed(seed)
    if name == "cnn":
        target = sum(p.numel() for p in build_model("relaxed_gcnn", settings, seed).parameters())
        torch.manual_seed(seed)
        return FieldCNN(cnn_width_for(target, settings["depth"]), settings["depth"])
    if name in ("gcnn", "relaxed_gcnn"):
        return FieldGCNN(
            settings["width"], settings["depth"], settings["banks"], tied=name == "gcnn"
        )
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
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(data.train[0]), generator=gen)[: settings["measure_pairs"]]
    pick = pick.to(data.train[0].device)
    xm, ym = data.train[0][pick], data.train[1][pick]
    run: dict = {"seed": seed, "history": fit.history, "best_epoch": fit.best_epoch}
    for name in CHECKPOINTS:
        model.load_state_dict(fit.checkpoints[name])
        epoch = fit.best_epoch if name == "best" else fit.early_epoch
        m = curvature_measures(
            model,
            xm,
            ym,
            radii=settings["radii"],
            directions=settings["directions"],
            hessian_samples=settings["hessian_samples"],
            top_k=settings["top_k"],
            slq_steps=settings["slq_steps"],
            dense=dense,
            seed=seed,
        )
        m["epoch"] = epoch
        m["test_rmse"] = fit.history["test_rmse"][epoch]
        m["equivariance_error"] = equivariance_error(
            model.double(), data.test[0][:16].double(), rotate_fields, rotate_fields
        )
        model.float()
        run[name] = m
    run["train_s"] = train_s
    run["total_s"] = time.perf_counter() - tic
    return run


def to_device(data: NextFrameData, device: str) -> NextFrameData:
    """The train, validation and test pairs moved to ``device``."""

    def move(pair: tuple) -> tuple:
        return tuple(t.to(device) for t in pair)

    return NextFrameData(move(data.train), move(data.val), move(data.test), data.scale)


def _stats(values: list) -> tuple[float | None, float | None]:
    """Mean and standard error over seeds (None where there are no values; 0 for one)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None, None
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return statistics.fmean(values), se


def summarise(runs: list[dict]) -> dict:
    """Case metrics: best-epoch values at top level, early-epoch ones with suffix ``_early``."""
    out: dict = {"n_seeds": len(runs), "params": runs[0]["best"]["params"]}
    for ckpt in CHECKPOINTS:
        suffix = "" if ckpt == "best" else "_early"
        rows = [r[ckpt] for r in runs]
        metrics = {
            "test_rmse": [m["test_rmse"] for m in rows],
            "sharpness_abs": [m["sharpness"]["abs"] for m in rows],
            "sharpness_rel": [m["sharpness"]["rel"] for m in rows],
            "sharpness_filter_abs": [m["sharpness_filter"]["abs"] for m in rows],
            "sharpness_filter_rel": [m["sharpness_filter"]["rel"] for m in rows],
            "top_eig": [m["top_eigs"][0] for m in rows],
            "n_negative_eigs": [m["n_negative"] for m in rows],
            "min_eig": [m["min_eig"] for m in rows],
            "equivariance_error": [m["equivariance_error"] for m in rows],
            "epoch": [m["epoch"] for m in rows],
        }
        for key, values in metrics.items():
            mean, se = _stats(values)
            out[key + suffix] = mean
            out[f"{key}_se{suffix}"] = se
        out["top_eigs" + suffix] = [m["top_eigs"] for m in rows]
        out["n_dense_seeds" + suffix] = sum(m["n_negative"] is not None for m in rows)
    out["train_s"] = statistics.fmean(r["train_s"] for r in runs)
    return out


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
                m: {c: _stats([r[c]["sharpness"][kind] for r in runs[d, m]]) for c in CHECKPOINTS}
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
    args = p.parse_args()
    setup(args)
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
    runs, cases, timings, spectra = {}, {}, {}, {}
    bar = tqdm(total=len(DATASETS) * len(MODELS) * len(seeds), desc="training_dynamics")
    for dataset in DATASETS:
        tic = time.perf_counter()
        data = to_device(
            next_frame_data(plume_dataset(dataset, plume, args.seed), seed=args.seed), args.device
        )
        timings[f"{dataset}/data_s"] = time.perf_counter() - tic
        for model_name in MODELS:
            name = f"{dataset}/{model_name}"
            tic = time.perf_counter()
            runs[dataset, model_name] = []
            for i, seed in enumerate(seeds):
                bar.set_postfix_str(f"{name} seed {seed}")
                run = run_seed(model_name, data, seed, settings, dense=i < settings["dense_seeds"])
                runs[dataset, model_name].append(run)
                bar.update()
            cases[name] = summarise(runs[dataset, model_name])
            spectra[name] = {
                c: [r[c]["eigenvalues"] for r in runs[dataset, model_name]] for c in CHECKPOINTS
            }
            cases[name]["curves"] = {
                k: [r["history"][k] for r in runs[dataset, model_name]]
                for k in ("train_rmse", "val_rmse", "test_rmse")
            }
            timings[f"{name}_s"] = time.perf_counter() - tic
            c = cases[name]
            log.info(
                "%s: test_rmse %.4f, sharpness |dL| %.3g, dL/L %.3g, top_eig %.3g, "
                "n_negative %s, params %d (%.0f s)",
                name, c["test_rmse"], c["sharpness_abs"], c["sharpness_rel"], c["top_eig"],
                c["n_negative_eigs"], c["params"], timings[f"{name}_s"],
            )  # fmt: skip
    bar.close()
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
