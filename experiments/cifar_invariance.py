"""Paper 001, table 2: invariance learning with KFAC on CIFAR-10 with a Fixup ResNet (14-16).

"ResNet (14-16)" is, as in the authors' code, a Fixup ResNet of depth 14 whose stem outputs
16 channels (stage widths 16, 32, 64; :func:`ella.models.fixup_resnet`, whose docstring gives
this reading of the paper's sizes). The network sits inside an invariant model over the
six-parameter affine augmentation (:class:`ella.invariance.AffineAugmentation`, eta = 0 at the
start). Weights (``--optimizer``): ``sgd``, SGD with momentum 0.9 and cosine decay from 0.1
(appendix B.3, the full GPU run), or ``adam``, Adam with cosine decay from 0.005 (B.3's MNIST
setting; the CPU default: in the few hundred steps a CPU run affords, SGD leaves a Fixup
ResNet's zero-init plateau later and less far: measured 13 % test accuracy after 100 steps
(ResNet (14-4), 200 images), and on 500 images with a ResNet (8-8) and no prior term 73 %
after 300 steps of batch 50 against Adam's 84 %; ``--lr`` overrides either). ``results.json``
records the choice under ``config.optimizer``.

Methods (cases):

* ``baseline``: eta fixed at 0 (one draw), per-layer prior precisions by the KFAC Laplace
  marginal likelihood;
* ``augerino``: eta by the training loss minus 0.01 ||eta||^2, weight decay 1e-4 (Benton et al.,
  2020), no prior precisions learned;
* ``lila``: eta and the precisions by the augmented-KFAC Laplace marginal likelihood (section
  4.2, eq. 19), eta-gradients by the section 4.3 estimator (preconditioner once per
  marginal-likelihood epoch, per-step terms on random subsets of M examples).

Metrics per case: ``test_acc`` (%, f_hat with fresh draws; one for the baseline) and
``neg_log_marglik`` (augmented-KFAC Laplace ``-log p(D | delta, eta)`` of the final model on
fixed draws, total over the training set, at per-layer precisions re-optimised refit-free for
every method, so that Augerino gets one too), each as mean, ``_std``, ``_se`` over the seeds and
per seed (``per_seed``); ``eta/<component>`` (|eta_i| at the end) and ``eta_diverged`` (the
components beyond their meaningful range, :attr:`ella.invariance.Augmentation.limits`; also
logged as a warning). ``results.json`` records the data it ran on under ``config.data``.

Data: ``--data-dir DIR`` reads CIFAR-10 from its local python batches
(:func:`ella.data.load_cifar10`, standardised per channel; ``--n-train`` images drawn by a
seeded permutation, the first ``--n-test`` test images or all 10,000). Without it the run uses
a CIFAR-shaped stand-in that exists here: the embedded real MNIST digits as 3 x 32 x 32 images
(:func:`ella.data.cifar_shaped_mnist`); those numbers are not CIFAR-10 numbers.

CPU default (stand-in data; ResNet (8-8), depth 8 and 8 stem channels as the paper's
``resnet_8_8``; 500 training and 1000 test images; 30 epochs of batch 25 (600 weight steps)
by Adam; marginal likelihood at epochs 20 and 30 (burn-in 10, every 10th), 20 precision steps
each; S = 2 draws; lila 25 eta steps of M = 25 per marginal-likelihood epoch (50 in all, lr
0.05), Augerino one per minibatch (600, lr 0.005 as in B.3); initial prior precision 0.01 (the
per-datum scale of delta = 1 on 50,000 images); 2 seeds; ``--threads 1``): measured 177 s wall
on this 2-core machine (another one-thread job on the other core), with (mean +- std over
seeds 0 and 1; stand-in digits, not CIFAR-10)

=========  ==============  ===============  =========================================
method     test_acc (%)    neg_log_marglik  eta (mean |eta_i|)
=========  ==============  ===============  =========================================
baseline   86.8 +- 1.1     1347 +- 64       0
augerino   83.8 +- 2.6     1237 +- 5        all <= 0.02 (none diverged)
lila       88.9 +- 1.3     1087 +- 68       translate_x 0.32, rest <= 0.09 (none diverged)
=========  ==============  ===============  =========================================

lila is above the baseline on both seeds (89.8 vs 87.6 and 87.9 vs 86.0) and has the better
marginal likelihood on both; Augerino's Laplace value is not an evidence (its weights are not a
posterior mode; the paper leaves it undefined). The training is the noisy part: with batch 50
(300 steps) the batch order alone moved a prior-free ResNet (8-8) between 49 % and 87 % test
accuracy (seed 1), with batch 25 (600 steps) 87 to 90 %.

Deliberate departures of the default from table 2, each a flag: Adam instead of SGD (above);
lila's eta learning rate 0.05 instead of B.3's 0.005, since it gets 50 eta steps, not B.3's
order of 2,000 (Augerino keeps 0.005: at 0.05 its 300 per-minibatch steps drove every component
of eta to about 11, beyond range, and its test accuracy to chance; a diverged run says so in
``eta_diverged`` and the log). With an initial prior precision of 1 (``--prior-precision 1``)
the baseline reached 76.2 +- 1.3 % and lila 79.9 +- 4.9 %.
``--depth 14 --in-planes 16`` gives the paper's ResNet (14-16) on any data. ``--quick`` (depth 8,
4 stem channels, 40 images, 2 epochs, 1 seed) runs in seconds, for the tests. Usage::

    python experiments/cifar_invariance.py --out results/cifar_invariance [--quick]
        [--executor {sequential,local,slurm} --workers N --slurm-partition P ...]

(one job per method and seed, ``experiments/_grid.py``; ``case_s`` per seed is the job's own
wall time wherever it ran, ``timings.total_s`` the run's).

Table 2 at full scale (one GPU; appendix B.3: 200 epochs, batch 250, SGD with momentum 0.9
from 0.1, S = 20, M = 5000, eta by Adam with lr 0.005 from epoch 10; here a marginal likelihood
every epoch with 10 eta steps of M = 5000, one pass over the data, which B.3 does not spell out;
about a day of GPU time per seed and method is the paper's order)::

    python experiments/cifar_invariance.py --data-dir ~/data/cifar10 --device cuda \\
        --n-train 50000 --epochs 200 --depth 14 --in-planes 16 --seeds 3 \\
        --optimizer sgd --batch-size 250 --n-samples 20 --eta-batch-size 5000 \\
        --burn-in 10 --marglik-every 1 --n-eta-steps 10 --lr-eta 0.005 \\
        --out results/cifar_invariance_full
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import torch

from _cli import add_grid_flags, check_device, grid_options, parser, run_config, setup
from _grid import run_grid
from _invariance import summarise, train_and_score
from _results import write_results
from ella.data import cifar_shaped_mnist, load_cifar10
from ella.invariance import (
    FewEtaStepsWarning,
    InvarianceConfig,
    count_eta_steps,
)
from ella.marglik import MarglikConfig
from ella.models import fixup_resnet
from symdisc.runtime import NonFiniteLossError

METHODS = ("baseline", "augerino", "lila")

#: run settings: (--quick, CPU default); flags override some of them
SETTINGS = {
    "n_train": (40, 500),
    "n_test": (40, 1000),
    "epochs": (2, 30),
    "batch_size": (20, 25),
    "optimizer": ("adam", "adam"),
    "burn_in": (1, 10),
    "marglik_every": (1, 10),
    "n_hyper_steps": (2, 20),
    "n_eta_steps": (1, 25),
    "eta_batch_size": (20, 25),
    "lr_eta": (0.05, 0.05),
    "lr_eta_augerino": (0.005, 0.005),
    "n_samples": (2, 2),
    "n_samples_test": (2, 8),
    "posthoc_steps": (10, 100),
    "prior_precision": (1.0, 0.01),
    "seeds": (1, 2),
    "depth": (8, 8),
    "in_planes": (4, 8),
}
#: weight optimiser per --optimizer: appendix B.3 trains the ResNets by SGD with momentum 0.9
#: from 0.1 (the full GPU run); the CPU default uses Adam from 0.005 (B.3's MNIST setting),
#: with which a few hundred steps take the Fixup ResNet off its zero-init plateau
OPTIMIZERS = {
    "sgd": {"lr": 0.1, "momentum": 0.9, "describe": "sgd, momentum 0.9, cosine decay"},
    "adam": {"lr": 0.005, "momentum": 0.0, "describe": "adam, cosine decay"},
}
log = logging.getLogger("cifar_invariance")


def load_data(data_dir: Path | None, n_train: int, n_test: int | None, seed: int) -> tuple:
    """``(x_train, y_train, x_test, y_test, description)``: CIFAR-10 from ``data_dir`` (a seeded
    subset of ``n_train`` training images, the first ``n_test`` test images), or the
    CIFAR-shaped embedded MNIST stand-in."""
    if data_dir is None:
        data = cifar_shaped_mnist(n_train, seed, n_test=n_test)
        return (*data, "cifar_shaped_mnist (embedded real MNIST as 3x32x32; not CIFAR-10)")
    x, y, x_te, y_te = load_cifar10(data_dir)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n_train]
    if n_test is not None:
        x_te, y_te = x_te[:n_test], y_te[:n_test]
    return x[order], y[order], x_te, y_te, f"cifar10 ({data_dir})"


def run_case(method: str, data: tuple, settings: dict, seed: int) -> dict[str, object]:
    """Train one method on one seed (:func:`_invariance.train_and_score` with a Fixup ResNet and
    the optimiser of ``settings``); its metrics (a diverged eta is logged by ``train_invariant``
    when it happens, and per method at the end)."""
    x = data[0]
    net = fixup_resnet(
        settings["depth"], settings["in_planes"], settings["width"], 10, x.shape[1], seed=seed
    )
    config = MarglikConfig(
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        optimizer=settings["optimizer"],
        momentum=OPTIMIZERS[settings["optimizer"]]["momentum"],
        lr=settings["lr"],
        lr_hyper=0.05,
        n_hyper_steps=settings["n_hyper_steps"],
        marglik_every=settings["marglik_every"],
        burn_in=settings["burn_in"],
        structure="kron",
        init_prior_precision=settings["prior_precision"],
        seed=seed,
    )
    metrics, _, _ = train_and_score(net, method, data, config, settings | {"eval_batch": 200}, seed)
    return metrics


def run_job(
    method: str, seed: int, settings: dict, data_dir: Path | None, device: str, quick: bool
) -> tuple[dict, str]:
    """One method on one seed (a job of the grid, in any process): ``(metrics, data
    description)``; a non-finite loss or a failed fit is recorded as ``{"error": ...}`` so that
    the other jobs still count. ``case_s``: the job's wall time without the data loading."""
    *tensors, description = load_data(data_dir, settings["n_train"], settings["n_test"], seed)
    data = tuple(t.to(device) for t in tensors)
    tic = time.perf_counter()
    with warnings.catch_warnings():
        if quick:  # a run of seconds gives eta few steps by design
            warnings.simplefilter("ignore", FewEtaStepsWarning)
        try:
            metrics = run_case(method, data, settings, seed)
        except (NonFiniteLossError, ValueError) as err:  # recorded; the others still run
            metrics = {"error": f"{type(err).__name__}: {err}"}
    metrics["case_s"] = time.perf_counter() - tic
    return metrics, description


def main() -> None:
    p = parser("Paper 001 table 2: LILA on CIFAR-10 with a Fixup ResNet", threads=1)
    p.add_argument("--data-dir", type=Path, default=None, help="local CIFAR-10 python batches")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None, help="test images (default: see doc)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None, help="number of seeds, from --seed on")
    p.add_argument("--depth", type=int, default=None, help="6n+2 (table 2: 14)")
    p.add_argument("--in-planes", type=int, default=None, help="stem channels (table 2: 16)")
    p.add_argument("--width", type=int, default=None, help="first-stage width (default in-planes)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--optimizer",
        choices=tuple(OPTIMIZERS),
        default=None,
        help="weights: sgd (momentum 0.9, lr 0.1; appendix B.3, the GPU run) or adam (lr 0.005; "
        "the CPU default)",
    )
    p.add_argument("--lr", type=float, default=None, help="weight learning rate (cosine decay)")
    p.add_argument("--marglik-every", type=int, default=None, help="F: epochs between fits")
    p.add_argument("--n-eta-steps", type=int, default=None, help="eta steps per marglik epoch")
    p.add_argument("--lr-eta", type=float, default=None, help="Adam lr of lila's eta")
    p.add_argument("--lr-eta-augerino", type=float, default=None, help="Adam lr of Augerino's eta")
    p.add_argument("--prior-precision", type=float, default=None, help="initial delta")
    p.add_argument("--n-samples", type=int, default=None, help="S, augmentation draws")
    p.add_argument("--eta-batch-size", type=int, default=None, help="M of section 4.3")
    p.add_argument("--burn-in", type=int, default=None, help="epochs before marglik / eta")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    add_grid_flags(p)
    args = p.parse_args()
    setup(args)
    check_device(p, args)
    options = grid_options(p, args)
    i = 0 if args.quick else 1
    settings = {k: v[i] for k, v in SETTINGS.items()}
    overrides = {
        "n_train": args.n_train,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "depth": args.depth,
        "in_planes": args.in_planes,
        "batch_size": args.batch_size,
        "n_samples": args.n_samples,
        "eta_batch_size": args.eta_batch_size,
        "burn_in": args.burn_in,
        "optimizer": args.optimizer,
        "marglik_every": args.marglik_every,
        "n_eta_steps": args.n_eta_steps,
        "lr_eta": args.lr_eta,
        "lr_eta_augerino": args.lr_eta_augerino,
        "prior_precision": args.prior_precision,
    }
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings["n_test"] = (
        args.n_test
        if args.n_test is not None
        else (settings["n_test"] if args.data_dir is None or args.quick else None)
    )
    settings["lr"] = OPTIMIZERS[settings["optimizer"]]["lr"] if args.lr is None else args.lr
    settings["width"] = args.width if args.width is not None else settings["in_planes"]
    seeds = list(range(args.seed, args.seed + settings["seeds"]))

    tic = time.perf_counter()
    jobs = {
        (m, seed): (m, seed, settings, args.data_dir, args.device, args.quick)
        for seed in seeds
        for m in args.methods
    }
    done = run_grid(run_job, jobs, options, desc="cifar_invariance")
    description = done[args.methods[0], seeds[0]][1]
    per_method = {m: [done[m, seed][0] for seed in seeds] for m in args.methods}
    for (method, seed), (metrics, _) in done.items():
        log.info(
            "%s seed %d: %s",
            method,
            seed,
            ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)),
        )
    cases = {m: summarise(per_seed) for m, per_seed in per_method.items()}
    total = time.perf_counter() - tic
    for m, c in cases.items():
        if c.get("eta_diverged"):
            log.warning(
                "%s: eta diverged (beyond its meaningful range) in %s", m, c["eta_diverged"]
            )
        log.info(
            "%s: test_acc %.2f +- %.2f, neg_log_marglik %.1f +- %.1f",
            m,
            c.get("test_acc_mean", float("nan")),
            c.get("test_acc_std", float("nan")),
            c.get("neg_log_marglik_mean", float("nan")),
            c.get("neg_log_marglik_std", float("nan")),
        )
    config = run_config(args, seeds) | {
        "data": description,
        "data_dir": str(args.data_dir) if args.data_dir is not None else None,
        "model": f"fixup_resnet(depth={settings['depth']}, in_planes={settings['in_planes']}, "
        f"width={settings['width']})",
        "optimizer": f"{OPTIMIZERS[settings['optimizer']]['describe']} from lr {settings['lr']}",
        "settings": settings,
        "lila_eta_steps": count_eta_steps(
            MarglikConfig(
                epochs=settings["epochs"],
                marglik_every=settings["marglik_every"],
                burn_in=settings["burn_in"],
            ),
            InvarianceConfig(eta_burn_in=settings["burn_in"], n_eta_steps=settings["n_eta_steps"]),
            1,
        ),
    }
    path = write_results(args.out, "cifar_invariance", config, cases, {"total_s": total})
    log.info("wrote %s (%.0f s)", path, total)


if __name__ == "__main__":
    main()
