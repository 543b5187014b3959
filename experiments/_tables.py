"""What ``cifar_layers.py`` (table 2) and ``multi_group.py`` (table 3) of paper 000 share: the
image data (embedded MNIST, MNIST IDX, CIFAR-10, with F.5's standardisation and F.6's MAP-step
augmentation), training and scoring one case of the table-6 network, and the command-line flags
and settings of both scripts.

Plumbing, no maths: training, the Laplace fit and the learned-layer report are library calls
(:func:`ella.marglik.train_marglik`, :class:`ella.laplace.Laplace`,
:func:`ella.marglik.learned_layer_report`). It is a helper of the scripts, not a library
function of ``ella``, because what it adds is the scripts' part: which data a flag means, the
settings record and the metrics of results.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ella.laplace import Laplace
from ella.marglik import MarglikConfig, learned_layer_report, train_marglik

#: epochs of the paper's protocol (F.6) by data set, what ``--full`` sets
PAPER_EPOCHS = {"cifar10": 4000, "mnist": 1000}


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def load_images(
    dataset: str,
    data_dir: Path | None,
    n_train: int | None,
    seed: int,
    transform: Callable[[Tensor, int], Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)``, images (N, C, H, W) float32 standardised (F.5).

    ``mnist`` without ``data_dir``: the embedded digits split by ``mnist_split(n_train, seed)``
    (``n_train`` None: 4,000); with ``data_dir``: the IDX files, ``n_train`` (None: all) of the
    training images drawn by a seeded permutation, all test images. ``cifar10`` (``data_dir``
    required): the pickled batches, subsampled the same way. ``transform(images, seed) ->
    images`` (e.g. a random rotation per image) is applied to the training and the test images
    (with seeds ``seed + 1000`` and ``seed + 2000``) before MNIST is standardised; CIFAR-10 is
    standardised per channel by its loader first, so what a transform fills in is the mean.
    """
    from ella.data import load_mnist, mnist_split, standardise

    if dataset == "mnist" and data_dir is None:
        x_tr, y_tr, x_te, y_te = mnist_split(n_train or 4000, seed, standardised=False)
    elif dataset == "mnist":
        (x_tr, y_tr), (x_te, y_te) = load_mnist(data_dir, "train"), load_mnist(data_dir, "test")
    elif dataset == "cifar10":
        if data_dir is None:
            raise ValueError("CIFAR-10 needs --data-dir (the python pickled batches)")
        from ella.data import load_cifar10

        x_tr, y_tr, x_te, y_te = load_cifar10(data_dir)
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    if data_dir is not None and n_train is not None and n_train < len(y_tr):
        keep = torch.from_numpy(np.random.default_rng(seed).permutation(len(y_tr))[:n_train])
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if transform is not None:
        x_tr, x_te = transform(x_tr, seed + 1000), transform(x_te, seed + 2000)
    if dataset == "mnist":
        x_tr, x_te = standardise(x_tr, x_te)
    return x_tr, y_tr, x_te, y_te


def mnist_or_cifar_augment(dataset: str) -> Callable[[Tensor], Tensor] | None:
    """F.6's MAP-step augmentation: flips and 4-pixel shifts for CIFAR-10, none for MNIST."""
    if dataset != "cifar10":
        return None
    from ella.data import flip_shift

    return flip_shift


# --------------------------------------------------------------------------------------------
# one case
# --------------------------------------------------------------------------------------------


def _batches(x: Tensor, y: Tensor, size: int) -> list[tuple[Tensor, Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def run_case(
    model: nn.Module,
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    settings: dict,
    objective: str,
    seed: int,
    augment: Callable[[Tensor], Tensor] | None = None,
    report: bool = False,
) -> dict[str, object]:
    """Train ``model`` with ``objective`` (``map`` or ``marglik``); return its test metrics,
    the final negative log marginal likelihood per training point and (``report``) the
    learned-layer report's tagged rows."""
    device = settings["device"]
    x_tr, y_tr, x_te, y_te = (t.to(device) for t in data)
    model = model.to(device)
    config = MarglikConfig(
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        lr_hyper=settings["lr_hyper"],
        n_hyper_steps=settings["n_hyper_steps"],
        marglik_every=settings["marglik_every"],
        # MAP never reads the marginal likelihood during training: no Laplace fits there
        burn_in=settings["burn_in"] if objective == "marglik" else settings["epochs"],
        structure=settings["structure"],
        learn_hyper=objective == "marglik",
        seed=seed,
    )
    tic = time.perf_counter()
    # augment: the MAP-step augmentation of F.6 (flip_shift for CIFAR-10, None for MNIST)
    result = train_marglik(model, (x_tr, y_tr), config, augment=augment)
    train_s = time.perf_counter() - tic
    model.eval()
    nll_sum, correct = 0.0, 0
    with torch.no_grad():
        for xb, yb in _batches(x_te, y_te, 500):
            out = model(xb)
            nll_sum += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
    batches = _batches(x_tr, y_tr, config.batch_size)
    laplace = Laplace(model, "classification", settings["structure"]).fit(batches)
    prec = {g: torch.tensor(v, dtype=laplace.dtype) for g, v in result.precisions.items()}
    with torch.no_grad():
        nlml = -float(laplace.log_marginal_likelihood(prec)) / len(y_tr)
    metrics: dict[str, object] = {
        "test_acc": 100.0 * correct / len(y_te),
        "test_nll": nll_sum / len(y_te),
        "neg_log_marglik": nlml,
        "params": sum(p.numel() for p in model.parameters()),
        "train_s": train_s,
        "n_marglik_updates": config.n_marglik_epochs() if config.learn_hyper else 0,
    }
    if report:
        keys = ("layer", "path", "module", "prior_precision", "relative_effective_parameters")
        metrics["layers"] = [
            {k: r[k] for k in keys} | {"path_share": r["path_share"]}
            for r in learned_layer_report(model, laplace, prec)
            if r["path"] is not None
        ]
    return metrics


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def add_data_flags(p) -> None:
    """``--epochs --alpha --n-train --data-dir --structure --full`` (both scripts)."""
    p.add_argument("--epochs", type=int, default=None, help="override the epochs")
    p.add_argument("--alpha", type=int, default=None, help="override the width multiplier")
    p.add_argument(
        "--n-train", type=int, default=None, help="training images (default: see docstring)"
    )
    p.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX / CIFAR-10 batches")
    p.add_argument(
        "--structure", choices=("kron", "diag"), default=None,
        help="curvature of the Laplace approximation (default: kron, the paper's KFAC)",
    )  # fmt: skip
    p.add_argument(
        "--full",
        action="store_true",
        help="the paper's protocol (F.6) at full scale: alpha 10, 4000 (CIFAR-10) / 1000 "
        "(MNIST) epochs, burn-in 10, marglik every 5, all training images",
    )


def resolve_settings(args, paper: dict, default: dict, quick: dict, full_epochs: int) -> dict:
    """The run's settings: ``--full`` (``paper`` with ``full_epochs``), ``--quick`` or the
    reduced default, then the overrides ``--epochs --alpha --n-train --structure``, and the
    device."""
    if args.full:
        settings = dict(paper, epochs=full_epochs)
    else:
        settings = dict(quick if args.quick else default)
    for key in ("epochs", "alpha", "n_train", "structure"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return settings | {"device": args.device}
